"""Figures. Plots read arrays and result tables, never models.

Display convention: slices are shown with axis 0 horizontal (`imshow(slice.T)`), which puts the RV on
the left as in radiological short-axis views, for every data set (the stored array order is consistent).
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.lines import Line2D

CLASS_COLORS = {1: "#2ca02c", 2: "#d62728", 3: "#1f77b4"}   # MYO green, LV red, RV blue
CLASS_NAMES = {1: "MYO", 2: "LV", 3: "RV"}
SEQ_COLORS = {"C0": "#1f77b4", "LGE": "#d62728", "T2": "#2ca02c"}
SEQ_NAMES = {"C0": "bSSFP (C0)", "LGE": "LGE", "T2": "T2"}


def show_slice(ax, image, label=None, title=None, vmax=1.0):
    """A grey slice (axis 0 horizontal) with optional label contours (MYO green, LV red, RV blue)."""
    ax.imshow(np.asarray(image).T, cmap="gray", vmin=0.0, vmax=vmax, interpolation="nearest")
    if label is not None:
        for cls, color in CLASS_COLORS.items():
            m = (np.asarray(label) == cls).T
            if m.any():
                ax.contour(m.astype(float), levels=[0.5], colors=[color], linewidths=0.8)
    if title:
        ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def row_colours(n: int) -> list:
    """n distinct colours, one per table row or curve: tab10 up to ten, evenly spaced hues beyond (tab10 repeats
    itself from the eleventh, which made two rows look like one)."""
    return list(sns.color_palette("tab10" if n <= 10 else "husl", n))


def add_contour_key(fig, inches: float = 0.3) -> None:
    """Lay the figure out with a key of the contour colours (MYO, LV, RV) in a strip of its own under the panels,
    so the key covers no image."""
    handles = [Line2D([0], [0], color=c, lw=1.8, label=f"{CLASS_NAMES[k]} contour") for k, c in CLASS_COLORS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, inches / fig.get_figheight(), 1, 1))


def label_rows(axes, names, fontsize: int = 9) -> None:
    """Row names written left of each row's first panel (not as titles, which crowd the row above)."""
    for r, name in enumerate(names):
        axes[r, 0].text(-0.08, 0.5, name, transform=axes[r, 0].transAxes, rotation=90, ha="right", va="center",
                        fontsize=fontsize)


def fig1_appearance(examples: dict[str, dict[str, tuple]]):
    """Rows = data sets, columns = sequences: {'phantom': {'C0': (image, label), ...}, ...} (Fig. 1, left)."""
    seqs = [s for s in ("C0", "LGE", "T2") if any(s in e for e in examples.values())]
    fig, axes = plt.subplots(len(examples), 2 * len(seqs), figsize=(2.6 * 2 * len(seqs), 2.7 * len(examples)),
                             squeeze=False)
    for r, (name, by_seq) in enumerate(examples.items()):
        for c, seq in enumerate(seqs):
            ax_img, ax_lab = axes[r, 2 * c], axes[r, 2 * c + 1]
            if seq not in by_seq:
                ax_img.set_axis_off(), ax_lab.set_axis_off()
                ax_img.text(0.5, 0.5, f"no {seq}", ha="center", va="center", transform=ax_img.transAxes)
                continue
            image, label = by_seq[seq]
            show_slice(ax_img, image, title=f"{name}: {SEQ_NAMES[seq]}")
            show_slice(ax_lab, image, label, title="MYO / LV / RV")
    add_contour_key(fig)
    return fig


def fig1_intensity(pools: dict, kl=None, regions=("heart", "MYO"), bins: int = 64):
    """Histograms of normalised intensity per region (rows) and data set (columns), KL to C0 in the legend."""
    names = list(pools)
    fig, axes = plt.subplots(len(regions), len(names), figsize=(4.2 * len(names), 2.9 * len(regions)), squeeze=False)
    edges = np.linspace(0.0, 1.0, bins + 1)
    for c, name in enumerate(names):
        for r, region in enumerate(regions):
            ax = axes[r, c]
            for seq, by_region in pools[name].items():
                vals = by_region[region]
                if not len(vals):
                    continue
                label = SEQ_NAMES[seq]
                if kl is not None and seq != "C0":
                    row = kl[(kl["data"] == name) & (kl["pair"] == f"C0->{seq}")]
                    if len(row):
                        label += f"  (KL from C0 {float(row[region].iloc[0]):.2f})"
                ax.hist(vals, bins=edges, density=True, histtype="stepfilled", alpha=0.35, color=SEQ_COLORS[seq],
                        label=label)
                ax.hist(vals, bins=edges, density=True, histtype="step", color=SEQ_COLORS[seq])
            region_name = "LV ∪ MYO ∪ RV" if region == "heart" else region
            ax.set_title(f"{name}: {region_name}", fontsize=10)
            ax.set_xlabel("normalised intensity")
            ax.legend(fontsize=7)
            if c == 0:
                ax.set_ylabel("density")
    fig.tight_layout()
    return fig


def augmentation_grid(samples: list[dict], ncols: int = 4):
    """Show dataset items (image + label contours) in a grid: what the network sees after augmentation."""
    n = len(samples)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.6 * nrows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_axis_off()
    for ax, s in zip(axes.ravel(), samples):
        show_slice(ax, s["image"][0].numpy(), s["label"].numpy() if s["has_label"] else None,
                   title=f"p{s['patient']} {s['sequence']} z{s['slice']}")
    add_contour_key(fig)
    return fig


# ---------------------------------------------------------------------------------------------
# stylizers (notebooks 02, 03)

def _pick(n_total: int, n: int) -> list[int]:
    return sorted({int(i) for i in np.linspace(0, n_total - 1, min(n, n_total))})


def stylization_grid(st, n: int = 6, title: str = ""):
    """Rows: content (bSSFP), style (left out when None: style-free augmentations), stylized, for n
    examples (Fig. 7)."""
    idx = _pick(st.content.shape[0], n)
    rows = [(k, v) for k, v in (("content", st.content), ("style", st.style), ("stylized", st.stylized))
            if v is not None]
    fig, axes = plt.subplots(len(rows), len(idx), figsize=(2.3 * len(idx), 2.4 * len(rows)), squeeze=False)
    for c, i in enumerate(idx):
        for r, (name, imgs) in enumerate(rows):
            show_slice(axes[r, c], imgs[i, 0].numpy(), title=name if c == 0 else None)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def stylization_histograms(values: dict, kl: dict, bins: int = 64, title: str = ""):
    """Intensity histograms of content, style and stylized images in the myocardium and in LV ∪ MYO ∪ RV,
    with the KL divergences in the legends (Fig. 8). values: {region: {'content'|'style'|'stylized': array}}."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    edges = np.linspace(0.0, 1.0, bins + 1)
    colors = {"content": "#1f77b4", "style": "#d62728", "stylized": "#2ca02c"}
    for ax, region in zip(axes, ("MYO", "heart")):
        suffix = "_myo" if region == "MYO" else ""
        legend = {"content": f"content (KL to style {kl['kl_content_to_style' + suffix]:.2f})",
                  "style": "style",
                  "stylized": f"stylized (KL to style {kl['kl_stylized_to_style' + suffix]:.2f}, "
                              f"to content {kl['kl_stylized_to_content' + suffix]:.2f})"}
        for name, vals in values[region].items():
            ax.hist(vals, bins=edges, density=True, histtype="step", lw=1.6, color=colors[name], label=legend[name])
        ax.set_title("myocardium" if region == "MYO" else "LV ∪ MYO ∪ RV", fontsize=10)
        ax.set_xlabel("normalised intensity")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("density")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def contour_overlay(st, n: int = 6, title: str = ""):
    """The content's label contours drawn on the stylized image (Fig. 9): is the structure still there?"""
    idx = _pick(st.content.shape[0], n)
    fig, axes = plt.subplots(2, len(idx), figsize=(2.3 * len(idx), 4.9), squeeze=False)
    for c, i in enumerate(idx):
        lab = st.content_label[i].numpy()
        show_slice(axes[0, c], st.content[i, 0].numpy(), lab)
        show_slice(axes[1, c], st.stylized[i, 0].numpy(), lab)
    label_rows(axes, ["content", "stylized"])
    fig.suptitle(title)
    add_contour_key(fig)
    return fig


def kernel_size_strip(stylized: dict, n: int = 3, title: str = ""):
    """The same content slices stylized at each kernel size ({'k = 3': Stylization, ...}, same contents), the
    content's label contours on each: where the anatomy moves, the contours stop fitting."""
    first = next(iter(stylized.values()))
    idx = _pick(first.content.shape[0], n)
    cols = len(stylized) + 2
    fig, axes = plt.subplots(len(idx), cols, figsize=(2.3 * cols, 2.4 * len(idx)), squeeze=False)
    for r, i in enumerate(idx):
        lab = first.content_label[i].numpy()
        show_slice(axes[r, 0], first.content[i, 0].numpy(), lab, title="bSSFP content" if r == 0 else None)
        show_slice(axes[r, 1], first.style[i, 0].numpy(), title="style" if r == 0 else None)
        for c, (name, st) in enumerate(stylized.items(), 2):
            show_slice(axes[r, c], st.stylized[i, 0].numpy(), lab, title=name if r == 0 else None)
    fig.suptitle(title)
    add_contour_key(fig)
    return fig


def quality_strip(q, n: int = 6, title: str = ""):
    """The stylizer quality figure: for n held-out slices, rows content, the target slice given as style,
    stylized, and (for a stylizer with a style search) stylized after the search, the content's contours
    (MYO green, LV red, RV blue) on every row but the style's; row names on the left."""
    idx = _pick(q.content.shape[0], n)
    rows = [("content (bSSFP)", q.content, True), ("style (its pool)", q.style, False),
            ("stylized", q.stylized, True)] + ([("after the style search", q.searched, True)]
                                               if q.searched is not None else [])
    fig, axes = plt.subplots(len(rows), len(idx), figsize=(2.1 * len(idx), 2.2 * len(rows)), squeeze=False)
    for r, (name, imgs, contours) in enumerate(rows):
        for c, i in enumerate(idx):
            show_slice(axes[r, c], imgs[i, 0].float().numpy(), q.content_label[i] if contours else None)
    label_rows(axes, [name for name, *_ in rows])
    fig.suptitle(title, fontsize=10)
    add_contour_key(fig)
    return fig


def exploration_strip(content, label, exploration, show=(0, 1, 3, 5), title: str = ""):
    """The same content under increasing exploration iterations (Fig. 5): one row per example, the batch's
    segmentation loss after each number of iterations in the column titles."""
    show = [i for i in show if i < len(exploration.images)]
    n = content.shape[0]
    fig, axes = plt.subplots(n, len(show) + 1, figsize=(2.3 * (len(show) + 1), 2.4 * n), squeeze=False)
    for r in range(n):
        show_slice(axes[r, 0], content[r, 0].numpy(), label[r].numpy(), title="content" if r == 0 else None)
        for c, it in enumerate(show, 1):
            head = f"{it} iteration{'s' if it != 1 else ''}\nloss {exploration.losses[it]:.3f}" if r == 0 else None
            show_slice(axes[r, c], exploration.images[it][r, 0].float().numpy(), title=head)
    fig.suptitle(title)
    add_contour_key(fig)
    return fig


def loss_curves(history: dict, title: str = ""):
    """Training losses per step (log scale), smoothed over 20 steps."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    steps = np.asarray(history["step"])
    for k, v in history.items():
        if k == "step" or not len(v):
            continue
        v = np.asarray(v, dtype=float)
        w = min(20, len(v))
        smooth = np.convolve(v, np.ones(w) / w, mode="valid")
        ax.plot(steps[w - 1:], smooth, label=k)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def prediction_panels(rows: dict[str, list[dict]], title: str = ""):
    """Fig. 6 style: for each named row (e.g. 'bSSFP', 'LGE', a setting), slices with the ground truth
    (top) and the prediction (bottom) drawn as contours; the per-slice Dice in each title.
    rows: {row name: [experiment.predict_examples item, ...]}, same number of slices per row."""
    n = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(2 * len(rows), n, figsize=(2.3 * n, 5.4 * len(rows)), squeeze=False)
    for r, (name, items) in enumerate(rows.items()):
        for c in range(n):
            top, bottom = axes[2 * r, c], axes[2 * r + 1, c]
            if c >= len(items):
                top.set_axis_off()
                bottom.set_axis_off()
                continue
            it = items[c]
            show_slice(top, it["image"], it["label"], title=f"{name}: ground truth\npatient {it['patient']}")
            show_slice(bottom, it["image"], it["pred"], title=f"prediction, Dice {it['dice']:.2f}")
    for ax in axes.ravel():
        ax.title.set_fontsize(8)
    fig.suptitle(title)
    add_contour_key(fig)
    return fig


def training_curves(history: dict, title: str = ""):
    """Segmentation training: the loss per step (smoothed over 20 steps) and the validation Dice (LGE)."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.2))
    loss = np.asarray(history["loss"], dtype=float)
    w = min(20, len(loss))
    a.plot(np.asarray(history["step"])[w - 1:], np.convolve(loss, np.ones(w) / w, mode="valid"))
    a.set_yscale("log")
    a.set_xlabel("step")
    a.set_title("training loss (CE + soft Dice)", fontsize=10)
    if history.get("val_dice"):
        b.plot(history["val_step"], history["val_dice"], "o-")
        b.set_ylim(0, 1)
    b.set_xlabel("step")
    b.set_title("validation Dice (LGE of validation patients)", fontsize=10)
    fig.suptitle(title)
    fig.tight_layout()
    return fig

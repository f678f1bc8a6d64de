"""Beyond the paper (its Section 7): how the AdaConv kernel size, and a style VAE on AdaConv's descriptor,
change what the stylized images keep of the anatomy and take of the style.

Structure preservation of a trained stylizer is measured three ways on the same stylized heart slices:
the edge overlap of content and stylized images, the Dice between the content's label and what a DRU-Net
trained on the content (bSSFP) segments in the stylized image (relative to the same network on the
content itself), and the intensity-histogram KL of the stylized heart to the style's.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from cmr_lib.core.device import device
from cmr_lib.data.sources import CMRSource
from cmr_lib.evaluation.metrics import dice
from cmr_lib.study.stylizers import geometry_kept, stylization_kl, stylize_examples
from cmr_lib.training.augment import Stylization
from cmr_lib.training.stylizers import TrainedStylizer

COLUMNS = ["kind", "kernel_size", "edge_overlap", "dice_content", "dice_stylized", "dice_kept",
           "kl_stylized_to_style", "kl_content_to_style", "slices"]


def segment(model, images: torch.Tensor, batch: int = 16) -> np.ndarray:
    """Class maps (N, S, S) of a DRU-Net on images (N, 1, S, S)."""
    dev = device()
    model = model.to(dev).eval()
    with torch.inference_mode():
        return torch.cat([model(images[k:k + batch].to(dev)).argmax(1).cpu()
                          for k in range(0, images.shape[0], batch)]).numpy()


def label_dice(pred: np.ndarray, label: np.ndarray) -> float:
    """Mean foreground Dice (MYO, LV, RV present in the label) over slices."""
    scores = [dice(p == c, t == c) for p, t in zip(pred, label) for c in (1, 2, 3) if (t == c).any()]
    return float(np.mean(scores)) if scores else float("nan")


def structure_preservation(st: Stylization, segmenter, bins: int) -> dict:
    """Edge overlap, the bSSFP network's Dice on content and on stylized slices (and their ratio), and the
    stylized and raw content's histogram KL to the style (heart region)."""
    labels = st.content_label.numpy()
    d_content = label_dice(segment(segmenter, st.content), labels)
    d_stylized = label_dice(segment(segmenter, st.stylized), labels)
    kl = stylization_kl(st, bins)
    return {"edge_overlap": geometry_kept(st), "dice_content": d_content, "dice_stylized": d_stylized,
            "dice_kept": d_stylized / d_content if d_content > 0 else float("nan"),
            "kl_stylized_to_style": kl["kl_stylized_to_style"], "kl_content_to_style": kl["kl_content_to_style"],
            "slices": int(st.content.shape[0])}


def preservation_row(ts: TrainedStylizer, cfg, source: CMRSource, segmenter, *, max_slices: int | None = 64
                     ) -> tuple[dict, Stylization]:
    """One row of the kernel-size table (a trained stylizer's structure preservation on stylized examples),
    and those examples (the same content and style slices for every stylizer of one seed)."""
    st = stylize_examples(ts, cfg, source, max_slices=max_slices)
    kernel = ts.info["config"][ts.kind].get("kernel_size")
    return {"kind": ts.kind, "kernel_size": kernel,
            **structure_preservation(st, segmenter, cfg.sizes.analysis.hist_bins)}, st


def preservation_markdown(rows: list[dict]) -> str:
    """The kernel-size table as Markdown (one row per stylizer kind and kernel size)."""
    df = pd.DataFrame(rows, columns=COLUMNS).sort_values(["kind", "kernel_size"])
    head = ("| stylizer | kernel | edge overlap | DRU-Net Dice on bSSFP | on stylized | kept | KL stylized→style "
            "| KL bSSFP→style | slices |")
    lines = [head, "|" + "---|" * 9]
    for r in df.itertuples(index=False):
        lines.append(f"| {r.kind} | {r.kernel_size} | {r.edge_overlap:.3f} | {r.dice_content:.3f} | "
                     f"{r.dice_stylized:.3f} | {r.dice_kept:.3f} | {r.kl_stylized_to_style:.3f} | "
                     f"{r.kl_content_to_style:.3f} | {r.slices} |")
    return "\n".join(lines) + "\n"

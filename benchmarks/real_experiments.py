"""One setting row on the real MS-CMRSeg sample with profile overrides, scored on the tuning set (MyoPS 101-110, the
half of MyoPS that may serve as styles and is never reported: data.splits.external_split), and, as before the
tuning set existed, on the labelled LGE of patients 1-5 and the 20 MyoPS 2020 DE volumes: the experiments behind
the `real` profile's choices. Choices are made on the tuning column only (docs/methods.md). Each result is appended
as one JSON line to benchmarks/results/real_experiments.jsonl.

    python benchmarks/real_experiments.py NAME SETTING STYLIZER EPSILON '{"stylizer.explore.step": 1.0}' [--seed 0]
    python benchmarks/real_experiments.py table      # the log as benchmarks/results/real_experiments.md
    python benchmarks/real_experiments.py fidelity   # how much of a real slice the MR autoencoder keeps
    python benchmarks/real_experiments.py crops [DIR]  # every network under DIR, crop at the image centre vs on
                                                       # the heart, on the tuning set (and the test sets, shown)
    python benchmarks/real_experiments.py crops-choice  # the choice read off test_crop.md's tuning columns
    python benchmarks/real_experiments.py placement  # where each test heart lies against the centred crop (seconds)

Stylizers and networks are cached by configuration under --work (default build/real_experiments), so rows
that share a stylizer train it once. Data: data.real.resolve_data (CMR_REAL_DATA or ../shared/data).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from cmr_lib.core.atomic import write_text
from cmr_lib.core.config import make_config
from cmr_lib.core.paths import repo_root
from cmr_lib.data.real import resolve_data
from cmr_lib.data.sources import open_source
from cmr_lib.data.splits import external_split
from cmr_lib.evaluation.inference import score_volumes
from cmr_lib.study.runs import run_setting
from cmr_lib.training.stylizers import load_decoder, resolve_encoder

LOG = repo_root() / "benchmarks" / "results" / "real_experiments.jsonl"
SELECTED = {"target": "LGE 1-5", "source": "bSSFP 31-35", "last": "last step"}


def table(log=LOG) -> str:
    """The experiment log as a markdown table, in the order run."""
    rows = [json.loads(line) for line in Path(log).read_text().splitlines() if line.strip()]
    lines = ["| experiment | setting | stylizer | ε | overrides | seed | checkpoint chosen on | Dice LGE 1-5 "
             "(MYO / LV / RV) | Dice AVG LGE 1-5 | Dice AVG MyoPS 20 | Dice AVG tuning set (MyoPS 101-110) "
             "| minutes |", "|" + " --- |" * 12]
    for r in rows:
        parts = " / ".join(f"{r['val'][k]:.3f}" for k in ("MYO", "LV", "RV"))
        over = ", ".join(f"{k} = {v}" for k, v in r["over"].items()) or "(profile " + r["profile"] + ")"
        tune = f"{r['tune_dice']:.3f}" if "tune_dice" in r else ""
        lines.append(f"| {r['name']} | {r['setting']} | {r['stylizer']} | {r['eps'] or ''} | {over} | {r['seed']} | "
                     f"{SELECTED.get(r.get('select', 'target'))} | {parts} | {r['val_dice']:.3f} | "
                     f"{r['myops_dice']:.3f} | {tune} | {r['minutes']} |")
    return "\n".join(lines) + "\n\n" + ("Rows before the tuning set existed chose their checkpoint on LGE 1-5 and were "
                                          "read on LGE 1-5 and MyoPS: choices made from them were made on test "
                                          "sets (docs/methods.md, Choices and the sets they were made on).\n")


def fidelity(work: Path, sizes=((1.5, 96), (1.0, 144))) -> str:
    """How much of a real slice survives the stylizers' bottleneck: the offline 'mr' autoencoder (relu4_1 of
    the encoder, then the mirror decoder: what every stylized image is decoded through) at each (spacing mm,
    crop px), on the C0 and LGE slices of validation patients 1-5. PSNR (dB) and the share of the image's
    gradient energy kept (1 = as sharp as the input)."""
    import torch

    from cmr_lib.data.slices import SliceDataset
    from cmr_lib.data.splits import run_split

    named = resolve_data("mscmrseg2019")
    src = open_source(named.data_dir, c0_spacing=named.c0_spacing)
    (work / "checkpoints").mkdir(parents=True, exist_ok=True)
    lines = ["| spacing mm | crop px | sequence | slices | PSNR dB | gradient energy kept |", "|" + " --- |" * 6]
    for spacing, crop in sizes:
        over = {"preprocess.spacing_mm": spacing, **{f"preprocess.crop.{k}": crop for k in ("rain", "adaconv", "none")}}
        cfg = make_config(profile="demo", data_dir=named.data_dir, c0_spacing=named.c0_spacing, output_root=work,
                          overrides=over, t2_dir=str(named.t2_dir))
        split = run_split(src, cfg.split, cfg.sizes.segmenter)
        enc, record = resolve_encoder(cfg, src, split=split, progress=False)      # trains the autoencoder if new
        dec = load_decoder(work / "checkpoints" / "autoencoders" / record["source"], enc.width)
        enc.eval(), dec.eval()
        for seq in ("C0", "LGE"):
            ds = SliceDataset.from_source(src, split["val"], seq, **cfg.slicing(train=False, crop=crop), label="optional")
            x = torch.stack([ds[i]["image"] for i in range(len(ds))])
            with torch.no_grad():
                y = dec(enc(x, last_only=True)).clamp(0.0, 1.0)
            psnr = float((10 * torch.log10(1.0 / ((y - x) ** 2).flatten(1).mean(1))).mean())
            grad = (lambda t: float((t[..., 1:, :] - t[..., :-1, :]).abs().mean() + (t[..., 1:] - t[..., :-1]).abs().mean()))
            lines.append(f"| {spacing} | {crop} | {seq} | {len(x)} | {psnr:.2f} | {grad(y) / grad(x):.2f} |")
    return "\n".join(lines) + "\n"


def test_crops(work: Path) -> str:
    """Every network under `work` (these experiments' folders, or a run's output root such as real/mscmrseg2019),
    scored with its crop at the image centre (preprocess.test_crop = image, what it was trained with) and centred on
    the heart that the network finds (heart), on the tuning set (MyoPS 101-110: the column a choice is read from)
    and, for reference only, on the two test sets: does centring the test crop on the heart pay?"""
    from cmr_lib.core.config import Config
    from cmr_lib.core.device import autocast, device
    from cmr_lib.core.grid import label, row_key
    from cmr_lib.data.slices import preprocess_arguments
    from cmr_lib.evaluation.inference import TEST_CROPS, predict_volume, score_predictions
    from cmr_lib.training.segmenters import load_run_segmenter

    from cmr_lib.data.real import evaluation_sets
    tests = evaluation_sets()
    head = " | ".join(f"{t} {c}" for c in TEST_CROPS for t in tests)
    lines = [f"| run | seed | {head} |", "|" + " --- |" * (2 + len(TEST_CROPS) * len(tests))]
    dev = device()
    found = sorted(Path(work).glob("results/runs/*/run.json")) or sorted(Path(work).glob("*/results/runs/*/run.json"))
    for run in found:
        rec = json.loads(run.read_text())
        cfg = Config.from_record(rec, output_root=run.parents[3])
        model = load_run_segmenter(rec, cfg).to(dev)
        cells = []
        for centre in TEST_CROPS:
            for vols in tests.values():
                pairs = [(v, predict_volume(model, v, crop=cfg.crop, **preprocess_arguments(cfg.sizes.preprocess),
                                            centre=centre, device=dev,
                                            autocast=autocast(cfg.sizes.segmenter.precision, dev))) for v in vols]
                cells.append(f"{np.nanmean(score_predictions(pairs)[0]['dice'].to_numpy(dtype=float)):.3f}")
        name = run.parents[3].name if run.parents[3] != Path(work) else label(row_key(rec))
        lines.append(f"| {name} | {rec['config']['seed']} | " + " | ".join(cells) + " |")
    table_md = "\n".join(lines) + "\n"
    return table_md + crop_choice(table_md)


CHOICE = "\nDice AVG (MYO, LV, RV) per set and test crop. The choice is read from the tuning columns only"


def crop_choice(table_md: str) -> str:
    """The test-crop choice read off the table's tuning columns only: each crop's mean over the networks, and for
    how many networks the heart-centred crop was the better one; the test columns are shown, not used."""
    head = [c.strip() for c in table_md.splitlines()[0].strip("|").split("|")]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in table_md.splitlines()[2:] if ln.startswith("| ")]
    tuning = {c.split(" ")[-1]: head.index(c) for c in head if c.startswith("tuning:")}
    means = {crop: float(np.mean([float(r[i]) for r in rows])) for crop, i in tuning.items()}
    better = sum(float(r[tuning["heart"]]) > float(r[tuning["image"]]) for r in rows)
    pick = max(means, key=means.get)
    return (f"{CHOICE}; the test columns are shown, not used. Mean on the tuning set over {len(rows)} networks: "
            + ", ".join(f"{c} {m:.3f}" for c, m in means.items())
            + f"; the heart-centred crop was better for {better} of them. Chosen: `{pick}`.\n")


def placement(work: Path) -> str:
    """Each labelled real LGE test volume's field, its heart's distance from the image centre and the share of the
    heart inside the `real` profile's centred test crop (report.explore.heart_placement); `work` is not used."""
    from cmr_lib.report.explore import heart_placement

    named = resolve_data("mscmrseg2019")
    cfg = make_config(profile="real", data_dir=named.data_dir, c0_spacing=named.c0_spacing)
    fov = cfg.crop * cfg.sizes.preprocess.spacing_mm
    sources = {"MS-CMRSeg 2019": open_source(named.data_dir, c0_spacing=named.c0_spacing),
               "MyoPS 2020": open_source(resolve_data("myops2020").data_dir)}
    table = heart_placement(sources, fov)
    return (table.to_markdown(index=False, floatfmt=".2f") + f"\n\nThe centred test crop of profile `real`: {cfg.crop} px "
            f"at {cfg.sizes.preprocess.spacing_mm} mm = {fov:.0f} mm. Heart: LV, MYO and RV over all slices.\n")


def main(argv=None) -> int:
    import sys
    argv = sys.argv[1:] if argv is None else argv
    reports = {"fidelity": (fidelity, "autoencoder_fidelity.md"), "crops": (test_crops, "test_crop.md"),
               "placement": (placement, "test_placement.md")}
    if argv[:1] and argv[0] in reports:
        report, name = reports[argv[0]]
        work = Path(argv[1]) if len(argv) > 1 else repo_root() / "build" / "real_experiments"
        out = LOG.parent / name
        write_text(out, report(work))
        print(out.read_text())
        return 0
    if argv[:1] == ["crops-choice"]:                 # the choice appended to a crops table already written
        out = LOG.parent / "test_crop.md"
        table_md = out.read_text().split(CHOICE)[0].rstrip("\n") + "\n"
        write_text(out, table_md + crop_choice(table_md))
        print(out.read_text())
        return 0
    if argv[:1] == ["table"]:
        out = LOG.with_suffix(".md")
        write_text(out, table())
        print(out.read_text())
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name")
    ap.add_argument("setting", type=int)
    ap.add_argument("stylizer")
    ap.add_argument("epsilon", type=int)
    ap.add_argument("overrides", nargs="?", default="{}", help="dotted profile keys as JSON")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--work", default=str(repo_root() / "build" / "real_experiments"))
    ap.add_argument("--log", default=str(LOG))
    args = ap.parse_args(argv)
    over = json.loads(args.overrides)
    named, myops = resolve_data("mscmrseg2019"), open_source(resolve_data("myops2020").data_dir)
    out = Path(args.work) / args.name                     # one results/ per experiment, one shared checkpoints/
    out.mkdir(parents=True, exist_ok=True)
    shared = Path(args.work) / "checkpoints"
    shared.mkdir(exist_ok=True)
    if not (out / "checkpoints").exists():
        (out / "checkpoints").symlink_to(shared)
    t = time.perf_counter()
    cfg = make_config(profile=args.profile, setting=args.setting, stylizer=args.stylizer, seed=args.seed,
                      data_dir=named.data_dir, c0_spacing=named.c0_spacing, output_root=out, overrides=over,
                      t2_dir=str(named.t2_dir))
    run = run_setting(cfg, open_source(named.data_dir, c0_spacing=named.c0_spacing),
                      epsilon_iterations=args.epsilon, progress=False)
    val = run.record["summary"]["val"]["dice"]

    def dice_on(patients):
        scores, _ = score_volumes(run.segmenter.model, [myops.load(p, "LGE", label="require") for p in patients],
                                  cfg.inference)
        return round(float(np.nanmean(scores["dice"].to_numpy(dtype=float))), 4)

    roles = external_split(myops)
    row = {"name": args.name, "profile": args.profile, "seed": args.seed, "setting": args.setting,
           "stylizer": args.stylizer, "eps": args.epsilon, "over": over,
           "select": run.record["segmenter"].get("selection", {}).get("rule", "target"),
           "val_dice": val["AVG"], "val": {k: val[k] for k in ("MYO", "LV", "RV")},
           "myops_dice": dice_on(myops.patients_with("LGE", labelled=True)),
           "tune_dice": dice_on(roles["tune"]),          # MyoPS 101-110: the tuning set (docs/methods.md)
           "minutes": round((time.perf_counter() - t) / 60, 1)}
    print(json.dumps(row), flush=True)
    Path(args.log).parent.mkdir(parents=True, exist_ok=True)
    with open(args.log, "a") as f:
        f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Ship one trained DRU-Net for `cmr-predict` (issue 36): of every row and seed of a real-data run, the network with the
best Dice on the tuning set (MyoPS 101-110, which no table reports), saved as models/<name>/model.pt (weights and the
configuration inference needs, nothing else; weights_only loadable) with its model card, models/<name>/card.json and
models/README.md, giving its scores on the tuning set and on the two test sets (LGE 1-5, MyoPS 111-120), and every
candidate's tuning Dice in models/<name>/candidates.csv.

    python benchmarks/ship_model.py real/mscmrseg2019 [--name drunet-lge]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

from cmr_lib.core.atomic import write_json, write_text
from cmr_lib.core.config import Config
from cmr_lib.core.device import device
from cmr_lib.core.grid import label, row_key
from cmr_lib.core.paths import display_path, repo_root
from cmr_lib.data.real import TUNING, evaluation_sets
from cmr_lib.evaluation.evaluate import summarize
from cmr_lib.evaluation.inference import score_volumes
from cmr_lib.report.tables import load_runs, selection_of
from cmr_lib.training.checkpoints import load_checkpoint, save_checkpoint
from cmr_lib.training.segmenters import load_run_segmenter, run_checkpoint

MODELS = repo_root() / "models"


def scores(model, vols, cfg) -> dict:
    """Dice and HD per structure and their average over the volumes."""
    df, _ = score_volumes(model, vols, cfg.inference)
    m = summarize(df)
    return {"cases": int(df["case"].nunique()), "dice": {k: round(float(v), 4) for k, v in m.loc["dice"].items()},
            "hd": {k: round(float(v), 2) for k, v in m.loc["hd"].items()}}


def card_markdown(card: dict) -> str:
    """models/README.md from the shipped model's card."""
    t = card["scores"]
    rows = "\n".join(f"| {name} | {s['cases']} | {s['dice']['MYO']:.3f} | {s['dice']['LV']:.3f} | {s['dice']['RV']:.3f} "
                     f"| {s['dice']['AVG']:.3f} | {s['hd']['AVG']:.1f} |" for name, s in t.items())
    return f"""# Shipped model: `{card['name']}`

A DRU-Net that segments the LV blood pool, the LV myocardium (MYO) and the RV blood pool in short-axis LGE
(or bSSFP) cardiac MR: `cmr-predict -i FOLDER -o OUT` uses it by default (README, Command-line tools).
**For research and teaching only; not for clinical use.**

| | |
|---|---|
| network | DRU-Net, depth {card['segmenter']['depth']}, {card['segmenter']['root']} root channels, \
{card['parameters']:,} parameters |
| trained on | MS-CMRSeg 2019 bSSFP, labelled patients {card['train_patients']}, restyled as the row says |
| row, seed | {card['row']}, seed {card['seed']} (profile `{card['profile']}`) |
| checkpoint chosen on | {card['selection']} |
| picked among | {card['candidates']} networks (every row and seed of the run), by Dice on the tuning set only |
| input | any NIfTI volume; normalised and resampled in-plane to {card['preprocess']['spacing_mm']} mm, \
{card['crop']} px crop at the image centre |
| file | `model.pt`: the weights and this configuration only, loadable with `torch.load(..., weights_only=True)` |

Scores (Dice per structure, Hausdorff distance in mm averaged over MYO, LV, RV; patients of each set):

| set | patients | MYO | LV | RV | Dice AVG | HD AVG |
|---|---|---|---|---|---|---|
{rows}

The tuning set chose this network and is not a test; the two test sets played no part in any choice. The official
MS-CMRSeg LGE 6-45 test labels are withheld by the challenge; predictions for them are under
`real/mscmrseg2019/predictions/`. Source: `{card['source']}`, written by `benchmarks/ship_model.py`.
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("output_root", help="a real-data run's output folder, e.g. real/mscmrseg2019")
    ap.add_argument("--name", default="drunet-lge")
    args = ap.parse_args(argv)
    root = Path(args.output_root).resolve()
    records = load_runs(root / "results")
    sets = evaluation_sets()
    dev, best, t0, candidates = device(), None, time.perf_counter(), []
    for rec in records:
        cfg = Config.from_record(rec, output_root=root)
        model = load_run_segmenter(rec, cfg).to(dev)
        tune = scores(model, sets[TUNING], cfg)
        print(f"{label(row_key(rec))} seed {rec['seed']}: tuning Dice {tune['dice']['AVG']:.3f}", flush=True)
        candidates.append({"row": label(row_key(rec)), "seed": rec["seed"], "tuning_dice": tune["dice"]["AVG"]})
        if best is None or tune["dice"]["AVG"] > best[0]["dice"]["AVG"]:
            best = (tune, rec, cfg, model)
    tune, rec, cfg, model = best
    ckpt = load_checkpoint(run_checkpoint(rec))
    keep = {k: ckpt["config"][k] for k in ("crop", "preprocess", "segmenter")}
    out = MODELS / args.name
    save_checkpoint(out / "model.pt", model=model.cpu(), optimizer=None, step=int(ckpt["step"]),
                    config={**keep, "shipped_from": {"row": label(row_key(rec)), "seed": rec["seed"],
                                                     "profile": rec["profile"], "run": rec["run_name"]}}, history={})
    sel = selection_of(rec)
    card = {"name": args.name, "row": label(row_key(rec)), "seed": rec["seed"], "profile": rec["profile"],
            "segmenter": keep["segmenter"], "crop": keep["crop"], "preprocess": keep["preprocess"],
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "train_patients": f"{min(rec['data']['split']['train'])}-{max(rec['data']['split']['train'])}",
            "selection": f"{sel['rule']} ({sel.get('sequence') or '-'} {sel.get('patients') or ''})".strip(),
            "candidates": len(records), "source": display_path(root),
            "scores": {TUNING: tune, **{name: scores(model, vols, cfg) for name, vols in sets.items() if name != TUNING}},
            "seconds_to_choose": round(time.perf_counter() - t0, 1)}
    write_json(out / "card.json", card)
    write_text(out / "candidates.csv", pd.DataFrame(candidates).to_csv(index=False, float_format="%.3f"))
    write_text(MODELS / "README.md", card_markdown(card))
    print(json.dumps(card["scores"], indent=1))
    print(f"shipped {out / 'model.pt'} ({(out / 'model.pt').stat().st_size / 1e6:.1f} MB); {tune['dice']['AVG']:.3f} "
          f"Dice on the tuning set")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Which offline encoder should stand in for ImageNet VGG-19? A measured choice, not an accident.

Candidates (both need no download): 'random' (seeded He-initialised filters, as in random-feature
texture synthesis) and 'mr' (the VGG encoder trained as an autoencoder on the MR slices themselves).
For each, on the demo profile and the phantom: stylization KL (bSSFP -> LGE, heart region; lower =
closer to LGE) and the downstream test Dice/HD of DRU-Nets trained in setting 2 with RAIN and with
AdaConv, next to setting 0 (no stylization). Writes results/encoder_comparison.json.

    python benchmarks/compare_offline_encoders.py [--profile demo]
"""
import argparse
import json
import time

from cmr_lib.core.atomic import write_json
from cmr_lib.core.config import make_config
from cmr_lib.data.sources import source_for
from cmr_lib.data.splits import run_split
from cmr_lib.evaluation.evaluate import summarize
from cmr_lib.evaluation.inference import score_volumes
from cmr_lib.study.stylizers import stylization_kl, stylize_examples
from cmr_lib.training.segmenters import train_setting
from cmr_lib.training.stylizers import train_stylizer


def run(profile: str, fallback: str | None, kind: str | None):
    setting = 0 if kind is None else 2
    overrides = {"stylizer.offline_fallback": fallback} if fallback else None
    cfg = make_config(profile=profile, setting=setting, stylizer=kind or "rain", overrides=overrides)
    source = source_for(**cfg.source_args, progress=False)
    split = run_split(source, cfg.split, cfg.sizes.segmenter)
    row = {"encoder": fallback or "-", "stylizer": kind or "none", "setting": setting}
    t = time.perf_counter()
    ts = None
    if kind:
        ts = train_stylizer(cfg, source, kind, ("C0", "LGE"), split=split, progress=False)
        kl = stylization_kl(stylize_examples(ts, cfg, source), cfg.sizes.analysis.hist_bins)
        row.update({k: round(kl[k], 3) for k in ("kl_content_to_style", "kl_stylized_to_style")})
    seg = train_setting(cfg, source, stylizer=ts, split=split, progress=False)
    df, _ = score_volumes(seg.model, (source.load(p, "LGE", label="optional") for p in split["test"]), cfg.inference)
    s = summarize(df)
    row.update({"test_dice": round(float(s.loc["dice", "AVG"]), 3), "test_hd_mm": round(float(s.loc["hd", "AVG"]), 1),
                "dice_MYO": round(float(s.loc["dice", "MYO"]), 3), "dice_LV": round(float(s.loc["dice", "LV"]), 3),
                "dice_RV": round(float(s.loc["dice", "RV"]), 3), "minutes": round((time.perf_counter() - t) / 60, 1)})
    print(row, flush=True)
    return row, cfg


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="demo")
    args = ap.parse_args()
    rows = []
    base, cfg = run(args.profile, None, None)
    rows.append(base)
    for fallback in ("random", "mr"):
        for kind in ("rain", "adaconv"):
            rows.append(run(args.profile, fallback, kind)[0])
    print(f"\n{'encoder':<8}{'stylizer':<9}{'KL content':>11}{'KL stylized':>12}{'test Dice':>10}{'test HD':>9}")
    for r in rows:
        print(f"{r['encoder']:<8}{r['stylizer']:<9}{r.get('kl_content_to_style', float('nan')):>11.3f}"
              f"{r.get('kl_stylized_to_style', float('nan')):>12.3f}{r['test_dice']:>10.3f}{r['test_hd_mm']:>9.1f}")
    write_json(cfg.results_dir / "encoder_comparison.json", {"profile": args.profile, "rows": rows})
    print(json.dumps(rows))


if __name__ == "__main__":
    main()

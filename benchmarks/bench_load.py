"""Load (issue 6): the phantom and the evaluator at 45 and 200 patients, and one 512x512x20 volume.

Each measurement runs in a fresh child process, so its peak resident memory is its own. Prints time and
peak RSS at both sizes and the time ratio against the linear expectation (200 / 45 = 4.44), then the
peak memory of reading and scoring one 512x512x20 volume against the bytes of the volume itself.

    python benchmarks/bench_load.py [--small 45] [--large 200] [--workers 2]
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import numpy as np
what, arg, work = sys.argv[1], sys.argv[2], Path(sys.argv[3])
t0 = time.perf_counter()
if what == "phantom":
    from cmr_lib.data import phantom
    n, workers = (int(v) for v in arg.split(","))
    phantom.generate(work / f"phantom{n}", patients=n, seed=2019, workers=workers, progress=False)
    extra = {"files": len(list((work / f"phantom{n}").glob("*.nii.gz")))}
elif what == "evaluate":
    from cmr_lib.evaluation.evaluate import evaluate_dirs
    n = int(arg)
    df = evaluate_dirs(work / f"pred{n}", work / f"gt{n}")
    extra = {"cases": int(df["case"].nunique()), "dice_mean": round(float(df["dice"].mean()), 4)}
else:  # one big volume: read it, score it against a shifted copy; tracemalloc sees numpy's buffers
    import tracemalloc
    from cmr_lib.data.sources import open_source
    from cmr_lib.evaluation.metrics import evaluate_volume
    tracemalloc.start()
    vol = open_source(work / "big").load(1, "LGE")
    pred = np.roll(vol.label, 3, axis=0)
    m = evaluate_volume(pred, vol.label, vol.spacing)
    extra = {"shape": list(vol.image.shape), "image_mib": round(vol.image.nbytes / 2**20, 1),
             "dice_LV": round(m["LV"]["dice"], 4), "allocated_peak_mib": tracemalloc.get_traced_memory()[1] / 2**20}
seconds = time.perf_counter() - t0
peak = max(resource.getrusage(r).ru_maxrss for r in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024
print(json.dumps({"seconds": round(seconds, 2), "peak_mib": round(peak, 1), **extra}))
"""


def child(what, arg, work):
    out = subprocess.run([sys.executable, "-c", CHILD, what, str(arg), str(work)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def prediction_folders(work: Path, n: int):
    """Ground truth = the phantom's LGE labels of n patients; prediction = each label shifted by 2 voxels."""
    import nibabel as nib
    import numpy as np

    gt, pred = work / f"gt{n}", work / f"pred{n}"
    gt.mkdir()
    pred.mkdir()
    for src in sorted((work / f"phantom{n}").glob("patient*_LGE_manual.nii.gz")):
        img = nib.load(str(src))
        name = src.name.replace("_manual", "")
        nib.save(img, str(gt / name))
        nib.save(nib.Nifti1Image(np.roll(np.asarray(img.dataobj), 2, axis=0), img.affine, img.header),
                 str(pred / name))


def big_volume(work: Path):
    import nibabel as nib
    import numpy as np

    d = work / "big"
    d.mkdir()
    shape = (512, 512, 20)
    x, y = np.meshgrid(np.arange(512), np.arange(512), indexing="ij")
    r = np.hypot(x - 300, y - 256)
    lab2 = np.zeros((512, 512), np.int16)
    lab2[r < 60] = 200
    lab2[r < 40] = 500
    lab2[(np.hypot(x - 180, y - 256) < 45) & (r >= 60)] = 600
    lab = np.repeat(lab2[:, :, None], shape[2], axis=2)
    img = (np.random.default_rng(0).random(shape) * 100 + (lab > 0) * 300).astype(np.float32)
    aff = np.diag([0.7, 0.7, 8.0, 1.0])
    for name, arr in (("patient1_LGE.nii.gz", img), ("patient1_LGE_manual.nii.gz", lab)):
        nib.save(nib.Nifti1Image(arr, aff), str(d / name))
    return img.nbytes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=45)
    ap.add_argument("--large", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        rows = {}
        for n in (args.small, args.large):   # the small run is the reference for the large one
            rows[("phantom", n)] = child("phantom", f"{n},{args.workers}", work)
            prediction_folders(work, n)
            rows[("evaluate", n)] = child("evaluate", n, work)
        for what in ("phantom", "evaluate"):
            a, b = rows[(what, args.small)], rows[(what, args.large)]
            ratio = b["seconds"] / a["seconds"]
            print(f"{what:9s} {args.small:4d} patients: {a['seconds']:7.1f} s, peak {a['peak_mib']:7.1f} MiB | "
                  f"{args.large:4d}: {b['seconds']:7.1f} s, peak {b['peak_mib']:7.1f} MiB | time ratio {ratio:.2f} "
                  f"(linear: {args.large / args.small:.2f}; {ratio / (args.large / args.small):.2f}x of linear)")
        nbytes = big_volume(work)
        big = child("big", 0, work)
        extra = big["allocated_peak_mib"]
        print(f"512x512x20 volume ({nbytes / 2**20:.0f} MiB as float32): read + Dice/HD/HD95/ASSD in "
              f"{big['seconds']:.1f} s, process peak {big['peak_mib']:.0f} MiB (interpreter and torch included); "
              f"peak of the arrays allocated while reading and scoring {extra:.0f} MiB = "
              f"{extra / (nbytes / 2**20):.1f}x the volume's float32 size")


if __name__ == "__main__":
    main()

"""Phantom generation time: a 45-patient data set with all cores (target: under a minute on 2 cores),
against a serial reference run of a few patients in the same process.

    python benchmarks/bench_phantom.py [--patients 45]
"""
import argparse
import os
import resource
import tempfile
import time

from cmr_lib.data import phantom


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=45)
    ap.add_argument("--reference", type=int, default=4, help="patients of the serial reference run")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        phantom.generate(os.path.join(d, "serial"), patients=args.reference, seed=1, workers=1, progress=False)
        serial = (time.perf_counter() - t0) / args.reference
        t0 = time.perf_counter()
        rec = phantom.generate(os.path.join(d, "full"), patients=args.patients, seed=2019, progress=False)
        full = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in os.scandir(os.path.join(d, "full"))) / 2 ** 20
    peak = max(resource.getrusage(r).ru_maxrss for r in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024
    print(f"serial reference: {serial:.2f} s/patient (1 worker, {args.reference} patients)")
    print(f"{args.patients} patients: {full:.1f} s with {rec['workers']} workers "
          f"({full / args.patients:.2f} s/patient, {serial * args.patients / full:.1f}x the serial rate), "
          f"{size:.0f} MiB written, peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main()

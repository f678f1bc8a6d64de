"""A simulated multi-sequence short-axis cardiac MR phantom, written in the MS-CMRSeg 2019 layout.

Built from tissue physics, not painted intensities (the MRXCAT recipe, Wissmann et al. 2014): each
patient gets an anatomy (LV ring with segmental wall thickness and trabeculae, RV crescent, papillary
muscles, epicardial fat, atria and aortic root above the base, lungs, liver, aorta, spine, chest wall)
and sometimes an infarct (scar + edema). Each sequence samples that anatomy on its own grid (spacing,
slice thickness, pose), turns tissue T1/T2/PD into signal with its signal equation, averages
sub-samples (partial volume), multiplies a smooth coil bias field, adds Rician noise and stores int16.

    python -m cmr_lib.data.phantom OUT_DIR --patients 45 --seed 2019

Notebook 01 explains the contrasts and calibrates the C0 -> LGE shift against the real data.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from cmr_lib.core.atomic import atomic_path, write_json
from cmr_lib.core.errors import CmrError, check_int, cli_main

from cmr_lib.data.phantom_anatomy import (HEART_BOX_MM, along, directions, render_slices, sample_anatomy,
                                          tissue_signals, uniform)

PHANTOM_VERSION = 4

CLASS_CODES = np.array([0, 200, 500, 600], dtype=np.int16)   # MS-CMRSeg label values


@dataclass(frozen=True)
class Acquisition:
    """Sequence-typical acquisition ranges (uniform draws per patient)."""

    matrix: int                   # in-plane matrix (square)
    spacing: tuple                # in-plane spacing range (mm)
    thickness: tuple              # slice spacing = thickness range (mm), no gap
    slices: tuple                 # (min, max) slice count
    snr: tuple                    # SNR range relative to the reference tissue
    ref: str                      # reference tissue for SNR
    coil_gain: tuple              # surface-coil gain range at the body surface (0: a perfectly flat receiver)


ACQUISITIONS = {
    # cropped like the MS-CMRSeg copy: 192 px at ~1.25 mm (bSSFP) and ~0.75 mm (LGE); T2 as in MyoPS, coarser
    # bSSFP and LGE are usually intensity-corrected (mild coil profile); black-blood T2 often is not, so the
    # tissue next to the anterior and posterior coil arrays outshines the deep-lying heart (as in MyoPS T2)
    "C0": Acquisition(192, (1.18, 1.26), (8.0, 13.0), (8, 14), (25.0, 40.0), "blood", (0.2, 0.6)),
    "LGE": Acquisition(192, (0.72, 0.78), (5.0, 5.0), (10, 20), (12.0, 20.0), "blood", (0.2, 0.6)),
    "T2": Acquisition(160, (1.30, 1.40), (12.0, 20.0), (3, 7), (10.0, 18.0), "myocardium", (3.0, 6.0)),
}


# ---------------------------------------------------------------------------------------------
# acquisition

_ORIENTATIONS = {  # direction cosines (columns) giving the two codes seen in the real data
    ("P", "S", "R"): np.array([[0, 0, -1], [-1, 0, 0], [0, 1, 0]], dtype=float),
    ("L", "S", "P"): np.array([[-1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=float),
}


def _bias_field(rng, shape, amplitude):
    """Smooth multiplicative coil sensitivity: exp of a random quadratic in (x, y) plus a weak z term."""
    X, Y, Z = shape
    gx = np.linspace(-1, 1, X, dtype=np.float32)[:, None, None]
    gy = np.linspace(-1, 1, Y, dtype=np.float32)[None, :, None]
    gz = np.linspace(-1, 1, Z, dtype=np.float32)[None, None, :] if Z > 1 else np.zeros((1, 1, 1), np.float32)
    c = rng.normal(0.0, 1.0, 7)
    c[:6] *= amplitude / 2
    c[6] *= amplitude / 6
    log_b = c[0] * gx + c[1] * gy + c[2] * gx * gy + c[3] * gx ** 2 + c[4] * gy ** 2 + c[5] * (gx + gy) + c[6] * gz
    return np.exp(log_b - log_b.mean())


def _coil_profile(rng, a, x, y, gain_range):
    """Receive sensitivity of anterior and posterior phased-array coils: 1 + g exp(-depth / lambda) per array,
    with depth measured from the anterior and the posterior body surface (mm)."""
    _, anterior = directions(a)
    ua = along(x, y, anterior)
    front = -a["body_shift"] + a["body_ap"]
    back = -a["body_shift"] - a["body_ap"]
    lam = uniform(rng, 35.0, 60.0)
    g_front, g_back = uniform(rng, *gain_range), 0.6 * uniform(rng, *gain_range)
    return (1.0 + g_front * np.exp(-np.clip(front - ua, 0.0, None) / lam)
            + g_back * np.exp(-np.clip(ua - back, 0.0, None) / lam)).astype(np.float32)


def _texture(rng, shape, sigma_px, amplitude):
    """Mild multiplicative tissue texture: a smooth random field per slice (standard deviation `amplitude`)."""
    field = ndimage.gaussian_filter(rng.normal(0.0, 1.0, shape).astype(np.float32), (sigma_px, sigma_px, 0))
    field /= max(float(field.std()), 1e-6)
    return 1.0 + amplitude * field


def acquire(a: dict, sequence: str, rng: np.random.Generator, *, noise=True, bias=True, supersample=2,
            sub_slice_mm=4.0, track=()):
    """Simulate one sequence of one patient. Returns (image float32, label classes uint8, spacing, info).

    track: region names (see REGIONS) whose per-voxel volume fraction is returned in info['fractions'].
    The random draws come in a fixed order (geometry, sequence parameters, corruption): the phantom of a seed
    never changes.
    """
    acq = ACQUISITIONS[sequence]
    grid = _slice_grid(a, acq, rng, supersample)
    # TI is set on a TI scout minutes before the LGE acquisition; gadolinium washes out meanwhile and T1
    # rises, so the TI falls 3-14 % short of the myocardial null: healthy myocardium is dark, not black.
    params = dict(flip_deg=uniform(rng, 50.0, 70.0), ti_factor=uniform(rng, 0.86, 0.97), te=uniform(rng, 60.0, 80.0),
                  t1_post_scale=uniform(rng, 0.9, 1.1), blood_t1_post_scale=uniform(rng, 0.75, 1.0),
                  blood_flow=uniform(rng, 0.85, 1.15))
    signals = tissue_signals(sequence, **params)
    signal, label, fractions = render_slices(a, grid, signals, sub_slice_mm, track)
    signal, snr = _corrupt(signal, a, acq, grid, signals[acq.ref], rng, noise=noise, bias=bias)
    ds, dz = grid["ds"], grid["dz"]
    info = dict(spacing=(ds, ds, dz), slices=len(grid["z"]), snr=snr, z_centres=[float(z) for z in grid["z"]], **params)
    if track:
        info["fractions"] = fractions
    return signal, label, (ds, ds, dz), info


def _slice_grid(a: dict, acq, rng: np.random.Generator, k: int) -> dict:
    """A sequence's geometry: voxel size and slice thickness, slice heights (apex first, as stored), and the
    in-plane sub-sample coordinates (k x k per voxel) after the sequence's own pose (the sequences of one patient
    are not co-registered), with the box around the LV axis that the heart can lie in."""
    n = acq.matrix
    ds = uniform(rng, *acq.spacing)
    dz = uniform(rng, *acq.thickness)
    L = a["L"]
    top, bottom = L + uniform(rng, -5.0, 12.0), uniform(rng, -8.0, 8.0)
    nz = int(np.clip(round((top - bottom) / dz) + 1, *acq.slices))
    z_centres = top - dz * np.arange(nz) + uniform(rng, -dz / 4, dz / 4)   # base first, as stored slices go
    shift = rng.uniform(-12.0, 12.0, 2)
    rot = uniform(rng, -0.08, 0.08)
    g = ((np.arange(n * k, dtype=np.float32) + 0.5) / k - n / 2) * ds
    gx, gy = np.meshgrid(g, g, indexing="ij")
    cr, sr = np.cos(rot), np.sin(rot)
    x = (cr * gx - sr * gy + shift[0]).astype(np.float32)
    y = (sr * gx + cr * gy + shift[1]).astype(np.float32)
    inside = (np.abs(x) < HEART_BOX_MM + 0.15 * L) & (np.abs(y) < HEART_BOX_MM + 0.15 * L)
    rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    box = (slice(rows[0] // k * k, (rows[-1] // k + 1) * k), slice(cols[0] // k * k, (cols[-1] // k + 1) * k))
    return {"n": n, "k": k, "ds": ds, "dz": dz, "z": z_centres[::-1].copy(), "x": x, "y": y, "box": box}


def _corrupt(signal, a: dict, acq, grid: dict, ref: float, rng: np.random.Generator, *, noise: bool, bias: bool):
    """The signal as acquired: coil profile, bias field and texture (bias), then Rician noise at the sequence's
    SNR relative to its reference tissue (noise). Returns (signal, snr)."""
    n, k = grid["n"], grid["k"]
    if bias:
        xv, yv = (g.reshape(n, k, n, k).mean(axis=(1, 3)) for g in (grid["x"], grid["y"]))      # voxel centres (mm)
        signal = signal * _coil_profile(rng, a, xv, yv, acq.coil_gain)[:, :, None]
        signal *= _bias_field(rng, signal.shape, amplitude=0.5)
        signal *= _texture(rng, signal.shape, sigma_px=2.0 / grid["ds"], amplitude=0.1)
    snr = uniform(rng, *acq.snr)
    if noise:
        sigma = ref / snr
        re = signal + rng.normal(0.0, sigma, signal.shape).astype(np.float32)
        im = rng.normal(0.0, sigma, signal.shape).astype(np.float32)
        signal = np.hypot(re, im)                                   # Rician magnitude
    return signal, snr


def simulate_patient(seed_seq, *, noise=True, bias=True, infarct_probability=0.5, track=()) -> dict:
    """All three sequences of one patient: {'anatomy': ..., 'C0'|'LGE'|'T2': (image, label, spacing, info)}."""
    rng = np.random.default_rng(seed_seq)
    anatomy = sample_anatomy(rng, infarct_probability=infarct_probability)
    out = {"anatomy": anatomy}
    for seq in ("C0", "LGE", "T2"):
        out[seq] = acquire(anatomy, seq, rng, noise=noise, bias=bias, track=track)
    return out


def _affine(rng, spacing, orientation):
    """An affine with the given orientation codes and an arbitrary origin (world positions mean nothing)."""
    aff = np.eye(4)
    aff[:3, :3] = _ORIENTATIONS[orientation] * np.asarray(spacing)[None, :]
    aff[:3, 3] = rng.uniform(-150.0, 150.0, 3)
    return aff


def _save(array, affine, spacing, path):
    img = nib.Nifti1Image(array, affine)
    img.header.set_zooms(tuple(float(s) for s in spacing))
    img.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def write_patient(out_dir, patient: int, seed_seq) -> dict:
    """Simulate and write one patient's three sequences and labels (int16, MS-CMRSeg names)."""
    sim = simulate_patient(seed_seq)
    # storage draws (scale, affine) from a fixed child key, without advancing the caller's SeedSequence
    rng = np.random.default_rng(np.random.SeedSequence(seed_seq.entropy, spawn_key=(*seed_seq.spawn_key, 1 << 20)))
    orientation = list(_ORIENTATIONS)[int(rng.integers(2))]
    meta = {"patient": patient, "orientation": "".join(orientation), "sequences": {}}
    for seq in ("C0", "LGE", "T2"):
        image, label, spacing, info = sim[seq]
        scale = uniform(rng, 800.0, 3000.0) / max(float(np.percentile(image, 99.9)), 1e-6)
        stored = np.clip(np.rint(image * scale), 0, 32767).astype(np.int16)
        aff = _affine(rng, spacing, orientation)
        _save(stored, aff, spacing, Path(out_dir) / f"patient{patient}_{seq}.nii.gz")
        _save(CLASS_CODES[label], aff, spacing, Path(out_dir) / f"patient{patient}_{seq}_manual.nii.gz")
        meta["sequences"][seq] = {k: v for k, v in info.items() if k != "z_centres"}
    inf = sim["anatomy"]["infarct"]
    meta["infarct"] = None if inf is None else {k: inf[k] for k in ("territory", "kind", "transmurality", "edema")}
    return meta


def _write_patient_job(job):
    out_dir, patient, seed_seq = job
    return write_patient(out_dir, patient, seed_seq)


PHANTOM_FILE = re.compile(r"^\.?patient\d+_(C0|T2|LGE)(_manual)?\.nii\.gz(\.\w+\.tmp\.nii\.gz)?$")  # + atomic temps


def _prepare_folder(out_dir: Path, overwrite: bool) -> None:
    """Make `out_dir` ready for a new phantom without losing anyone's files: an empty folder, or one this
    command wrote (phantom.json, or phantom.partial from a run that was stopped), is cleared of its phantom
    files; any other non-empty folder is refused unless `overwrite`, which replaces the files named like
    phantom files and keeps the rest. A phantom folder never mixes two phantoms or phantom and real patients."""
    markers = ("phantom.json", "phantom.partial")
    present = list(out_dir.iterdir())
    ours = any((out_dir / m).is_file() for m in markers)
    foreign = [f.name for f in present if not (PHANTOM_FILE.match(f.name) or f.name in markers)]
    if present and not ours and not overwrite:
        raise CmrError(f"{out_dir}: folder is not empty and holds no phantom written by this command "
                       f"({len(present)} entries, e.g. {sorted(f.name for f in present)[0]}); choose an empty "
                       f"folder, or pass --overwrite to replace its patient files")
    if ours and foreign and not overwrite:
        raise CmrError(f"{out_dir}: the phantom folder also holds other files ({', '.join(sorted(foreign)[:3])}); "
                       f"move them, or pass --overwrite")
    for f in present:
        if PHANTOM_FILE.match(f.name) or f.name == "phantom.json":
            f.unlink()


def generate(out_dir, *, patients=45, seed=2019, workers=None, progress=True, overwrite=False) -> dict:
    """Write a phantom data set of `patients` patients; `phantom.json` (written last) marks it complete.

    Deterministic per seed whatever the number of workers: patient i always draws from the i-th child
    of SeedSequence(seed). A folder that holds anything but an earlier phantom is refused (`overwrite`
    replaces its patient files).
    """
    check_int("patients", patients, minimum=1)
    check_int("seed", seed)
    if workers is not None:
        check_int("workers", workers, minimum=1)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CmrError(f"{out_dir}: cannot create the output folder ({exc.strerror})") from None
    if not out_dir.is_dir():
        raise CmrError(f"{out_dir}: is a file, not a folder")
    if not os.access(out_dir, os.W_OK):
        raise CmrError(f"{out_dir}: output folder is not writable")
    _prepare_folder(out_dir, overwrite)
    marker = out_dir / "phantom.json"
    (out_dir / "phantom.partial").write_text("a phantom is being written here by cmr_lib.data.phantom\n")
    children = np.random.SeedSequence(seed).spawn(patients)
    jobs = [(str(out_dir), i + 1, children[i]) for i in range(patients)]
    workers = workers if workers is not None else min(len(os.sched_getaffinity(0)), 8)
    t0 = time.perf_counter()
    from tqdm.auto import tqdm

    bar = tqdm(total=patients, desc="phantom", unit="patient", disable=not progress)
    metas = []
    if workers > 1 and patients > 1:
        # fork where the OS has it (workers use numpy only): spawn would re-import a user's unguarded script
        method = "fork" if "fork" in get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context(method)) as pool:
            for meta in pool.map(_write_patient_job, jobs):
                metas.append(meta)
                bar.update()
    else:
        for job in jobs:
            metas.append(_write_patient_job(job))
            bar.update()
    bar.close()
    record = {"generator": "cmr_lib.data.phantom", "version": PHANTOM_VERSION, "patients": patients, "seed": seed,
              "seconds": round(time.perf_counter() - t0, 2), "workers": workers, "layout": "mscmrseg",
              "patients_meta": metas}
    write_json(marker, record)
    (out_dir / "phantom.partial").unlink(missing_ok=True)
    return record


def _complete(marker: Path, patients, seed) -> bool:
    """Whether phantom.json marks a complete phantom of these patients, seed and version."""
    try:
        rec = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return (rec.get("patients"), rec.get("seed"), rec.get("version")) == (patients, seed, PHANTOM_VERSION)


def ensure(out_dir, *, patients, seed, progress=True) -> Path:
    """Generate the phantom in `out_dir` unless a complete one with the same patients, seed and version is there;
    processes asking for it at once take turns under a file lock (one writes, the others find it complete)."""
    out_dir, marker = Path(out_dir), Path(out_dir) / "phantom.json"
    if not _complete(marker, patients, seed):
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(out_dir.parent / f".{out_dir.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not _complete(marker, patients, seed):
                generate(out_dir, patients=patients, seed=seed, progress=progress)
    return out_dir


@cli_main
def main(argv=None) -> int:
    """Command line: python -m cmr_lib.data.phantom OUT_DIR --patients N --seed S."""
    ap = argparse.ArgumentParser(prog="cmr-phantom", description=__doc__.split("\n\n")[0],
                                 epilog="example: cmr-phantom data/my_phantom --patients 10 --seed 1")
    ap.add_argument("out_dir", help="folder to write patient{i}_{C0,T2,LGE}[_manual].nii.gz into")
    ap.add_argument("--patients", type=int, default=45), ap.add_argument("--seed", type=int, default=2019)
    ap.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    ap.add_argument("--overwrite", action="store_true",
                    help="write into a folder that holds other files, replacing its patient{N}_* files")
    args = ap.parse_args(argv)
    rec = generate(args.out_dir, patients=args.patients, seed=args.seed, workers=args.workers,
                   overwrite=args.overwrite)
    n_inf = sum(m["infarct"] is not None for m in rec["patients_meta"])
    print(f"wrote {rec['patients']} patients ({n_inf} with infarct) to {args.out_dir} in {rec['seconds']:.1f} s "
          f"with {rec['workers']} workers")
    return 0


if __name__ == "__main__":
    sys.exit(main())

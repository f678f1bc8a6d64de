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
import json
import os
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

PHANTOM_VERSION = 4

# ---------------------------------------------------------------------------------------------
# tissues: proton density, native T1/T2 (ms, 1.5 T) and T1 after gadolinium (ms)

TISSUES = {
    #              PD     T1     T2   T1_post
    "air":        (0.00,    1.,   1.,    1.),
    "lung":       (0.10, 1200.,  40.,  900.),
    "fat":        (0.90,  260.,  80.,  250.),
    "muscle":     (0.75, 1000.,  40.,  700.),
    "liver":      (0.75,  580.,  45.,  400.),
    "blood":      (0.95, 1550., 250.,  350.),
    "myocardium": (0.80, 1000.,  50.,  480.),
    "infarct":    (0.85, 1150.,  65.,  270.),
    "edema":      (0.85, 1100.,  60.,  430.),
    "marrow":     (0.65,  550.,  50.,  450.),
}
TISSUE_NAMES = list(TISSUES)
_T = {name: i for i, name in enumerate(TISSUE_NAMES)}

# Regions: what geometry draws. Each maps to a tissue and a label class (0 bg, 1 MYO, 2 LV, 3 RV).
REGIONS = [
    ("air", "air", 0), ("body fat", "fat", 0), ("chest wall muscle", "muscle", 0),
    ("mediastinum", "muscle", 0), ("lung", "lung", 0), ("liver", "liver", 0),
    ("aorta", "blood", 0), ("spine", "marrow", 0), ("epicardial fat", "fat", 0),
    ("RV wall", "myocardium", 0), ("RV blood", "blood", 3), ("LV myocardium", "myocardium", 1),
    ("LV blood", "blood", 2), ("papillary muscle", "myocardium", 2), ("edema", "edema", 1),
    ("infarct", "infarct", 1), ("atrial wall", "myocardium", 0), ("atrial blood", "blood", 0),
]
_R = {name: i for i, (name, _, _) in enumerate(REGIONS)}
REGION_TISSUE = np.array([_T[t] for _, t, _ in REGIONS], dtype=np.int64)
REGION_CLASS = np.array([c for _, _, c in REGIONS], dtype=np.int64)
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
# signal equations (DESIGN.md): relative magnitude per tissue

def bssfp_signal(pd, t1, t2, flip_deg=60.0):
    """Balanced SSFP steady state: PD sin a / ((1 + cos a) + (1 - cos a) T1/T2); bright blood and fat."""
    a = np.deg2rad(flip_deg)
    return pd * np.sin(a) / ((1 + np.cos(a)) + (1 - np.cos(a)) * t1 / t2)


def lge_signal(pd, t1_post, ti):
    """Inversion recovery magnitude PD |1 - 2 exp(-TI/T1)|; TI = ln2 T1(myocardium) nulls healthy muscle."""
    return pd * np.abs(1 - 2 * np.exp(-ti / t1_post))


def t2w_signal(pd, t2, te=70.0):
    """T2-weighted spin echo PD exp(-TE/T2); blood and fat are suppressed separately (black blood, fat sat)."""
    return pd * np.exp(-te / t2)


def tissue_signals(sequence: str, *, flip_deg=60.0, ti_factor=1.0, te=70.0, t1_post_scale=1.0,
                   blood_t1_post_scale=1.0, blood_flow=1.0, blood_suppression=0.03,
                   fat_suppression=0.7) -> dict[str, float]:
    """Noiseless signal of every tissue in one sequence (native values for C0 and T2, post-Gd for LGE).

    t1_post_scale: contrast dose/delay (all post-Gd T1); blood_t1_post_scale: blood pool clearance on top;
    blood_flow: inflow/dephasing factor of the bSSFP blood signal; ti_factor: TI / ideal nulling TI.
    """
    pd = np.array([v[0] for v in TISSUES.values()])
    t1 = np.array([v[1] for v in TISSUES.values()])
    t2 = np.array([v[2] for v in TISSUES.values()])
    t1p = np.array([v[3] for v in TISSUES.values()]) * t1_post_scale
    t1p[_T["blood"]] *= blood_t1_post_scale
    if sequence == "C0":
        s = bssfp_signal(pd, t1, t2, flip_deg)
        s[_T["blood"]] *= blood_flow
    elif sequence == "LGE":
        ti = np.log(2.0) * t1p[_T["myocardium"]] * ti_factor
        s = lge_signal(pd, t1p, ti)
    elif sequence == "T2":
        s = t2w_signal(pd, t2, te)
        s[_T["blood"]] *= blood_suppression
        s[_T["fat"]] *= fat_suppression
        s[_T["marrow"]] *= fat_suppression
    else:
        raise CmrError(f"parameter 'sequence' = {sequence!r}: choose 'C0', 'LGE' or 'T2'")
    s[_T["air"]] = 0.0
    return dict(zip(TISSUE_NAMES, s.astype(float)))


# ---------------------------------------------------------------------------------------------
# anatomy

def _u(rng, lo, hi):
    return float(rng.uniform(lo, hi))


def sample_anatomy(rng: np.random.Generator, *, infarct_probability=0.5) -> dict:
    """Draw one patient's anatomy (mm, radians). z runs along the LV long axis: 0 = epicardial apex."""
    # sizes calibrated on the real labels (mid-basal LV cavity ~44 mm, epicardium ~67 mm across, ~80 mm long)
    R = _u(rng, 19.0, 26.0)                       # LV cavity radius at mid level
    t = _u(rng, 8.0, 12.0)                        # mean wall thickness
    L = _u(rng, 70.0, 90.0)                       # apex -> base
    theta_rv = np.pi + _u(rng, -0.35, 0.35)       # RV toward decreasing axis 0 (as in the real data)
    a = dict(
        R=R, t=t, L=L, theta_rv=theta_rv,
        equator=_u(rng, 0.55, 0.7), apex_wall=_u(rng, 0.6, 0.9) * t,
        taper=_u(rng, 0.05, 0.15), ellipticity=_u(rng, 0.9, 1.1), ellipse_angle=_u(rng, 0, np.pi),
        wall_a1=_u(rng, 0.0, 0.2), wall_p1=_u(rng, 0, 2 * np.pi),
        wall_a2=_u(rng, 0.0, 0.1), wall_p2=_u(rng, 0, 2 * np.pi),
        trab=[(int(k), _u(rng, 0.0, 0.03), _u(rng, 0, 2 * np.pi)) for k in rng.choice(np.arange(6, 13), 3, replace=False)],
        drift=(_u(rng, -0.12, 0.12), _u(rng, -0.12, 0.12)),
        rv_depth=_u(rng, 12.0, 24.0), rv_width=_u(rng, 1.25, 1.55), rv_shift=_u(rng, -5.0, 5.0),
        rv_apex=_u(rng, 0.18, 0.3), rv_wall=_u(rng, 2.5, 4.0),
        pap_r=_u(rng, 2.5, 4.0), pap_angles=(theta_rv + np.pi + _u(rng, 0.6, 0.9), theta_rv + np.pi - _u(rng, 0.6, 0.9)),
        fat=_u(rng, 1.5, 5.0),
        la_r=R * _u(rng, 1.0, 1.3), ao_r=_u(rng, 11.0, 15.0),
        body_lr=_u(rng, 140.0, 170.0), body_ap=_u(rng, 95.0, 120.0), body_shift=_u(rng, 35.0, 55.0),
        subcut=_u(rng, 6.0, 18.0), chest_muscle=_u(rng, 8.0, 14.0),
        liver_top=_u(rng, 0.45, 0.65), aorta_r=_u(rng, 10.0, 13.0),
    )
    a["infarct"] = None
    if rng.random() < infarct_probability:
        territory = rng.choice(["LAD", "LCX", "RCA"])
        center = {"LAD": theta_rv - 0.9, "LCX": theta_rv + np.pi, "RCA": theta_rv + 1.3}[territory]
        lo, hi = {"LAD": (0.1, 0.65), "LCX": (0.3, 0.9), "RCA": (0.3, 0.95)}[territory]
        z1 = _u(rng, lo, (lo + hi) / 2)
        transmurality = _u(rng, 0.3, 1.0)
        a["infarct"] = dict(
            territory=str(territory), angle=center + _u(rng, -0.3, 0.3), half_width=_u(rng, 0.35, 0.8),
            z=(z1 * L, min(hi, z1 + _u(rng, 0.2, 0.4)) * L), transmurality=transmurality,
            kind="transmural" if transmurality > 0.75 else "subendocardial",
            edema=bool(rng.random() < 0.6), edema_margin=_u(rng, 0.2, 0.45),
        )
    return a


def _radii(a, z):
    """LV cavity and epicardial radius (mean over angle) at long-axis height z (mm)."""
    L, eq, R, t = a["L"], a["equator"] * a["L"], a["R"], a["t"]
    if z >= eq:
        taper = 1.0 - a["taper"] * (z - eq) / (L - eq)
        return R * taper, (R + t) * taper
    epi = (R + t) * np.sqrt(max(0.0, 1.0 - ((eq - z) / eq) ** 2))
    span = eq - a["apex_wall"]
    endo = R * np.sqrt(max(0.0, 1.0 - ((eq - z) / span) ** 2)) if z > a["apex_wall"] else 0.0
    return endo, epi


def _ellipse(u, w, cu, cw, au, aw):
    return ((u - cu) / au) ** 2 + ((w - cw) / aw) ** 2 < 1.0


def _directions(a):
    """Angles (image plane) of the patient's right and anterior directions, and of the LV->RV axis."""
    right = a["theta_rv"] - np.pi / 6          # the RV lies anterior and to the right of the LV
    return right, right + np.pi / 2


def _along(x, y, angle):
    return x * np.cos(angle) + y * np.sin(angle)


def draw_chest(reg, a: dict, x, y, z: float):
    """Draw body fat, chest wall, mediastinum, lungs, liver, aorta and spine into `reg` (in place)."""
    right, anterior = _directions(a)
    ur, ua = _along(x, y, right), _along(x, y, anterior)
    cb = -a["body_shift"]
    reg[_ellipse(ur, ua, 20.0, cb, a["body_lr"], a["body_ap"])] = _R["body fat"]
    s = a["subcut"]
    reg[_ellipse(ur, ua, 20.0, cb, a["body_lr"] - s, a["body_ap"] - s)] = _R["chest wall muscle"]
    s += a["chest_muscle"]
    cavity = _ellipse(ur, ua, 20.0, cb, a["body_lr"] - s, a["body_ap"] - s)
    reg[cavity] = _R["mediastinum"]
    # lungs wrap the heart laterally and posteriorly, leaving the posterior mediastinum (aorta, spine)
    reg[cavity & _ellipse(ur, ua, -68.0, -50.0, 58.0, 100.0)] = _R["lung"]   # left lung, beside the LV
    reg[cavity & _ellipse(ur, ua, 85.0, -55.0, 62.0, 100.0)] = _R["lung"]    # right lung
    liver = np.sqrt(np.clip((a["liver_top"] * a["L"] - z) / (0.5 * a["L"]), 0.0, 1.0))
    if liver > 0:                                                           # the liver dome, toward the apex
        reg[_ellipse(ur, ua, 55.0, -55.0, 80.0 * liver, 50.0 * liver)] = _R["liver"]
    reg[_ellipse(ur, ua, -15.0, -60.0, a["aorta_r"], a["aorta_r"])] = _R["aorta"]
    reg[_ellipse(ur, ua, 10.0, cb - a["body_ap"] + s + 22.0, 18.0, 16.0)] = _R["spine"]


def draw_heart(reg, a: dict, x, y, z: float):
    """Draw the ventricles (or, above the base, atrium and aortic root) at height z into `reg` (in place)."""
    L = a["L"]
    x = x - a["drift"][0] * (z - 0.5 * L)      # the long axis is not exactly the slice normal
    y = y - a["drift"][1] * (z - 0.5 * L)
    u, w = _along(x, y, a["theta_rv"]), _along(x, y, a["theta_rv"] + np.pi / 2)   # u points to the RV
    _, epi_mid = _radii(a, a["equator"] * L)
    if L < z < L + 35.0:                       # above the base: left atrium and aortic root, background
        for rad, cu, cw in ((a["la_r"], -5.0, -8.0), (a["ao_r"], 0.6 * a["R"], 0.8 * a["R"])):
            reg[_ellipse(u, w, cu, cw, rad + 2.5, rad + 2.5)] = _R["atrial wall"]
            reg[_ellipse(u, w, cu, cw, rad, rad)] = _R["atrial blood"]
    endo, epi = _radii(a, min(z, L))
    ventricle = z <= L and epi > 0
    c, s = np.cos(a["ellipse_angle"]), np.sin(a["ellipse_angle"])
    e = a["ellipticity"]
    r = np.hypot((x * c + y * s) / np.sqrt(e), (-x * s + y * c) * np.sqrt(e))   # (slightly elliptical) LV radius
    th = np.arctan2(y, x)
    if ventricle:
        wall = 1.0 + a["wall_a1"] * np.cos(th - a["wall_p1"]) + a["wall_a2"] * np.cos(2 * (th - a["wall_p2"]))
        r_endo = endo * (1.0 + sum(amp * np.cos(k * th + ph) for k, amp, ph in a["trab"]))   # trabeculae
        r_epi = endo + (epi - endo) * wall
        lv_outside = r >= r_epi
    else:
        lv_outside = True
    # RV: an ellipse hugging the septum minus the LV; shrinks toward the apex, ends 12 mm above the base
    f = np.sqrt(np.clip((z - a["rv_apex"] * L) / (0.3 * L), 0.0, 1.0)) * np.clip((L + 12.0 - z) / 12.0, 0.0, 1.0)
    if ventricle:   # epicardial fat, thickest near the RV insertions and in the AV groove at the base
        d = np.angle(np.exp(1j * (th - a["theta_rv"])))
        insertion = np.exp(-((np.abs(d) - 1.1) ** 2) / 0.15)
        fat_t = a["fat"] * (0.15 + 1.3 * insertion) * (2.0 if z > 0.85 * L else 1.0)
        reg[r < r_epi + fat_t] = _R["epicardial fat"]
    if f > 0:
        cu, cw = 0.6 * epi_mid, a["rv_shift"]
        au, aw = (epi_mid + a["rv_depth"] - cu) * f, a["rv_width"] * epi_mid * f
        reg[_ellipse(u, w, cu, cw, au + a["rv_wall"] + 0.4 * a["fat"], aw + a["rv_wall"] + 0.4 * a["fat"]) & lv_outside] = _R["epicardial fat"]
        reg[_ellipse(u, w, cu, cw, au + a["rv_wall"], aw + a["rv_wall"]) & lv_outside] = _R["RV wall"]
        reg[_ellipse(u, w, cu, cw, au, aw) & lv_outside] = _R["RV blood"]
    if not ventricle:
        return
    myo = ~lv_outside
    reg[myo] = _R["LV myocardium"]
    inf = a["infarct"]
    if inf is not None:
        dth = np.abs(np.angle(np.exp(1j * (th - inf["angle"]))))
        z0, z1 = inf["z"]
        if inf["edema"] and z0 - 8.0 <= z <= z1 + 8.0:
            reg[myo & (dth < inf["half_width"] + inf["edema_margin"])] = _R["edema"]
        if z0 <= z <= z1:
            depth = (r - r_endo) / np.maximum(r_epi - r_endo, 1e-3)      # 0 endocardium -> 1 epicardium
            reg[myo & (dth < inf["half_width"]) & (depth < inf["transmurality"])] = _R["infarct"]
    if endo > 0:
        cavity = r < r_endo
        reg[cavity] = _R["LV blood"]
        if 0.3 * L <= z <= 0.75 * L:
            for ang in a["pap_angles"]:
                rad = endo - 0.8 * a["pap_r"]
                px, py = rad * np.cos(ang), rad * np.sin(ang)
                reg[cavity & ((x - px) ** 2 + (y - py) ** 2 < a["pap_r"] ** 2)] = _R["papillary muscle"]


HEART_BOX_MM = 80.0   # half-size of the square around the LV axis that can hold any heart structure


def region_map(a: dict, x: np.ndarray, y: np.ndarray, z: float) -> np.ndarray:
    """Region index (see REGIONS) at in-plane points (x, y) in mm around the LV axis, height z (mm)."""
    reg = np.zeros(x.shape, dtype=np.int8)
    draw_chest(reg, a, x, y, z)
    draw_heart(reg, a, x, y, z)
    return reg


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
    _, anterior = _directions(a)
    ua = _along(x, y, anterior)
    front = -a["body_shift"] + a["body_ap"]
    back = -a["body_shift"] - a["body_ap"]
    lam = _u(rng, 35.0, 60.0)
    g_front, g_back = _u(rng, *gain_range), 0.6 * _u(rng, *gain_range)
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
    """
    acq = ACQUISITIONS[sequence]
    n = acq.matrix
    ds = _u(rng, *acq.spacing)
    dz = _u(rng, *acq.thickness)
    L = a["L"]
    top, bottom = L + _u(rng, -5.0, 12.0), _u(rng, -8.0, 8.0)
    nz = int(np.clip(round((top - bottom) / dz) + 1, *acq.slices))
    z_centres = top - dz * np.arange(nz) + _u(rng, -dz / 4, dz / 4)   # base first, as stored slices go
    z_centres = z_centres[::-1].copy()                                  # store apex -> base along axis 2
    # per-sequence pose: the sequences of one patient are not co-registered
    shift = rng.uniform(-12.0, 12.0, 2)
    rot = _u(rng, -0.08, 0.08)
    # sub-sample grid (supersample x supersample per voxel, n_sub sub-slices per slice)
    k = supersample
    g = ((np.arange(n * k, dtype=np.float32) + 0.5) / k - n / 2) * ds
    gx, gy = np.meshgrid(g, g, indexing="ij")
    cr, sr = np.cos(rot), np.sin(rot)
    x = (cr * gx - sr * gy + shift[0]).astype(np.float32)
    y = (sr * gx + cr * gy + shift[1]).astype(np.float32)
    n_sub = max(2, int(np.ceil(dz / sub_slice_mm)))
    offsets = ((np.arange(n_sub) + 0.5) / n_sub - 0.5) * dz
    # the heart can only be inside a box around the LV axis: draw it there, per sub-slice
    inside = (np.abs(x) < HEART_BOX_MM + 0.15 * L) & (np.abs(y) < HEART_BOX_MM + 0.15 * L)
    rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    box = (slice(rows[0] // k * k, (rows[-1] // k + 1) * k), slice(cols[0] // k * k, (cols[-1] // k + 1) * k))
    xb, yb = x[box], y[box]

    # TI is set on a TI scout minutes before the LGE acquisition; gadolinium washes out meanwhile and T1
    # rises, so the TI falls 3-14 % short of the myocardial null: healthy myocardium is dark, not black.
    params = dict(flip_deg=_u(rng, 50.0, 70.0), ti_factor=_u(rng, 0.86, 0.97), te=_u(rng, 60.0, 80.0),
                  t1_post_scale=_u(rng, 0.9, 1.1), blood_t1_post_scale=_u(rng, 0.75, 1.0),
                  blood_flow=_u(rng, 0.85, 1.15))
    signals = tissue_signals(sequence, **params)
    signal_lut = np.array(list(signals.values()), dtype=np.float32)[REGION_TISSUE]
    class_lut = REGION_CLASS.astype(np.int64)
    pixel = (np.arange(n)[:, None, None, None] * n + np.arange(n)[None, None, :, None]).repeat(k, 1).repeat(k, 3)
    pixel = pixel.reshape(n * k, n * k) * 4                        # sub-sample -> 4 * its voxel index
    signal = np.zeros((n, n, nz), dtype=np.float32)
    label = np.zeros((n, n, nz), dtype=np.uint8)
    fractions = {name: np.zeros((n, n, nz), dtype=np.float32) for name in track}
    for iz, zc in enumerate(z_centres):
        chest = np.zeros(x.shape, dtype=np.int8)
        draw_chest(chest, a, x, y, float(zc))                       # the chest barely changes within a slice
        acc = np.zeros((n * k, n * k), dtype=np.float32)
        votes = np.zeros(4 * n * n, dtype=np.int64)
        for off in offsets:
            reg = chest.copy()
            sub = reg[box]
            # each in-plane sub-sample phase gets its own height (stratified within the sub-slice), so a thick
            # slice integrates over k*k*n_sub heights: smooth partial volume, no discrete rings at the apex
            for q in range(k * k):
                qi, qj = divmod(q, k)
                dzq = ((q + 0.5) / (k * k) - 0.5) * dz / n_sub
                draw_heart(sub[qi::k, qj::k], a, xb[qi::k, qj::k], yb[qi::k, qj::k], float(zc + off + dzq))
            acc += signal_lut[reg]
            votes += np.bincount((pixel + class_lut[reg]).ravel(), minlength=4 * n * n)
            for name, frac in fractions.items():
                frac[:, :, iz] += (reg == _R[name]).reshape(n, k, n, k).mean(axis=(1, 3)) / n_sub
        signal[:, :, iz] = acc.reshape(n, k, n, k).sum(axis=(1, 3)) / (k * k * n_sub)
        label[:, :, iz] = votes.reshape(n, n, 4).argmax(axis=2)
    ref = signals[acq.ref]
    if bias:
        xv, yv = (g.reshape(n, k, n, k).mean(axis=(1, 3)) for g in (x, y))      # voxel centres (mm)
        signal *= _coil_profile(rng, a, xv, yv, acq.coil_gain)[:, :, None]
        signal *= _bias_field(rng, signal.shape, amplitude=0.5)
        signal *= _texture(rng, signal.shape, sigma_px=2.0 / ds, amplitude=0.1)
    snr = _u(rng, *acq.snr)
    if noise:
        sigma = ref / snr
        re = signal + rng.normal(0.0, sigma, signal.shape).astype(np.float32)
        im = rng.normal(0.0, sigma, signal.shape).astype(np.float32)
        signal = np.hypot(re, im)                                   # Rician magnitude
    info = dict(spacing=(ds, ds, dz), slices=nz, snr=snr, z_centres=[float(z) for z in z_centres], **params)
    if track:
        info["fractions"] = fractions
    return signal, label, (ds, ds, dz), info


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
        scale = _u(rng, 800.0, 3000.0) / max(float(np.percentile(image, 99.9)), 1e-6)
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


def generate(out_dir, *, patients=45, seed=2019, workers=None, progress=True) -> dict:
    """Write a phantom data set of `patients` patients; `phantom.json` (written last) marks it complete.

    Deterministic per seed whatever the number of workers: patient i always draws from the i-th child
    of SeedSequence(seed).
    """
    check_int("patients", patients, minimum=1)
    check_int("seed", seed)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CmrError(f"{out_dir}: cannot create the output folder ({exc.strerror})") from None
    if not os.access(out_dir, os.W_OK):
        raise CmrError(f"{out_dir}: output folder is not writable")
    marker = out_dir / "phantom.json"
    if marker.exists():
        marker.unlink()
    children = np.random.SeedSequence(seed).spawn(patients)
    jobs = [(str(out_dir), i + 1, children[i]) for i in range(patients)]
    workers = workers or min(len(os.sched_getaffinity(0)), 8)
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
    return record


def ensure(out_dir, *, patients, seed, progress=True) -> Path:
    """Generate the phantom in `out_dir` unless a complete one with the same patients, seed and version is there."""
    out_dir = Path(out_dir)
    marker = out_dir / "phantom.json"
    if marker.is_file():
        try:
            rec = json.loads(marker.read_text())
            if (rec.get("patients"), rec.get("seed"), rec.get("version")) == (patients, seed, PHANTOM_VERSION):
                return out_dir
        except (OSError, ValueError):
            pass
    generate(out_dir, patients=patients, seed=seed, progress=progress)
    return out_dir


@cli_main
def main(argv=None) -> int:
    """Command line: python -m cmr_lib.data.phantom OUT_DIR --patients N --seed S."""
    ap = argparse.ArgumentParser(prog="python -m cmr_lib.data.phantom", description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", help="folder to write patient{i}_{C0,T2,LGE}[_manual].nii.gz into")
    ap.add_argument("--patients", type=int, default=45)
    ap.add_argument("--seed", type=int, default=2019)
    ap.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    args = ap.parse_args(argv)
    rec = generate(args.out_dir, patients=args.patients, seed=args.seed, workers=args.workers)
    n_inf = sum(m["infarct"] is not None for m in rec["patients_meta"])
    print(f"wrote {rec['patients']} patients ({n_inf} with infarct) to {args.out_dir} in {rec['seconds']:.1f} s "
          f"with {rec['workers']} workers")
    return 0


if __name__ == "__main__":
    sys.exit(main())

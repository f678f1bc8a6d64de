"""The phantom's tissue model and anatomy: tissue parameters, signal equations and the drawn heart and chest.

Each tissue has a proton density, native T1/T2 and a post-gadolinium T1 (1.5 T); each sequence turns
them into signal with its signal equation (bSSFP, inversion-recovery LGE, T2-weighted). An anatomy is
sampled per patient and drawn as region indices at any in-plane points around the LV axis; the
acquisition (data.phantom) samples it on each sequence's grid.
"""
from __future__ import annotations

import numpy as np

from cmr_lib.core.errors import CmrError

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
REGION_INDEX = {name: i for i, (name, _, _) in enumerate(REGIONS)}
REGION_TISSUE = np.array([_T[t] for _, t, _ in REGIONS], dtype=np.int64)
REGION_CLASS = np.array([c for _, _, c in REGIONS], dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# signal equations: relative magnitude per tissue

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

def uniform(rng, lo, hi):
    """One uniform draw in [lo, hi)."""
    return float(rng.uniform(lo, hi))


def sample_anatomy(rng: np.random.Generator, *, infarct_probability=0.5) -> dict:
    """Draw one patient's anatomy (mm, radians). z runs along the LV long axis: 0 = epicardial apex."""
    # sizes calibrated on the real labels (mid-basal LV cavity ~44 mm, epicardium ~67 mm across, ~80 mm long)
    R = uniform(rng, 19.0, 26.0)                       # LV cavity radius at mid level
    t = uniform(rng, 8.0, 12.0)                        # mean wall thickness
    L = uniform(rng, 70.0, 90.0)                       # apex -> base
    theta_rv = np.pi + uniform(rng, -0.35, 0.35)       # RV toward decreasing axis 0 (as in the real data)
    a = dict(
        R=R, t=t, L=L, theta_rv=theta_rv,
        equator=uniform(rng, 0.55, 0.7), apex_wall=uniform(rng, 0.6, 0.9) * t,
        taper=uniform(rng, 0.05, 0.15), ellipticity=uniform(rng, 0.9, 1.1), ellipse_angle=uniform(rng, 0, np.pi),
        wall_a1=uniform(rng, 0.0, 0.2), wall_p1=uniform(rng, 0, 2 * np.pi),
        wall_a2=uniform(rng, 0.0, 0.1), wall_p2=uniform(rng, 0, 2 * np.pi),
        trab=[(int(k), uniform(rng, 0.0, 0.03), uniform(rng, 0, 2 * np.pi)) for k in rng.choice(np.arange(6, 13), 3, replace=False)],
        drift=(uniform(rng, -0.12, 0.12), uniform(rng, -0.12, 0.12)),
        rv_depth=uniform(rng, 12.0, 24.0), rv_width=uniform(rng, 1.25, 1.55), rv_shift=uniform(rng, -5.0, 5.0),
        rv_apex=uniform(rng, 0.18, 0.3), rv_wall=uniform(rng, 2.5, 4.0),
        pap_r=uniform(rng, 2.5, 4.0), pap_angles=(theta_rv + np.pi + uniform(rng, 0.6, 0.9), theta_rv + np.pi - uniform(rng, 0.6, 0.9)),
        fat=uniform(rng, 1.5, 5.0),
        la_r=R * uniform(rng, 1.0, 1.3), ao_r=uniform(rng, 11.0, 15.0),
        body_lr=uniform(rng, 140.0, 170.0), body_ap=uniform(rng, 95.0, 120.0), body_shift=uniform(rng, 35.0, 55.0),
        subcut=uniform(rng, 6.0, 18.0), chest_muscle=uniform(rng, 8.0, 14.0),
        liver_top=uniform(rng, 0.45, 0.65), aorta_r=uniform(rng, 10.0, 13.0),
    )
    a["infarct"] = None
    if rng.random() < infarct_probability:
        territory = rng.choice(["LAD", "LCX", "RCA"])
        center = {"LAD": theta_rv - 0.9, "LCX": theta_rv + np.pi, "RCA": theta_rv + 1.3}[territory]
        lo, hi = {"LAD": (0.1, 0.65), "LCX": (0.3, 0.9), "RCA": (0.3, 0.95)}[territory]
        z1 = uniform(rng, lo, (lo + hi) / 2)
        transmurality = uniform(rng, 0.3, 1.0)
        a["infarct"] = dict(
            territory=str(territory), angle=center + uniform(rng, -0.3, 0.3), half_width=uniform(rng, 0.35, 0.8),
            z=(z1 * L, min(hi, z1 + uniform(rng, 0.2, 0.4)) * L), transmurality=transmurality,
            kind="transmural" if transmurality > 0.75 else "subendocardial",
            edema=bool(rng.random() < 0.6), edema_margin=uniform(rng, 0.2, 0.45),
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


def directions(a):
    """Angles (image plane) of the patient's right and anterior directions, and of the LV->RV axis."""
    right = a["theta_rv"] - np.pi / 6          # the RV lies anterior and to the right of the LV
    return right, right + np.pi / 2


def along(x, y, angle):
    return x * np.cos(angle) + y * np.sin(angle)


def draw_chest(reg, a: dict, x, y, z: float):
    """Draw body fat, chest wall, mediastinum, lungs, liver, aorta and spine into `reg` (in place)."""
    right, anterior = directions(a)
    ur, ua = along(x, y, right), along(x, y, anterior)
    cb = -a["body_shift"]
    reg[_ellipse(ur, ua, 20.0, cb, a["body_lr"], a["body_ap"])] = REGION_INDEX["body fat"]
    s = a["subcut"]
    reg[_ellipse(ur, ua, 20.0, cb, a["body_lr"] - s, a["body_ap"] - s)] = REGION_INDEX["chest wall muscle"]
    s += a["chest_muscle"]
    cavity = _ellipse(ur, ua, 20.0, cb, a["body_lr"] - s, a["body_ap"] - s)
    reg[cavity] = REGION_INDEX["mediastinum"]
    # lungs wrap the heart laterally and posteriorly, leaving the posterior mediastinum (aorta, spine)
    reg[cavity & _ellipse(ur, ua, -68.0, -50.0, 58.0, 100.0)] = REGION_INDEX["lung"]   # left lung, beside the LV
    reg[cavity & _ellipse(ur, ua, 85.0, -55.0, 62.0, 100.0)] = REGION_INDEX["lung"]    # right lung
    liver = np.sqrt(np.clip((a["liver_top"] * a["L"] - z) / (0.5 * a["L"]), 0.0, 1.0))
    if liver > 0:                                                           # the liver dome, toward the apex
        reg[_ellipse(ur, ua, 55.0, -55.0, 80.0 * liver, 50.0 * liver)] = REGION_INDEX["liver"]
    reg[_ellipse(ur, ua, -15.0, -60.0, a["aorta_r"], a["aorta_r"])] = REGION_INDEX["aorta"]
    reg[_ellipse(ur, ua, 10.0, cb - a["body_ap"] + s + 22.0, 18.0, 16.0)] = REGION_INDEX["spine"]


def draw_heart(reg, a: dict, x, y, z: float):
    """Draw the ventricles (or, above the base, atrium and aortic root) at height z into `reg` (in place)."""
    L = a["L"]
    x = x - a["drift"][0] * (z - 0.5 * L)      # the long axis is not exactly the slice normal
    y = y - a["drift"][1] * (z - 0.5 * L)
    u, w = along(x, y, a["theta_rv"]), along(x, y, a["theta_rv"] + np.pi / 2)   # u points to the RV
    _, epi_mid = _radii(a, a["equator"] * L)
    if L < z < L + 35.0:                       # above the base: left atrium and aortic root, background
        for rad, cu, cw in ((a["la_r"], -5.0, -8.0), (a["ao_r"], 0.6 * a["R"], 0.8 * a["R"])):
            reg[_ellipse(u, w, cu, cw, rad + 2.5, rad + 2.5)] = REGION_INDEX["atrial wall"]
            reg[_ellipse(u, w, cu, cw, rad, rad)] = REGION_INDEX["atrial blood"]
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
        reg[r < r_epi + fat_t] = REGION_INDEX["epicardial fat"]
    if f > 0:
        cu, cw = 0.6 * epi_mid, a["rv_shift"]
        au, aw = (epi_mid + a["rv_depth"] - cu) * f, a["rv_width"] * epi_mid * f
        reg[_ellipse(u, w, cu, cw, au + a["rv_wall"] + 0.4 * a["fat"], aw + a["rv_wall"] + 0.4 * a["fat"]) & lv_outside] = REGION_INDEX["epicardial fat"]
        reg[_ellipse(u, w, cu, cw, au + a["rv_wall"], aw + a["rv_wall"]) & lv_outside] = REGION_INDEX["RV wall"]
        reg[_ellipse(u, w, cu, cw, au, aw) & lv_outside] = REGION_INDEX["RV blood"]
    if not ventricle:
        return
    myo = ~lv_outside
    reg[myo] = REGION_INDEX["LV myocardium"]
    inf = a["infarct"]
    if inf is not None:
        dth = np.abs(np.angle(np.exp(1j * (th - inf["angle"]))))
        z0, z1 = inf["z"]
        if inf["edema"] and z0 - 8.0 <= z <= z1 + 8.0:
            reg[myo & (dth < inf["half_width"] + inf["edema_margin"])] = REGION_INDEX["edema"]
        if z0 <= z <= z1:
            depth = (r - r_endo) / np.maximum(r_epi - r_endo, 1e-3)      # 0 endocardium -> 1 epicardium
            reg[myo & (dth < inf["half_width"]) & (depth < inf["transmurality"])] = REGION_INDEX["infarct"]
    if endo > 0:
        cavity = r < r_endo
        reg[cavity] = REGION_INDEX["LV blood"]
        if 0.3 * L <= z <= 0.75 * L:
            for ang in a["pap_angles"]:
                rad = endo - 0.8 * a["pap_r"]
                px, py = rad * np.cos(ang), rad * np.sin(ang)
                reg[cavity & ((x - px) ** 2 + (y - py) ** 2 < a["pap_r"] ** 2)] = REGION_INDEX["papillary muscle"]


HEART_BOX_MM = 80.0   # half-size of the square around the LV axis that can hold any heart structure


def render_slices(a: dict, grid: dict, signals: dict, sub_slice_mm: float, track) -> tuple:
    """Noise-free signal, label classes (majority of the sub-samples) and tracked volume fractions per voxel,
    each slice integrated over sub-slices and in-plane sub-samples (smooth partial volume)."""
    n, k, dz, x, y, box = grid["n"], grid["k"], grid["dz"], grid["x"], grid["y"], grid["box"]
    nz = len(grid["z"])
    n_sub = max(2, int(np.ceil(dz / sub_slice_mm)))
    offsets = ((np.arange(n_sub) + 0.5) / n_sub - 0.5) * dz
    xb, yb = x[box], y[box]
    signal_lut = np.array(list(signals.values()), dtype=np.float32)[REGION_TISSUE]
    class_lut = REGION_CLASS.astype(np.int64)
    pixel = (np.arange(n)[:, None, None, None] * n + np.arange(n)[None, None, :, None]).repeat(k, 1).repeat(k, 3)
    pixel = pixel.reshape(n * k, n * k) * 4                        # sub-sample -> 4 * its voxel index
    signal = np.zeros((n, n, nz), dtype=np.float32)
    label = np.zeros((n, n, nz), dtype=np.uint8)
    fractions = {name: np.zeros((n, n, nz), dtype=np.float32) for name in track}
    for iz, zc in enumerate(grid["z"]):
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
                frac[:, :, iz] += (reg == REGION_INDEX[name]).reshape(n, k, n, k).mean(axis=(1, 3)) / n_sub
        signal[:, :, iz] = acc.reshape(n, k, n, k).sum(axis=(1, 3)) / (k * k * n_sub)
        label[:, :, iz] = votes.reshape(n, n, 4).argmax(axis=2)
    return signal, label, fractions

"""Which patients do what in a run: training, validation, test, and the style pool.

LGE labels are only ever used for validation and test; styles are unlabelled images.
"""
from __future__ import annotations

from cmr_lib.core.errors import CmrError
from cmr_lib.core.sections import SegmenterConfig
from cmr_lib.data.sources import CMRSource, open_source


def challenge_split(source: CMRSource) -> bool:
    """Whether the MS-CMRSeg challenge's own split applies: its real release (labelled LGE 1-5 reported, LGE 6-45
    the test whose labels were withheld), not the phantom written in its layout."""
    return source.layout == "mscmrseg" and source.name != "phantom"


def default_split(source: CMRSource, hold_out: int = 0) -> dict[str, list[int]]:
    """Patients per role, by data source (LGE labels are only ever used for validation and test).

    train: labelled bSSFP (C0) for segmentation training; select: labelled bSSFP of patients the DRU-Net does
    not train on, whose Dice picks its checkpoint (`hold_out` > 0: the profile's segmenter.select 'source');
    val / test: LGE with labels (test labels may be withheld); style: patients whose LGE/T2 images may serve as
    unlabelled styles.
    - MS-CMRSeg 2019 (the paper's split): train C0 1-35, or 1-(35 - hold_out) with the last `hold_out` held
      out for selection; val LGE 1-5, test LGE 6-45; every LGE image but those of 1-5 (the patients the tables
      report) is an unlabelled style (the challenge released all LGE images, and setting 3 needs the training
      patients' own LGE; patients 1-5 then take a random one).
    - MyoPS 2020: the last 25 % of patients are test and appear in no training step (not even as styles);
      the 3 before them are validation (their C0 selects, with `hold_out`); the rest train.
    - The phantom: 25 / 5 / 15 of 45 (scaled to its size); test patients appear in no training step; the
      validation patients' C0 selects, with `hold_out`.
    """
    c0 = source.patients_with("C0", labelled=True)
    lge = source.patients_with("LGE")
    if not c0:
        example = ("patient{N}_C0.nii.gz with patient{N}_C0_manual.nii.gz" if source.layout == "mscmrseg"
                   else "myops_training_{N}_C0.nii.gz with myops_training_{N}_gd.nii.gz")
        raise CmrError(f"{source.root}: no labelled bSSFP (C0) volumes to train on (expected {example})")
    if challenge_split(source):
        val = [p for p in source.patients_with("LGE", labelled=True) if p <= 5] or \
            source.patients_with("LGE", labelled=True)[:5]
        test = [p for p in lge if p not in val]
        if hold_out >= len(c0):
            raise CmrError(f"{source.root}: holding out {hold_out} of {len(c0)} labelled bSSFP patients for "
                           f"checkpoint selection leaves none to train on (segmenter.select_patients)")
        select = c0[len(c0) - hold_out:] if hold_out else []
        style = [p for p in lge if p not in val]             # the reported patients' images serve no stylizer
        return {"train": c0[:len(c0) - hold_out], "select": select, "val": val, "test": test, "style": style}
    patients = sorted(set(c0) & set(lge)) or c0
    n = len(patients)
    n_test = max(1, round(n / 3)) if source.name == "phantom" else max(1, round(n / 4))
    n_val = max(1, round(n / 9)) if source.name == "phantom" else min(3, max(1, n - n_test - 1))
    if n < 3:
        raise CmrError(f"{source.root}: {n} patients with labelled C0 and LGE; need at least 3 to split")
    train, val, test = patients[: n - n_test - n_val], patients[n - n_test - n_val: n - n_test], patients[n - n_test:]
    select = [p for p in val if source.has_label(p, "C0")] if hold_out else []
    return {"train": train, "select": select, "val": val, "test": test, "style": train + val}


def run_split(source: CMRSource, given, segmenter: SegmenterConfig) -> dict[str, list[int]]:
    """The split of a run: its given roles (a Config's `split`), with bSSFP patients held out for checkpoint
    selection when the segmenter selects on the source domain (segmenter.select 'source')."""
    sg = segmenter
    return split_for(source, given, hold_out=sg.select_patients if sg.select == "source" else 0)


def split_for(source: CMRSource, given=None, *, hold_out: int = 0) -> dict[str, list[int]]:
    """The run's split: `default_split(source, hold_out)` with the roles in `given` ({'train'|'val'|'test': [...]})
    replaced, checked against the data (training needs labelled C0, validation labelled LGE, test LGE).

    Test patients never enter training, validation or the style pool, except in the MS-CMRSeg layout,
    where the paper's protocol trains on C0 of patients whose (unlabelled) LGE is also the test set. Selection
    patients never train.
    """
    split = default_split(source, hold_out)
    given = dict(given or {})
    if not given:
        return split
    need = {"train": ("C0", True), "val": ("LGE", True), "test": ("LGE", False)}
    for role, patients in given.items():
        seq, labelled = need[role]
        have = set(source.patients_with(seq, labelled=labelled))
        missing = [p for p in patients if p not in have]
        if missing:
            what = f"labelled {seq}" if labelled else f"{seq} image"
            raise CmrError(f"parameter '{role}_patients' = {list(patients)}: patients {missing} have no {what} "
                           f"in {source.root}")
        split[role] = list(patients)
    paper_protocol = challenge_split(source)
    test = set(split["test"])
    clashes = [("val", set(split["val"]) & test)] + ([] if paper_protocol else [("train", set(split["train"]) & test)])
    for role, both in clashes:
        if both:
            raise CmrError(f"parameter 'test_patients': patients {sorted(both)} are also {role} patients")
    if not paper_protocol:
        split["style"] = sorted((set(split["train"]) | set(split["val"])) & set(source.patients_with("LGE")))
    split["select"] = [p for p in split["select"] if p not in split["train"]]
    if hold_out and not split["select"]:
        raise CmrError("parameter 'train_patients': it leaves no held-out labelled bSSFP patient to select the "
                       "checkpoint on (segmenter.select 'source'); train on fewer, or select on 'target' or 'last'")
    return split


def style_source_for(source: CMRSource, sequence: str, *, t2_dir=None) -> CMRSource:
    """Where a run's `sequence` style images come from: the data set itself, or `t2_dir` for T2 (the cropped
    MS-CMRSeg copy has no T2: setting 1 then takes T2 from MyoPS 2020)."""
    if source.patients_with(sequence):
        return source
    t2_dir = t2_dir if sequence == "T2" else None
    if t2_dir:
        other = open_source(t2_dir)
        if other.patients_with("T2"):
            return other
        raise CmrError(f"{other.root}: parameter 't2_dir' has no T2 images")
    raise CmrError(f"{source.root}: has no {sequence} images; pass t2_dir (a MyoPS 2020 folder) for T2 styles")


def external_split(source: CMRSource) -> dict[str, list[int]]:
    """The roles of a data set used beside a run's own (MyoPS for T2 styles and as a second test set): the first
    half of its patients (rounded up) may serve as styles and are the tuning set (scores looked at to choose a
    setting); the second half is only ever scored, so no patient whose images served a run is reported as a test.
    'val' (the last three of the first half) gives the stylizer reports their style slices. MyoPS 2020's 20
    training cases: 101-110 style and tuning, 111-120 test. The real MS-CMRSeg release keeps the challenge's roles
    (default_split): its labelled LGE 1-5 are the test, the unlabelled LGE may serve as styles, nothing tunes."""
    if challenge_split(source):
        own = default_split(source)
        return {"style": own["style"], "tune": [], "val": own["style"][-3:], "test": own["val"]}
    patients = sorted(set(source.patients))
    half = (len(patients) + 1) // 2
    first = patients[:half]
    return {"style": first, "tune": first, "val": first[-3:], "test": patients[half:]}


def style_split(source: CMRSource, split: dict, sequence: str, *, t2_dir=None) -> tuple[CMRSource, dict]:
    """Where a run's `sequence` styles come from and that source's split: the run's own, or the other
    source's external split (T2 from `t2_dir`: its style half, never its test half)."""
    style_src = style_source_for(source, sequence, t2_dir=t2_dir)
    return style_src, (split if style_src is source else external_split(style_src))


def style_pool(source: CMRSource, split: dict, sequence: str, *, t2_dir=None) -> tuple[CMRSource, list[int]]:
    """The style images of a run, chosen here only: (their source, the patients whose `sequence` volume may
    serve as an unlabelled style)."""
    style_src, pool_split = style_split(source, split, sequence, t2_dir=t2_dir)
    return style_src, [p for p in pool_split["style"] if style_src.has(p, sequence)]

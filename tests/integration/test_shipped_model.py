"""Issue 36: the shipped DRU-Net (models/drunet-lge) segments real LGE with `cmr-predict`'s default model: its
weights load with weights_only=True, its card names the protocol, and its Dice on a shared LGE volume is that of a
working network (the card's own test scores are on LGE 1-5 and MyoPS 111-120)."""
import json

import numpy as np
import torch

from cmr_lib.core.paths import repo_root
from cmr_lib.data.nifti import read_label
from cmr_lib.data.sources import open_source
from cmr_lib.evaluation.metrics import evaluate_volume
from cmr_lib.study.predict import DEFAULT_MODEL, predict_files, resolve_model

MODEL = repo_root() / "models" / DEFAULT_MODEL


def test_the_shipped_model_loads_safely_and_has_a_card_that_names_its_protocol():
    state = torch.load(MODEL / "model.pt", map_location="cpu", weights_only=True)
    assert set(state["config"]) >= {"crop", "preprocess", "segmenter", "shipped_from"}
    card = json.loads((MODEL / "card.json").read_text())
    assert card["selection"].startswith("source") and card["candidates"] >= 16
    assert set(card["scores"]) == {"tuning: MyoPS 101-110", "test: MS-CMRSeg LGE 1-5", "test: MyoPS 111-120"}
    readme = (repo_root() / "models" / "README.md").read_text()
    assert "not for clinical use" in readme and f"{card['scores']['test: MyoPS 111-120']['dice']['AVG']:.3f}" in readme
    assert (MODEL / "model.pt").stat().st_size < 10e6 and resolve_model(None) == MODEL / "model.pt"


def test_the_shipped_model_segments_a_shared_lge_volume(mscmrseg_dir, tmp_path):
    src = open_source(mscmrseg_dir, c0_spacing="lge")
    image = src.image_path(2, "LGE")
    written = predict_files([image], tmp_path / "out", progress=False)
    assert [p.name for p in written] == [image.name]
    pred, _, _ = read_label(written[0])
    truth = src.load(2, "LGE", label="require")
    scores = evaluate_volume(np.asarray(pred), truth.label, truth.spacing)
    dice = {k: v["dice"] for k, v in scores.items()}
    assert min(dice.values()) > 0.4 and np.mean(list(dice.values())) > 0.55, dice

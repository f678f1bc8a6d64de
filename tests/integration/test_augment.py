"""One rule for what a network trains on: the figures (notebook 05's training images, Fig. 8's histograms)
rebuild a run's batches from its record and must show exactly the images its DRU-Net was given."""
import pytest
import torch
from conftest import run_row

from cmr_lib.study.rebuild import run_training_examples
from cmr_lib.training import segmenters

CASES = [(1, "rain", 0), (1, "rain", 2), (3, "rain", 1), (2, "adaconv", 0), (2, "histmatch", 0), (0, "intensity", 0),
         (0, "gin", 0), (0, "slaug", 0), (3, "rain+intensity", 1), (3, "rain+slaug", 1), (0, "none", 0)]


@pytest.fixture(scope="module")
def shared_out(tmp_path_factory):
    return tmp_path_factory.mktemp("augment_runs")        # the stylizers are trained once for every case


@pytest.mark.parametrize("setting, stylizer, eps", CASES)
def test_the_figure_shows_exactly_what_the_network_trained_on(tiny_phantom, shared_out, optimiser_spy,
                                                               setting, stylizer, eps):
    seen, _ = optimiser_spy
    cfg, src, run = run_row(tiny_phantom, shared_out, setting, stylizer, eps)
    assert run.segmenter.info["reused"] is False and len(seen) == cfg.sizes.segmenter.iterations
    rec = run.record
    assert rec["stylizer"] == stylizer and rec["baseline"] == (stylizer.split("+")[-1] if cfg.baseline else None)
    assert rec["run_name"].startswith(f"smoke_phantom_setting{setting}_{stylizer}")
    assert rec["include_original"] is (stylizer != "none") and (run.stylizer is not None) == bool(cfg.network)
    batch = cfg.sizes.segmenter.batch
    mining = cfg.network == "rain" and eps > 0
    if mining or cfg.baseline == "slaug":    # the images depend on the network as it was at step 0: the seeded one
        torch.manual_seed(cfg.seed)
        ex = run_training_examples(run.record, src, steps=(0,), output_root=shared_out,
                                   segmenter=segmenters.build_segmenter(cfg.sizes.segmenter))
        steps = [0]
    else:
        steps = [0, 3]
        ex = run_training_examples(run.record, src, steps=steps, output_root=shared_out)
    k = 2 if cfg.baseline == "slaug" else 1                         # SLAug: the GLA and the fused images
    trained_on = torch.cat([seen[s][:k * batch] for s in steps])
    assert ex.stylized.shape == trained_on.shape
    assert torch.equal(ex.stylized, trained_on), float((ex.stylized - trained_on).abs().max())
    assert (ex.style is None) == (stylizer in ("intensity", "gin", "slaug", "none"))
    if stylizer == "none":
        assert torch.equal(ex.stylized, ex.content) and seen[0].shape[0] == batch       # bSSFP as it is
    else:
        assert not torch.allclose(ex.stylized, ex.content, atol=1e-3) and seen[0].shape[0] == (k + 1) * batch
        assert torch.equal(seen[0][k * batch:], ex.content[:batch])                  # and the original batch
    if stylizer == "histmatch":
        for i in range(len(ex.stylized)):
            assert torch.allclose(ex.stylized[i].flatten().sort().values, ex.style[i].flatten().sort().values)
    if mining:       # rebuilt again: the same images, nothing in the search is left to chance
        torch.manual_seed(cfg.seed + 1)
        other = segmenters.build_segmenter(cfg.sizes.segmenter)                    # another network: the search finds other styles
        moved = run_training_examples(run.record, src, steps=(0,), output_root=shared_out, segmenter=other)
        assert not torch.equal(moved.stylized, ex.stylized)

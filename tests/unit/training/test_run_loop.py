"""training.checkpoints.run_loop resumes a run whose code now logs one more loss (issue 34's critic): the earlier
steps read NaN for it, the later ones its value, and the losses file has one row per step."""
import math

import pytest
import torch

from cmr_lib.training.checkpoints import run_loop


def test_a_resumed_run_that_logs_a_new_loss_keeps_one_row_per_step(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step_fn(step):
        loss = model(torch.ones(1, 2)).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"total": loss, "critic": loss * 2}

    common = dict(config={"x": 1}, model=model, optimizer=opt, step_fn=step_fn, iterations=4, checkpoint_every=1,
                  desc="t", progress=False)
    with pytest.raises(KeyboardInterrupt):                                  # the older code (no critic), killed
        run_loop(tmp_path, keys=("total",), stop_after=2, **common)
    history, _ = run_loop(tmp_path, keys=("total", "critic"), stop_after=None, **common)
    assert history["step"] == [0, 1, 2, 3] and len(history["critic"]) == 4
    assert all(math.isnan(v) for v in history["critic"][:2]) and not any(math.isnan(v) for v in history["critic"][2:])
    assert len((tmp_path / "losses.csv").read_text().splitlines()) == 1 + 4

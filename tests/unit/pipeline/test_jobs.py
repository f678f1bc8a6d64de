"""How many notebooks `make reproduce` runs side by side when JOBS is not given (issue 38): two on a CPU machine,
plan.ROWS_PER_GPU per GPU with GPUS; a JOBS given always wins."""
import pytest

from cmr_lib.core.errors import CmrError
from cmr_lib.pipeline.plan import ROWS_PER_GPU, default_jobs
from cmr_lib.pipeline.reproduce import parse_args


def test_rows_per_gpu_by_default_and_jobs_wins():
    assert default_jobs(None) == default_jobs([]) == 2
    assert default_jobs(["0", "1", "2", "3"]) == 4 * ROWS_PER_GPU and ROWS_PER_GPU >= 1
    args, kw = parse_args(["--profile", "smoke", "--gpus", "0,1"])
    assert kw["jobs"] is None and kw["gpus"] == ["0", "1"]           # make_plan fills it from the GPUs
    assert parse_args(["--profile", "smoke", "--gpus", "0,1", "--jobs", "3"])[1]["jobs"] == 3


def test_a_bad_jobs_is_a_one_line_error(tmp_path):
    from cmr_lib.pipeline.plan import make_plan
    with pytest.raises(CmrError, match="parameter 'jobs' = 0"):
        make_plan("smoke", jobs=0, steps_list=[], output_root=tmp_path)

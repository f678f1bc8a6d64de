"""Safe to load and safe to point at (issue 6): no unpickling of user files, no eval/exec, and a run
writes only under its output folder."""
import ast
from pathlib import Path

import pytest

from cmr_lib.core.config import make_config
from cmr_lib.core.paths import repo_root

SOURCES = sorted([*(repo_root() / "cmr_lib").rglob("*.py"), *(repo_root() / "notebooks").glob("*.py"),
                  *(repo_root() / "benchmarks").glob("*.py")])


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            yield node, owner, name


@pytest.mark.parametrize("path", SOURCES, ids=[p.name for p in SOURCES])
def test_no_unsafe_loading_or_evaluation(path):
    for node, owner, name in _calls(path):
        where = f"{path.name}:{node.lineno}"
        if (owner, name) == ("torch", "load"):
            kw = {k.arg: k.value for k in node.keywords}
            assert isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True, where
        assert not (owner == "pickle" and name in ("load", "loads")), where
        assert not (isinstance(node.func, ast.Name) and name in ("eval", "exec")), where
        assert not (owner == "yaml" and name in ("load", "unsafe_load", "full_load")), where


def test_a_run_writes_only_under_its_output_folder(tiny_phantom, tmp_path):
    from cmr_lib.study.runs import run_setting

    def snapshot():
        out = {}
        for sub in ("results", "figures", "checkpoints", "data"):
            for p in (repo_root() / sub).rglob("*"):
                if p.is_file():
                    out[p] = p.stat().st_mtime_ns
        return out

    before = snapshot()
    run = run_setting(make_config(profile="smoke", setting=0, stylizer="intensity", data_dir=tiny_phantom,
                                  output_root=tmp_path / "out"), progress=False)
    assert snapshot() == before
    assert Path(run.run_dir).resolve().is_relative_to((tmp_path / "out").resolve())
    assert Path(run.segmenter.run_dir).resolve().is_relative_to((tmp_path / "out").resolve())

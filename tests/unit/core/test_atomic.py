import json
import os
import stat

import numpy as np
import pytest

from cmr_lib.core.atomic import atomic_path, write_json, write_text
from cmr_lib.core.errors import CmrError


def test_files_get_normal_permissions(tmp_path):
    path = write_text(tmp_path / "t.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_json_is_strict_and_accepts_numpy(tmp_path):
    path = write_json(tmp_path / "r.json", {"a": float("nan"), "b": float("inf"), "c": np.float32(0.5),
                                            "d": np.arange(3), 4: np.int64(7)})
    assert json.loads(path.read_text()) == {"a": None, "b": None, "c": 0.5, "d": [0, 1, 2], "4": 7}


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = write_text(tmp_path / "keep.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_read_only_folder_is_a_clear_error(tmp_path, monkeypatch):
    """A folder we may not write to (simulated: tests often run as root, who may write anywhere)."""
    import tempfile

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(CmrError, match=r"ro: cannot write here \(Permission denied\)"):
        write_text(tmp_path / "ro" / "x.txt", "x")

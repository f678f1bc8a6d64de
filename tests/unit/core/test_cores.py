"""Training runs started by hand side by side are told when they ask for more threads than there are cores."""
import os
import subprocess
import sys

import torch

from cmr_lib.core import device


def test_oversubscription_is_reported_once_per_training_and_dead_entries_go(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("CMR_DEVICE", "cpu")
    assert device.check_cores(tmp_path) == 1                       # alone: nothing to say
    assert "cmr:" not in capsys.readouterr().out
    threads = torch.get_num_threads()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / str(other.pid)).write_text(str(os.cpu_count()))     # another run that took every core
        (tmp_path / "999999999").write_text("4")                          # a run that died
        assert device.check_cores(tmp_path) == 2
        out = capsys.readouterr().out
        assert (f"2 cmr-stylize processes are training at once with {threads + os.cpu_count()} threads on "
                f"{os.cpu_count()} cores") in out and f"OMP_NUM_THREADS={max(1, os.cpu_count() // 2)}" in out
        assert not (tmp_path / "999999999").exists()
        assert torch.get_num_threads() == threads                    # the thread count itself is left alone
    finally:
        other.kill()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")                       # the driver's notebooks: never checked
    assert device.check_cores(tmp_path) == 0

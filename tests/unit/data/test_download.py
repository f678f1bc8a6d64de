"""The real-data download, offline: the shared sample sets serve as its mirror (and, through file:// URLs,
as its web server), and every file must match the manifest's SHA-256."""
import os

import pytest

from cmr_lib.core.errors import CmrError
from cmr_lib.data.download import download, load_manifest, main, url_of
from cmr_lib.data.sources import find_real_data, open_source

REAL = find_real_data()
needs_real = pytest.mark.skipif(len(REAL) < 2, reason="the real sample sets are not beside this checkout")


MYOPS_COMMIT = "d8ebea465b67bb1623ea05e13c4e78c290101d40"       # the MyoPS files are pinned too

def test_the_manifest_lists_both_sets_as_the_data_readme_says():
    entries = load_manifest()
    sets = {e.dest.split("/")[0] for e in entries}
    assert sets == {"mscmrseg2019", "myops2020"} and len(entries) == 35 * 2 + 45 + 5 + 20 * 4
    labels = [e.dest for e in entries if "LGE_manual" in e.dest]
    assert sorted(labels) == sorted(f"mscmrseg2019/patient{n}_LGE_manual.nii.gz" for n in range(1, 6))
    e = next(e for e in entries if e.dest == "myops2020/myops_training_101_DE.nii.gz")
    assert (e.repository, e.path) == ("Tengjia-Kang/MyoPS", "datasets/Competition_Dataset/Train/Case3001/Case3001_LGE.nii.gz")
    assert url_of(e).startswith(f"https://raw.githubusercontent.com/Tengjia-Kang/MyoPS/{MYOPS_COMMIT}/datasets/")
    lge = next(e for e in entries if e.dest == "mscmrseg2019/patient6_LGE.nii.gz")
    assert url_of(lge) == ("https://raw.githubusercontent.com/FupingWu90/VarDA/440f749db2dd83a1728cc66c5c5a2db2879fe99d/"
                           "Dataset/Patch192/LGE/patient6_LGE.nii.gz")                  # pinned: upstream cannot move it
    assert all(len(e.ref) == 40 for e in entries)                  # every file at a commit: none on a moving branch


def test_a_manifest_line_with_a_bad_commit_is_refused(tmp_path):
    from cmr_lib.core.errors import CmrError
    bad = tmp_path / "m.tsv"
    bad.write_text(f"dest\trepository\tpath\tsha256\tcommit\nmyops2020/a.nii.gz\to/r\ta.nii.gz\t{'0' * 64}\tmain\n")
    with pytest.raises(CmrError, match="line 2 .* a 40-hex commit or none"):
        load_manifest(bad)


@needs_real
def test_a_mirror_lays_out_readable_sets_and_a_second_run_keeps_them(tmp_path):
    mirror = REAL["mscmrseg"].parent
    assert download(tmp_path, mirror=mirror, progress=False) == {"fetched": 200, "kept": 0}
    src = open_source(tmp_path / "mscmrseg2019")
    assert len(src.patients_with("C0", labelled=True)) == 35 and len(src.patients_with("LGE")) == 45
    assert len(open_source(tmp_path / "myops2020").patients_with("LGE", labelled=True)) == 20
    stamp = os.stat(tmp_path / "myops2020" / "myops_training_101_T2.nii.gz").st_mtime_ns
    assert download(tmp_path, mirror=mirror, progress=False) == {"fetched": 0, "kept": 200}
    assert os.stat(tmp_path / "myops2020" / "myops_training_101_T2.nii.gz").st_mtime_ns == stamp


@needs_real
def test_a_changed_file_is_refused_and_nothing_is_written_for_it(tmp_path):
    mirror = tmp_path / "mirror" / "myops2020"
    mirror.mkdir(parents=True)
    for e in load_manifest():
        if e.dest.startswith("myops2020/"):
            os.symlink(REAL["myops"] / e.dest.split("/")[1], tmp_path / "mirror" / e.dest)
    bad = mirror / "myops_training_105_gd.nii.gz"
    bad.unlink()
    bad.write_bytes(b"not the file")
    with pytest.raises(CmrError, match=r"myops_training_105_gd.nii.gz: SHA-256 .* is not the manifest's"):
        download(tmp_path / "out", mirror=tmp_path / "mirror", only=("myops2020",), progress=False)
    assert not (tmp_path / "out" / "myops2020" / "myops_training_105_gd.nii.gz").exists()
    assert not [p for p in (tmp_path / "out" / "myops2020").iterdir() if p.name.startswith(".")]   # no temp left


@needs_real
def test_the_online_path_fetches_urls_and_checks_them(tmp_path):
    """The same code fetches from a web server; here a file:// tree laid out as <repository>/<commit>/<path>."""
    server = tmp_path / "server"
    for e in load_manifest():
        if e.dest.startswith("myops2020/"):
            f = server / e.repository / e.ref / e.path
            f.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(REAL["myops"] / e.dest.split("/")[1], f)
    got = download(tmp_path / "out", base_url=server.as_uri(), only=("myops2020",), progress=False)
    assert got == {"fetched": 80, "kept": 0}
    (server / "Tengjia-Kang/MyoPS" / MYOPS_COMMIT / "datasets/Competition_Dataset/Train/Case3002/Case3002_T2.nii.gz"
     ).unlink()
    (tmp_path / "out" / "myops2020" / "myops_training_102_T2.nii.gz").unlink()
    with pytest.raises(CmrError, match="Case3002_T2.nii.gz: could not be fetched"):
        download(tmp_path / "out", base_url=server.as_uri(), only=("myops2020",), progress=False)


def test_the_command_line_says_one_line(tmp_path, capsys):
    assert main([str(tmp_path), "--mirror", str(tmp_path / "nowhere"), "--only", "myops2020"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'nowhere'}: mirror folder not found"]

"""Issue 37: the run record is a typed, versioned value (core.records.RunRecord), and every identity (stylizer and
segmenter runs, autoencoders, make reproduce's steps) is hashed by one function (core.digests.fingerprint)."""
import json

import pytest

from cmr_lib.core.digests import fingerprint
from cmr_lib.core.errors import CmrError
from cmr_lib.core.records import RECORD_VERSION, RunRecord

OLD = {"run_name": "demo_phantom_setting0_none_seed0", "profile": "demo", "setting": 0, "stylizer": "none", "seed": 0,
       "data": {"root": "data/phantom"}, "summary": {"test": {}}, "metrics": {"test": []}, "config": {},
       "segmenter": {"best_step": 250}}


def test_a_record_round_trips_and_reads_as_attributes_and_as_a_mapping(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(OLD))                           # written before records had a version
    rec = RunRecord.read(path)
    assert rec.record_version == 1 and rec.inputs is None and rec.seed == rec["seed"] == 0
    assert rec["_path"] == str(path) and rec.get("encoder") is None and "summary" in rec
    rec.write(tmp_path / "again.json")
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["record_version"] == 1 and RunRecord.read(tmp_path / "again.json") == rec
    assert RunRecord.from_dict({**OLD, "record_version": RECORD_VERSION}, "x").record_version == RECORD_VERSION
    nan = RunRecord.from_dict({**OLD, "metrics": {"test": [{"hd": float("nan")}]}}, tmp_path / "nan.json")
    nan.write(tmp_path / "nan.json")                          # as written: NaN -> null, and equal to its file
    assert nan.metrics["test"][0]["hd"] is None and RunRecord.read(tmp_path / "nan.json") == nan


@pytest.mark.parametrize("change, message", [
    ({"seed": None}, "run record key 'seed' = None has the wrong type"),
    ({"setting": "1"}, "run record key 'setting' = '1' has the wrong type"),
    ({"epochs": 3}, "unknown key 'epochs'"),
    ({"record_version": RECORD_VERSION + 1}, "is newer than this code reads"),
    ({"summary": ...}, "lacks summary"),
])
def test_a_wrong_record_is_a_one_line_error_naming_the_file(tmp_path, change, message):
    raw = {k: v for k, v in {**OLD, **change}.items() if v is not ...}
    (tmp_path / "run.json").write_text(json.dumps(raw))
    with pytest.raises(CmrError, match=message) as err:
        RunRecord.read(tmp_path / "run.json")
    assert str(err.value).startswith(str(tmp_path / "run.json")) and "\n" not in str(err.value)


def test_one_fingerprint_function_keeps_the_identities_already_on_disk():
    """The checkpoint folders and step ledgers written before it keep their names: a config's key is the first 10
    hex digits of the SHA-256 of its sorted JSON, and a step's is the hash of parameters, notebook bytes and inputs."""
    import hashlib
    config = {"b": [1, 2.5], "a": {"z": None, "y": "x"}}
    text = json.dumps(config, sort_keys=True, default=str).encode()
    assert fingerprint(config, length=10) == hashlib.sha256(text).hexdigest()[:10]
    assert fingerprint(config, b"nb", {"k": 1}) == hashlib.sha256(
        text + b"nb" + json.dumps({"k": 1}, sort_keys=True).encode()).hexdigest()[:16]
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1}) != fingerprint({"a": 1, "b": 3})

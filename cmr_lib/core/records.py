"""A run's record (results/runs/<run>/run.json) as a typed, versioned value: written by study.runs, read by the
report and by cmr-predict. Fields read by name (`record.seed`) or as a mapping (`record["seed"]`, for the readers
that also take plain dicts); reading checks the keys and types once, with a one-line error naming the file."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cmr_lib.core.atomic import json_plain, read_json, write_json
from cmr_lib.core.errors import CmrError

# 1: records written before the version was (no `record_version` key); 2: this layout, which 1 already had
RECORD_VERSION = 2
_PATH_KEY = "_path"      # mapping access to where a record was read from (not written)


@dataclass(frozen=True)
class RunRecord(Mapping):
    """run.json: what a run is (its configuration, data and split), how its networks were trained and chosen, and
    its scores per part ('test', 'val') with and without the largest-component post-processing."""

    run_name: str
    profile: str
    setting: int
    stylizer: str
    seed: int
    data: dict                       # source, root, layout and split
    summary: dict                    # part -> metric -> structure -> mean (report.tables.table2_summary)
    metrics: dict                    # part -> one row per (case, structure)
    config: dict = dataclasses.field(default_factory=dict)      # core.config.Config.to_dict() of the run
    epsilon_iterations: int = 0
    include_original: bool | None = None
    inputs: dict | None = None       # what the record is made of (study.runs.run_inputs); None: older records
    setting_name: str | None = None
    baseline: str | None = None
    git: dict | None = None
    versions: dict | None = None
    encoder: dict | None = None
    stylizer_run: dict | None = None
    segmenter: dict = dataclasses.field(default_factory=dict)   # checkpoint, selection, best step, history
    timings_seconds: dict | None = None
    torch_threads: int | None = None
    torch_threads_scoring: int | None = None
    data_files: dict | None = None
    test_patients_labelled: list | None = None
    test_patients_unlabelled: list | None = None
    predictions: str | None = None
    predictions_val: str | None = None
    metrics_largest_component: dict | None = None
    summary_largest_component: dict | None = None
    record_version: int = RECORD_VERSION
    path: str | None = dataclasses.field(default=None, compare=False)   # where it was read from; not written

    # ---- mapping access, for readers that take a record or a plain dict
    def __getitem__(self, key):
        if key == _PATH_KEY and self.path is not None:
            return self.path
        if key not in _WRITTEN:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(_WRITTEN + ((_PATH_KEY,) if self.path is not None else ()))

    def __len__(self):
        return len(_WRITTEN) + (self.path is not None)

    def to_dict(self) -> dict:
        """The record as written to run.json."""
        return {k: getattr(self, k) for k in _WRITTEN}

    @classmethod
    def from_dict(cls, raw, where) -> RunRecord:
        """A record from run.json's content; a missing key, an unknown one or a wrong type is a one-line error."""
        if not isinstance(raw, Mapping):
            raise CmrError(f"{where}: not a run record (a JSON object is needed)")
        raw = json_plain(dict(raw))                       # as run.json holds it: a record equals its file read back
        raw.pop(_PATH_KEY, None)
        version = raw.setdefault("record_version", 1)
        if not isinstance(version, int) or version > RECORD_VERSION:
            raise CmrError(f"{where}: run record version {version!r} is newer than this code reads ({RECORD_VERSION})")
        missing = [k for k in _REQUIRED if k not in raw]
        if missing:
            raise CmrError(f"{where}: not a run record (lacks {', '.join(missing)})")
        unknown = sorted(set(raw) - set(_WRITTEN))
        if unknown:
            raise CmrError(f"{where}: not a run record of this version (unknown key {unknown[0]!r})")
        for key, kinds in _TYPES.items():
            if key in raw and not (isinstance(raw[key], kinds) and not isinstance(raw[key], bool)
                                   or raw[key] is None and key not in _REQUIRED):
                raise CmrError(f"{where}: run record key {key!r} = {raw[key]!r} has the wrong type")
        return cls(**raw, path=str(where))

    @classmethod
    def read(cls, path) -> RunRecord:
        """Read and check a run.json (a missing, truncated or wrong file is a one-line error naming it)."""
        return cls.from_dict(read_json(path, "run record"), Path(path))

    def write(self, path) -> Path:
        """Write run.json atomically (strict JSON: NaN becomes null)."""
        return write_json(path, self.to_dict())


_WRITTEN = tuple(f.name for f in dataclasses.fields(RunRecord) if f.name != "path")
_REQUIRED = tuple(f.name for f in dataclasses.fields(RunRecord)
                  if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
_TYPES = {"run_name": str, "profile": str, "setting": int, "stylizer": str, "seed": int, "data": dict,
          "summary": dict, "metrics": dict, "config": dict, "epsilon_iterations": int, "segmenter": dict}

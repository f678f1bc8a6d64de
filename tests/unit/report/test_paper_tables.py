"""params/paper_tables.yaml holds every number of the paper's Tables 2 and 3, as the paper's own text has them."""
import re

import pytest

from cmr_lib.core.paths import repo_root
from cmr_lib.report.paper import paper_tables

PAPER = repo_root().parent / "shared" / "paper"
STRUCTURES = ("MYO", "LV", "RV")
NAMES = {"None": ("none", 0), "AdaConv": ("adaconv", 0), "RAIN": ("rain", 5)}


def _numbers(line: str) -> list[float]:
    return [float(v) for v in re.findall(r"\d+\.\d+|\d+", line.replace("\\pm", " "))]


def _paper_text() -> list[str]:
    files = sorted(PAPER.glob("*.txt"))
    if not files:
        pytest.skip(f"{PAPER}: the paper's text is not beside this checkout")
    return files[0].read_text(encoding="utf-8").splitlines()


def _block(lines: list[str], caption: str, header: str) -> list[str]:
    """The data rows after `caption` and its column header line, up to the first blank line."""
    start = next(i for i, ln in enumerate(lines) if ln.startswith(caption))
    head = next(i for i in range(start, len(lines)) if lines[i].startswith(header))
    rows = []
    for ln in lines[head + 2:]:
        if not ln.strip():
            break
        rows.append(ln)
    return rows


def test_table2_is_the_papers():
    rows = _block(_paper_text(), "Tab. 2.", "Setting\tStylizer")
    ours = {(r["setting"], r["stylizer"], r.get("epsilon", 0)): r for r in paper_tables()["table2"]}
    assert len(rows) == len(ours) == 7
    for ln in rows:
        cells = ln.split("\t")
        setting, (stylizer, eps) = int(cells[0]), NAMES[cells[1]]
        nums = _numbers("\t".join(cells[2:]))
        row = ours[(setting, stylizer, eps)]
        want = [row[f"DC {s}"] for s in STRUCTURES] + [row["DC AVG"], row["DC STD"]] + \
            [row[f"HD {s}"] for s in STRUCTURES] + [row["HD AVG"], row["HD STD"]]
        assert nums == pytest.approx(want, abs=1e-9), ln


def test_table3_is_the_papers():
    rows = _block(_paper_text(), "Tab. 3.", "Epsilon iterations")
    ours = {r["epsilon"]: r for r in paper_tables()["table3"]}
    assert len(rows) == len(ours) == 3
    for ln in rows:
        nums = _numbers(ln)
        row = ours[int(nums[0])]
        assert (row["setting"], row["stylizer"]) == (1, "rain")
        want = [row[f"DC {s}"] for s in (*STRUCTURES, "AVG")] + [row[f"HD {s}"] for s in (*STRUCTURES, "AVG")]
        assert nums[1:] == pytest.approx(want, abs=1e-9), ln


def test_the_papers_averages_are_the_means_of_its_structures():
    """A typo in the transcription would most likely break this (the paper's own rounding aside)."""
    for table in ("table2", "table3"):
        for r in paper_tables()[table]:
            for m in ("DC", "HD"):
                mean = sum(r[f"{m} {s}"] for s in STRUCTURES) / 3
                assert r[f"{m} AVG"] == pytest.approx(mean, abs=0.002 if m == "DC" else 0.01), (table, r)

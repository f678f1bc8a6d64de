"""Every result a docs page quotes is in a file it cites (issue 35): each decimal number in a paragraph or bullet of
docs/findings.md must appear, as a number, in a file that the same paragraph or bullet links, or be a profile's
value (params/*.yaml, docs/parameters.md), or be one of the few goals named below. So a sentence cannot drift from its file."""
import re
from pathlib import Path

import pytest

from cmr_lib.core.paths import repo_root

DOCS = ["docs/findings.md"]
# numbers that are not results read off a file: goals set for the project, and facts of arithmetic
GOALS = {"0.75": "the MyoPS Dice the real profiles were asked to reach",
         "0.0625": "the smallest two-sided Wilcoxon p with 5 pairs, 2 / 2^5 (report.stats.min_attainable_p)"}
_DECIMAL = r"(?<![\w.])-?\d+\.\d+(?![\w.]*\d)"


def _numbers(text: str) -> set[str]:
    return {n.lstrip("-") for n in re.findall(_DECIMAL, text)}


def _blocks(text: str) -> list[str]:
    """Paragraphs and bullets (a bullet runs until the next bullet, blank line or heading)."""
    return [b for b in re.split(r"\n(?=- |\n|#)", text) if b.strip()]


def quoted_numbers_without_a_source(doc: Path) -> list[tuple[str, str]]:
    """(number, the start of its paragraph) for each decimal a paragraph quotes that no cited file holds."""
    values = [*(repo_root() / "params").glob("*.yaml"), repo_root() / "docs" / "parameters.md"]
    profiles = set().union(*(_numbers(p.read_text()) for p in values))
    missing = []
    for block in _blocks(doc.read_text()):
        if block.lstrip().startswith("#"):
            continue
        cited = set()
        for target in re.findall(r"\]\(([^)#\s]+)", block):
            path = (doc.parent / target).resolve()
            if path.is_file() and path.suffix in (".md", ".csv", ".json", ".txt", ".yaml"):
                cited |= _numbers(path.read_text(errors="ignore"))
        prose = re.sub(r"`[^`]*`", "", re.sub(r"\]\([^)]*\)", "]", block))
        for n in sorted(_numbers(prose)):
            if n not in cited and n not in profiles and n not in GOALS:
                missing.append((n, " ".join(block.split())[:90]))
    return missing


@pytest.mark.parametrize("doc", DOCS)
def test_every_number_a_page_quotes_is_in_a_file_it_cites(doc):
    assert quoted_numbers_without_a_source(repo_root() / doc) == []


def test_the_check_finds_a_number_that_drifted(tmp_path):
    (tmp_path / "t.md").write_text("| row | DC |\n|---|---|\n| RAIN | 0.632 |\n")
    page = tmp_path / "page.md"
    page.write_text("- RAIN reaches 0.632 ([t.md](t.md)).\n- RAIN reaches 0.641 ([t.md](t.md)).\n\n"
                    "A paragraph with 0.632 and no link.\n")
    assert [n for n, _ in quoted_numbers_without_a_source(page)] == ["0.641", "0.632"]

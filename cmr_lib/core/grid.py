"""The experiment grid (`params/experiments.yaml`): which rows Tables 2 and 3 have, which ones `make
reproduce` runs, and how a row is named. The driver, the analysis and the tests all read it here."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from cmr_lib.core.errors import CmrError
from cmr_lib.core.paths import repo_root
from cmr_lib.core.schema import SEARCHING, SETTINGS, STYLIZERS, load_yaml

STYLIZER_NAMES = {"none": "none", "rain": "RAIN", "adaconv": "AdaConv", "adaconv-vae": "AdaConv + VAE",
                  "histmatch": "histmatch",
                  "intensity": "intensity", "gin": "GIN", "slaug": "SLAug", "rain+intensity": "RAIN + intensity",
                  "adaconv+intensity": "AdaConv + intensity", "rain+slaug": "RAIN + SLAug"}
STYLE_TRANSFER = ("rain", "adaconv")                    # the stylizers alone
GROUPS = ("paper", "baseline", "beyond")


def uses_epsilon(stylizer: str) -> bool:
    """Whether a stylizer value runs a style search (RAIN or AdaConv + VAE, alone or followed by a remap), so
    that epsilon matters."""
    return stylizer.split("+")[0] in SEARCHING


@dataclass(frozen=True)
class Row:
    """One row of Table 2 or 3: (setting, stylizer, epsilon), its group, and whether reproduce runs it."""

    setting: int
    stylizer: str
    epsilon: int = 0
    group: str = "paper"
    reproduce: bool = True

    @property
    def key(self) -> tuple:
        return (self.setting, self.stylizer, self.epsilon)


def label(key: tuple) -> str:
    """A row's name in tables and figures: 'setting 0 (none)', 'setting 1, RAIN ε5', 'setting 0, GIN'."""
    s, k, e = key
    if (s, k) == (0, "none"):
        return "setting 0 (none)"
    return f"setting {s}, {STYLIZER_NAMES[k]}" + (f" ε{e}" if uses_epsilon(k) else "")


def row_key(record: dict) -> tuple:
    """(setting, stylizer, epsilon) of a run record (run.json): its row in Table 2 or 3."""
    eps = record.get("epsilon_iterations", 0) if uses_epsilon(record["stylizer"]) else 0
    return (int(record["setting"]), record["stylizer"], int(eps))


def _row(path, table, i, raw) -> Row:
    where = f"{path}: {table}[{i}]"
    if not isinstance(raw, dict) or not {"setting", "stylizer"} <= set(raw) or set(raw) - {
            "setting", "stylizer", "epsilon", "group", "reproduce"}:
        raise CmrError(f"{where}: a row has setting, stylizer and optionally epsilon, group, reproduce")
    if raw["setting"] not in SETTINGS or raw["stylizer"] not in STYLIZERS or raw.get("group", "paper") not in GROUPS:
        raise CmrError(f"{where}: unknown setting, stylizer or group ({raw})")
    eps = raw.get("epsilon", 0)
    if uses_epsilon(raw["stylizer"]) != ("epsilon" in raw) or isinstance(eps, bool) or not isinstance(eps, int) or eps < 0:
        raise CmrError(f"{where}: rows with a style search (RAIN, AdaConv + VAE), and only they, give epsilon "
                       f"(a non-negative integer)")
    return Row(raw["setting"], raw["stylizer"], eps, raw.get("group", "paper"), bool(raw.get("reproduce", True)))


@lru_cache(maxsize=4)
def load_grid(path=None) -> dict[str, tuple[Row, ...]]:
    """{'table2': rows, 'table3': rows} from the grid file, validated (a one-line error names the row)."""
    path = path or repo_root() / "params" / "experiments.yaml"
    raw = load_yaml(path)
    if not isinstance(raw, dict) or set(raw) != {"table2", "table3"}:
        raise CmrError(f"{path}: needs exactly the lists 'table2' and 'table3'")
    grid = {t: tuple(_row(path, t, i, r) for i, r in enumerate(raw[t] or [])) for t in ("table2", "table3")}
    for t, rows in grid.items():
        keys = [r.key for r in rows]
        if len(set(keys)) != len(keys):
            raise CmrError(f"{path}: {t} lists a row twice")
    return grid


def table_rows(table: str, group: str | None = None) -> list[tuple]:
    """The (setting, stylizer, epsilon) keys of 'table2' or 'table3', in the file's order (one group, if given)."""
    return [r.key for r in load_grid()[table] if group is None or r.group == group]


def reproduce_rows(beyond: bool = False) -> list[tuple]:
    """The rows `make reproduce` runs, in order: Table 2's marked rows, then Table 3's that are not among them;
    with `beyond`, the 'beyond' group's rows too (`make reproduce BEYOND=1`)."""
    out = []
    for table in ("table2", "table3"):
        out += [r.key for r in load_grid()[table] if (r.reproduce or (beyond and r.group == "beyond"))
                and r.key not in out]
    return out

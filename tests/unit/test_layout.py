"""The library's layout shows its architecture: sub-packages by job, imports one way only, at the top."""
import ast

from cmr_lib.core.paths import repo_root

# lowest first: a module may import its own layer and the layers below it, never one above
LAYERS = ["core", "data", "models", "evaluation", "training", "report", "study", "pipeline"]
LIB = repo_root() / "cmr_lib"
MODULES = sorted(p for p in LIB.rglob("*.py") if p.name != "__init__.py")


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else -1


def _imports(tree):
    """(module imported, node) for every `from cmr_lib... import` / `import cmr_lib...`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cmr_lib"):
            yield node.module, node
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("cmr_lib"):
                    yield a.name, node


def test_every_module_sits_in_a_layer():
    stray = [str(p.relative_to(LIB)) for p in MODULES if p.parent.name not in LAYERS]
    assert stray == [], f"modules outside the sub-packages {LAYERS}: {stray}"


def test_imports_only_go_down_the_layers():
    upward = []
    for path in MODULES:
        own = LAYERS.index(path.parent.name)
        for name, node in _imports(ast.parse(path.read_text())):
            if name == "cmr_lib" or _layer(name) > own:
                upward.append(f"{path.relative_to(LIB)}:{node.lineno} imports {name}")
    assert upward == [], "\n".join(upward)


def test_library_imports_sit_at_the_top_of_each_file():
    inside = []
    for path in MODULES:
        src = path.read_text().splitlines()
        tree = ast.parse("\n".join(src))
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                for name, node in _imports(fn):
                    line = src[node.lineno - 1] + (src[node.lineno - 2] if node.lineno > 1 else "")
                    if "#" not in line:           # allowed only with a comment that says why
                        inside.append(f"{path.relative_to(LIB)}:{node.lineno} imports {name} in a body")
    assert inside == [], "\n".join(inside)


def test_the_report_only_reads():
    """Issue 37: the report layer trains and infers nothing: it imports nothing from training/ (what must be
    computed from networks for a figure or a table lives in study.rebuild)."""
    found = [(str(p.relative_to(LIB)), name) for p in MODULES if p.parent.name == "report"
             for name, _ in _imports(ast.parse(p.read_text())) if name.startswith("cmr_lib.training")]
    assert found == []


def test_no_function_is_over_sixty_lines():
    """Issue 37: long functions are cut into their steps (cache check, train, predict, score, record)."""
    long = [(str(p.relative_to(LIB)), n.name, n.end_lineno - n.lineno + 1) for p in MODULES
            for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and n.end_lineno - n.lineno + 1 > 60]
    assert long == []


def test_no_module_is_a_grab_bag():
    long = {str(p.relative_to(LIB)): n for p in MODULES if (n := len(p.read_text().splitlines())) > 360}
    assert long == {}, f"split these by job: {long}"


def test_the_checks_can_fail(tmp_path):
    """The import check sees an upward import and an import in a function body."""
    bad = ast.parse("from cmr_lib.study.runs import run_setting\n\ndef f():\n    from cmr_lib.core import grid\n")
    found = [(name, node.lineno) for name, node in _imports(bad)]
    assert found == [("cmr_lib.study.runs", 1), ("cmr_lib.core", 4)]
    assert _layer("cmr_lib.study.runs") > LAYERS.index("core")


def test_every_import_of_the_library_resolves_also_inside_functions_and_benchmarks():
    """A renamed or removed function breaks no benchmark, notebook or test silently: every `from cmr_lib... import
    name` anywhere in the repository (function bodies included, where only running the code would find it) names
    something that exists."""
    import importlib.util
    import subprocess
    root = LIB.parent
    files = subprocess.run(["git", "ls-files", "*.py"], cwd=root, capture_output=True, text=True).stdout.split()
    missing = []
    for name in files:
        for node in ast.walk(ast.parse((root / name).read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cmr_lib"):
                module = importlib.import_module(node.module)
                missing += [f"{name}:{node.lineno} {node.module}.{a.name}" for a in node.names
                            if not hasattr(module, a.name) and importlib.util.find_spec(f"{node.module}.{a.name}") is None]
    assert missing == [], missing

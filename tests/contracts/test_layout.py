"""The package layout stays layered: imports point down only, with no cycles, and every documented
``python -m mrc.X`` command still starts."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Which packages each package may import (besides itself). Lower layers first; this is the map in
# mrc/__init__.py and in each subpackage's docstring.
ALLOWED = {
    "mrc.errors": set(),  # the one error line of every command: importable from every layer
    "heads": {"mrc.errors"},
    "mrc.data": {"mrc.errors"},
    "mrc.robustness": {"mrc.errors", "mrc.data"},
    "mrc.model": {"mrc.errors", "mrc.data", "heads"},  # the window geometry a checkpoint stores
    "mrc.eval": {"mrc.errors", "mrc.data", "mrc.model", "heads"},
    "mrc.train": {"mrc.errors", "mrc.data", "mrc.robustness", "mrc.model", "mrc.eval", "heads"},
    "mrc.pretrain": {"mrc.errors", "mrc.data", "mrc.model", "mrc.train"},
    "mrc.report": {"mrc.errors"},
    "mrc.bench": {"mrc.errors", "mrc.data", "mrc.model", "mrc.eval", "mrc.train", "heads"},
    "mrc.serve": {"mrc.errors", "mrc.data", "mrc.model", "mrc.eval", "heads"},
    "mrc": {"mrc.errors", "mrc.data", "mrc.robustness", "mrc.model", "mrc.eval", "mrc.train", "mrc.pretrain", "mrc.report",
            "mrc.bench", "mrc.serve", "heads"},  # mrc/__main__.py: the command table
}
# every `python -m mrc COMMAND`, and the packages that keep their own `python -m mrc.X`
COMMANDS = [["mrc", name] for name in ("train", "predict", "evaluate", "serve", "explain", "export", "report", "abstention",
                                      "bench", "robustness", "lexical", "pretrain", "transplant", "e5")] + [
    ["mrc.report"], ["mrc.pretrain"], ["mrc.bench"], ["mrc.robustness"], ["mrc.serve"]]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_of(module: str) -> str:
    """The layer a module belongs to: ``heads``, ``mrc`` (the top-level commands) or ``mrc.<sub>``."""
    parts = module.split(".")
    if parts[0] == "heads":
        return "heads"
    if len(parts) >= 2 and f"mrc.{parts[1]}" in ALLOWED:
        return f"mrc.{parts[1]}"
    return "mrc"


def imports_of(path: Path, module: str) -> set[str]:
    """Every project module ``path`` imports, at any depth (lazy and TYPE_CHECKING imports count too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_pkg else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)  # "from pkg import module"
    modules = all_modules()
    return {m for m in found if m in modules and m.split(".")[0] in ("mrc", "heads")}


def all_modules() -> dict[str, Path]:
    out = {}
    for top in ("mrc", "heads"):
        for path in (ROOT / top).rglob("*.py"):
            out[module_name(path)] = path
    return out


def graph() -> dict[str, set[str]]:
    return {m: imports_of(p, m) - {m} for m, p in all_modules().items()}


def test_packages_are_known():
    unknown = {m for m in all_modules() if m.count(".") >= 2 and package_of(m) == "mrc"}
    assert not unknown, f"modules in a subpackage missing from ALLOWED: {sorted(unknown)}"


@pytest.mark.slow
def test_imports_point_down():
    bad = []
    for mod, deps in graph().items():
        pkg = package_of(mod)
        for dep in deps:
            dep_pkg = package_of(dep)
            if dep_pkg != pkg and dep_pkg not in ALLOWED[pkg] and not dep_pkg == "mrc" == pkg:
                bad.append(f"{mod} -> {dep}")
    assert not bad, "imports against the layering (see mrc/__init__.py):\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
    g = graph()
    # package __init__ edges are implicit for submodules, not real dependencies
    g = {m: {d for d in deps if all_modules()[d].name != "__init__.py"} for m, deps in g.items()}
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for d in sorted(g[m]):
            if state.get(d) == "open":
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = "done"

    for m in sorted(g):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_layering_check_catches_a_violation(tmp_path, monkeypatch):
    """The checker itself: a data module that imports the run is reported."""
    fake = tmp_path / "bad.py"
    fake.write_text("from mrc.train.pipeline import run\n")
    deps = imports_of(fake, "mrc.data.bad")
    assert "mrc.train.pipeline" in deps and "mrc.train" not in ALLOWED["mrc.data"]


def test_every_subpackage_says_what_it_may_import():
    for pkg in ALLOWED:
        if pkg in ("mrc", "heads"):
            continue
        path = ROOT / pkg.replace(".", "/")
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")  # mrc.errors is one module
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc and "import" in doc, f"{pkg}/__init__.py: docstring must say what lives there and what it may import"


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_documented_commands_start(command):
    proc = subprocess.run([sys.executable, "-m", *command, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage" in (proc.stdout + proc.stderr).lower() or "Powered by Hydra" in proc.stdout

"""docs/architecture.md's dependency rule, checked on the source: scenarios -> bench ->
{runtime, vm_backend}; analysis reads files only; common is a leaf; and no
measuring package imports pandas or matplotlib (a large parent slows fork)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {"common", "runtime", "vm_backend", "bench", "scenarios", "analysis"}
HEAVY = {"pandas", "matplotlib", "scipy", "numpy"}

# package -> the cvbench packages it may import
ALLOWED = {
    "common": {"common"},
    "runtime": {"common", "runtime"},
    "vm_backend": {"common", "vm_backend"},
    "bench": {"common", "bench", "runtime", "vm_backend"},
    "scenarios": {"common", "bench", "scenarios"},
    "analysis": {"common", "analysis"},
}
MEASURING = {"common", "runtime", "vm_backend", "bench", "scenarios"}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def modules(pkg: str):
    return sorted((ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("pkg", sorted(ALLOWED))
def test_dependencies_point_one_way(pkg):
    bad = []
    for path in modules(pkg):
        for name in imports(path) & OURS - ALLOWED[pkg]:
            bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("pkg", sorted(MEASURING))
def test_measuring_packages_stay_light(pkg):
    bad = [f"{p.relative_to(ROOT)} imports {n}" for p in modules(pkg) for n in imports(p) & HEAVY]
    assert not bad, "\n".join(bad)


def test_every_package_exists():
    for pkg in ALLOWED:
        assert (ROOT / pkg / "__init__.py").is_file(), pkg

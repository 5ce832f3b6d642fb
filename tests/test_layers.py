"""The import-linter contracts: they pass on the real tree, the package layers name every module, and an upward
import (between packages, or inside bundle, verify and cli) is caught."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))


def _lint(root: Path) -> subprocess.CompletedProcess:
    if not Path(LINT).exists():
        pytest.fail("lint-imports is not installed; pip install -c constraints.txt -e '.[test]'")
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run([LINT], cwd=root, env=env, capture_output=True, text=True, timeout=300)


def _layers() -> list[str]:
    doc = tomllib.loads((REPO / "pyproject.toml").read_text())
    (contract,) = [c for c in doc["tool"]["importlinter"]["contracts"]
                   if c["type"] == "layers" and "containers" not in c]
    return [m.strip() for layer in contract["layers"] for m in layer.replace(":", "|").split("|")]


def test_contract_names_every_module():
    pkg = REPO / "src" / "h2l"
    found = {f"h2l.{p.stem}" for p in pkg.glob("*.py") if p.stem not in ("__init__", "__main__")}
    found |= {f"h2l.{p.name}" for p in pkg.iterdir() if (p / "__init__.py").is_file() and p.name not in
              ("schema", "data")}  # package data only
    assert found - set(_layers()) == set(), "modules missing from the layers contract"
    assert set(_layers()) - found == set(), "layers naming modules that do not exist"


def _copy_tree(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def test_real_tree_keeps_the_contract(tmp_path):
    res = _lint(_copy_tree(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    n = len(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"])
    assert n >= 4 and f"{n} kept, 0 broken" in res.stdout


@pytest.mark.parametrize("module, planted, message", [
    ("model/sizing.py", "from ..bundle import reader as _planted\n", "h2l.model is not allowed to import h2l.bundle"),
    ("importers/npz.py", "def _planted():\n    from ..cli import app\n",
     "h2l.importers is not allowed to import h2l.cli"),
    ("errors.py", "import h2l.atomic as _planted\n", "h2l.errors is not allowed to import h2l.atomic"),
    ("verify/checks.py", "from ..bench import timing as _planted\n", "h2l.verify is not allowed to import h2l.bench"),
    ("bundle/signing.py", "def _planted():\n    from .publish import sign_bundle\n",
     "h2l.bundle.signing is not allowed to import h2l.bundle.publish"),
    ("verify/report.py", "from .checks import verify_bundle as _planted\n",
     "h2l.verify.report is not allowed to import h2l.verify.checks"),
    ("cli/app.py", "from . import bundle_commands as _planted\n",
     "h2l.cli.app is not allowed to import h2l.cli.bundle_commands"),
])
def test_planted_upward_import_fails(tmp_path, module, planted, message):
    root = _copy_tree(tmp_path)
    target = root / "src" / "h2l" / module
    target.write_text(target.read_text() + "\n" + planted)
    res = _lint(root)
    assert res.returncode != 0, res.stdout
    assert message in res.stdout, res.stdout

"""The import-linter contracts of pyproject.toml hold on this tree and catch a forbidden import.

CI runs ``lint-imports`` itself; this test checks that the contracts are not vacuous: on a copy
of the package, an import that goes upwards (runtime -> an application) or sideways (eval ->
train) breaks them, and the report names the importing module.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter")

REPO = Path(__file__).resolve().parents[1]
LINT = "from importlinter.cli import lint_imports_command; lint_imports_command()"


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(
        REPO / "attngan_fast",
        tmp_path / "attngan_fast",
        ignore=shutil.ignore_patterns("__pycache__", "*.so", "static", "configs"),
    )
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", LINT, "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}  # noqa\n", encoding="utf-8")


def test_contracts_hold_and_catch_forbidden_imports(tmp_path):
    root = _copy(tmp_path)
    kept = _lint(root)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "2 kept, 0 broken" in kept.stdout

    _append(root / "attngan_fast/runtime/loaders.py", "from attngan_fast.generate import generate")
    _append(root / "attngan_fast/eval/r_precision.py", "from attngan_fast.train import checks")
    broken = _lint(root)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    out = " ".join(broken.stdout.split())
    assert "0 kept, 2 broken" in out
    assert "attngan_fast.runtime is not allowed to import attngan_fast.generate" in out
    assert "attngan_fast.eval is not allowed to import attngan_fast.train" in out
    assert "attngan_fast.runtime.loaders -> attngan_fast.generate" in out

"""The top-level `setup.py` is a shim: old tools that call it get pyproject.toml's metadata."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_setup_py_reads_pyproject() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    out = subprocess.run(
        [sys.executable, "setup.py", "--version"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert out.stdout.strip().splitlines()[-1] == version == "0.1.0"
    # pyproject.toml stays the one place for metadata: the shim passes nothing to setup()
    assert "setup()" in (ROOT / "setup.py").read_text()

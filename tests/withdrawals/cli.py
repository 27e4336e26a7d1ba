"""Running `coffer ...` and `coffer-signer ...` as real subprocesses in the withdrawal tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_cli(args: list[str], env: Mapping[str, str], *, module: str = "coffer",
            timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ)
    full.update(env)
    full["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + full.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", module, *args], env=full, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout_s, check=False)

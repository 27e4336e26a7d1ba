"""`coffer watcher run`: user mistakes end as one `coffer: error: ...` line and exit code 1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("COFFER_")}
    clean.update(env)
    return subprocess.run([sys.executable, "-m", "coffer", "watcher", "run", *args], cwd=REPO, env=clean,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("args", "env", "message"), [
    (("--chain", "btc"), {}, "no database"),
    (("--chain", "btc"), {"COFFER_DATABASE_URL": "postgresql://u@127.0.0.1:1/x"}, "no network"),
    (("--chain", "eth", "--network", "regtest"), {"COFFER_DATABASE_URL": "postgresql://u@127.0.0.1:1/x"},
     "COFFER_WATCHER_ETH_RPC_URL"),
    (("--chain", "btc", "--network", "regtest", "--node-url", "http://127.0.0.1:1"),
     {"COFFER_DATABASE_URL": "postgresql://u:hunter22@127.0.0.1:1/x"}, "cannot connect to PostgreSQL"),
])
def test_user_errors_are_one_line(args: tuple[str, ...], env: dict[str, str], message: str) -> None:
    result = run(*args, **env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("coffer: error: ") and message in lines[0]
    assert "hunter22" not in result.stderr


def test_unknown_chain_is_a_usage_error() -> None:
    result = run("--chain", "doge")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr

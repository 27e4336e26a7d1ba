"""The cold CLI opens no socket and imports no network/service library.

Every sub-command runs in a fresh interpreter whose socket creation is made to fail (the
`socket.socket` class, `_socket.socket`, `create_connection`, `socketpair` and `getaddrinfo`
are replaced by a function that raises), and must still succeed; afterwards the process
checks that redis, asyncpg, fastapi, httpx, web3 (and other network clients) were not imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from signer.keystore import UnlockedSeed
from tests.signer.helpers import MNEMONIC, PASSPHRASE, build_psbt, make_keystore

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("redis", "asyncpg", "fastapi", "httpx", "web3", "uvicorn", "websockets", "aiohttp", "requests",
             "starlette", "urllib3", "signer.policy_store", "signer.hot", "signer.hot_config")

WRAPPER = """
import sys, socket, _socket
def _blocked(*args, **kwargs):
    raise OSError("socket creation blocked by the no-network test")
for mod in (socket, _socket):
    mod.socket = _blocked
socket.create_connection = _blocked
socket.socketpair = _blocked
socket.getaddrinfo = _blocked
if sys.argv[1] == "--probe":
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        print("probe:", exc)
        sys.exit(0)
    sys.exit(3)
from signer.cold_cli import main
rc = main(sys.argv[1:])
bad = [m for m in FORBIDDEN if m in sys.modules]
if bad:
    print("forbidden modules imported:", bad, file=sys.stderr)
    sys.exit(99)
sys.exit(rc)
"""


def run_blocked(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COFFER_")}
    env["COFFER_SIGNER_PASSPHRASE"] = PASSPHRASE
    env["PYTHONPATH"] = str(ROOT)
    code = f"FORBIDDEN = {FORBIDDEN!r}\n" + WRAPPER
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_the_block_works(tmp_path: Path) -> None:
    proc = run_blocked(["--probe"], tmp_path)
    assert proc.returncode == 0 and "blocked by the no-network test" in proc.stdout


def test_every_subcommand_without_sockets(tmp_path: Path) -> None:
    seed = UnlockedSeed(MNEMONIC)
    (tmp_path / "words.txt").write_text(MNEMONIC)
    make_keystore(tmp_path / "ks.json")
    (tmp_path / "in.psbt").write_text(build_psbt(seed).to_base64())
    (tmp_path / "tx.json").write_text(json.dumps({
        "type": 2, "chain_id": 1, "nonce": 0, "to": "0x3535353535353535353535353535353535353535", "value": "1",
        "gas": 21000, "max_fee_per_gas": 10**9, "max_priority_fee_per_gas": 10**9, "data": "0x",
        "derivation_path": "m/44'/60'/0'/0/0",
    }))
    (tmp_path / "tx0.json").write_text(json.dumps({
        "type": 0, "chain_id": 1, "nonce": 9, "to": "0x3535353535353535353535353535353535353535",
        "value": "1000000000000000000", "gas": 21000, "gas_price": "20000000000", "data": "0x",
        "derivation_path": "m/44'/60'/0'/0/0",
    }))
    commands = [
        ["init", "--keystore", "new.json", "--words", "24", "--scrypt-n", "1024"],
        ["init", "--keystore", "imported.json", "--mnemonic-file", "words.txt", "--scrypt-n", "1024"],
        ["xpub", "--keystore", "ks.json", "--chain", "btc", "--network", "regtest"],
        ["xpub", "--keystore", "ks.json", "--chain", "btc", "--network", "mainnet", "--type", "p2tr"],
        ["xpub", "--keystore", "ks.json", "--chain", "eth", "--network", "mainnet", "--account", "1"],
        ["sign", "--keystore", "ks.json", "--in", "in.psbt", "--out", "out.psbt", "--yes"],
        ["sign-eth", "--keystore", "ks.json", "--in", "tx.json", "--out", "tx.hex", "--yes"],
        ["sign-eth", "--keystore", "ks.json", "--in", "tx0.json", "--out", "tx0.hex", "--yes"],
    ]
    for args in commands:
        proc = run_blocked(args, tmp_path)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    for produced in ("new.json", "imported.json", "out.psbt", "tx.hex", "tx0.hex"):
        assert (tmp_path / produced).stat().st_size > 0
    assert json.loads((tmp_path / "imported.json").read_text())["fingerprint"] == seed.fingerprint


@pytest.mark.parametrize("module", ["signer", "signer.cold_cli"])
def test_import_pulls_in_no_network_library(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        f"bad = [m for m in {FORBIDDEN!r} if m in sys.modules]\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr

"""Pytest fixtures for the local test chains (Ethereum JSON-RPC on eth-tester, Esplora-compatible
Bitcoin regtest). Registered from tests/conftest.py via `pytest_plugins`.

- `eth_chain` (module scope): `coffer chain eth` as a subprocess on a free port; yields an
  `EthChain` with `.url` (JSON-RPC) and helpers: `rpc`, `mine`, `snapshot`, `revert`, `reorg`,
  `fund`, `deploy_erc20`, `mint_erc20`, `set_auto_mine`, `faults`, `block_number`. Tests that
  switch auto-mining off or inject faults restore them: the chain is shared by the module.
- `btc_chain` (module scope): `coffer chain btc` likewise; yields a `BtcChain` with `.url`
  (Esplora base URL) and helpers: `get`, `tip_height`, `mine`, `faucet`, `reorg`, `faults`.
- `chain_process(kind, *extra_args)`: context manager for tests that need their own chain
  (other options, or a chain of their own to kill).

Each chain process is stopped (SIGTERM, then SIGKILL) at teardown; its stderr goes to a temp
log file whose path is in `ChainProcess.log_path` (removed after a clean exit, kept otherwise).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 60.0


class ChainProcess:
    """A `python -m coffer chain ...` subprocess; `url` is read from its `ready <url>` line."""

    def __init__(self, kind: str, extra_args: Sequence[str] = ()) -> None:
        fd, log_name = tempfile.mkstemp(prefix=f"coffer-chain-{kind}-", suffix=".log")
        os.close(fd)
        self.log_path = Path(log_name)
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        with self.log_path.open("wb") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "coffer", "chain", kind, "--port", "0", *extra_args],
                stdout=subprocess.PIPE, stderr=log_file, cwd=REPO_ROOT, env=env,
            )
        self.url = self._read_ready()

    def _read_ready(self) -> str:
        assert self.proc.stdout is not None
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(self.proc.stdout.readline().decode()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(READY_TIMEOUT_S)
        line = lines[0].strip() if lines else ""
        if not line.startswith("ready "):
            self.stop()
            raise RuntimeError(f"chain did not start (line {line!r}); log:\n{self.log_path.read_text()[-3000:]}")
        return line.split(" ", 1)[1]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self.proc.returncode == 0:  # a clean shutdown: the log is of no further use
            self.log_path.unlink(missing_ok=True)


@contextmanager
def chain_process(kind: str, *extra_args: str) -> Iterator[ChainProcess]:
    process = ChainProcess(kind, extra_args)
    try:
        yield process
    finally:
        process.stop()


class EthChain:
    """Helpers over the Ethereum test chain's JSON-RPC (sync httpx; one request per call)."""

    def __init__(self, process: ChainProcess) -> None:
        self.process = process
        self.url = process.url

    def rpc(self, method: str, *params: Any) -> Any:
        answer = httpx.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)},
                            timeout=60).json()
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']['message']}")
        return answer["result"]

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def mine(self, blocks: int = 1) -> list[str]:
        """Mine `blocks` blocks (pending transactions go in the first); returns their hashes."""
        return list(self.rpc("evm_mine", blocks))

    def snapshot(self) -> str:
        return str(self.rpc("evm_snapshot"))

    def revert(self, snapshot_id: str) -> bool:
        return bool(self.rpc("evm_revert", snapshot_id))

    def reorg(self, depth: int, new_blocks: int, drop_txids: Sequence[str] = ()) -> list[str]:
        """Replace the last `depth` blocks by `new_blocks` new ones; orphaned txs are re-mined
        unless in `drop_txids`."""
        return list(self.rpc("coffer_reorg", depth, new_blocks, list(drop_txids)))

    def fund(self, address: str, amount_wei: int) -> str:
        """A signed transfer from the faucet account; returns the txid."""
        return str(self.rpc("coffer_fund", address, hex(amount_wei)))

    def deploy_erc20(self, name: str = "Tether USD (test)", symbol: str = "USDT") -> str:
        from watchers.testchains.erc20 import deploy_erc20

        return deploy_erc20(self.url, name, symbol)

    def mint_erc20(self, token: str, to: str, amount: int) -> str:
        """The faucet (token deployer) mints `amount` base units to `to`; returns the txid."""
        return str(self.rpc("coffer_mintErc20", token, to, hex(amount)))

    def set_auto_mine(self, enabled: bool) -> None:
        self.rpc("coffer_setAutoMine", enabled)

    def faults(self, count: int, status: int | None = 429, delay_ms: int = 0) -> None:
        """Answer the next `count` JSON-RPC requests with HTTP `status` (None: normal answer) after
        `delay_ms`. Test controls (coffer_*, evm_*) are never affected."""
        self.rpc("coffer_injectFaults", count, status, delay_ms)


class BtcChain:
    """Helpers over the Bitcoin regtest Esplora server (sync httpx; one request per call)."""

    def __init__(self, process: ChainProcess) -> None:
        self.process = process
        self.url = process.url

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=60)

    def post(self, path: str, body: str | bytes = b"", json: Any = None) -> httpx.Response:
        if json is not None:
            return httpx.post(self.url + path, json=json, timeout=60)
        return httpx.post(self.url + path, content=body, timeout=60)

    def _control(self, path: str, payload: dict[str, Any]) -> Any:
        response = self.post(path, json=payload)
        if response.status_code != 200:
            raise RuntimeError(f"{path}: HTTP {response.status_code}: {response.text}")
        return response.json()

    def tip_height(self) -> int:
        return int(self.get("/blocks/tip/height").text)

    def mine(self, blocks: int = 1, address: str | None = None) -> list[str]:
        """Mine `blocks` blocks (coinbase to `address` or the faucet); returns their hashes."""
        return list(self._control("/regtest/mine", {"blocks": blocks, "address": address}))

    def faucet(self, address: str, amount_sat: int) -> str:
        """Pay `address` from the faucet key with a signed P2WPKH tx into the mempool; the txid."""
        return str(self._control("/regtest/faucet", {"address": address, "amount_sat": amount_sat})["txid"])

    def reorg(self, depth: int, new_blocks: int, drop_txids: Sequence[str] = ()) -> list[str]:
        """Replace the last `depth` blocks with `new_blocks` new ones; orphaned txs return to the
        mempool (and are mined again) unless listed in `drop_txids`. Returns the new hashes."""
        return list(self._control("/regtest/reorg", {"depth": depth, "new_blocks": new_blocks,
                                                     "drop_txids": list(drop_txids)}))

    def faults(self, count: int, status: int | None = 429, delay_ms: int = 0) -> None:
        """Answer the next `count` Esplora requests with HTTP `status` (None: normal answer)
        after `delay_ms`. Control endpoints under /regtest/ are never affected."""
        self._control("/regtest/faults", {"count": count, "status": status, "delay_ms": delay_ms})


@pytest.fixture(scope="module")
def eth_chain() -> Iterator[EthChain]:
    with chain_process("eth") as process:
        yield EthChain(process)


@pytest.fixture(scope="module")
def btc_chain() -> Iterator[BtcChain]:
    with chain_process("btc") as process:
        yield BtcChain(process)

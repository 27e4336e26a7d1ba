"""`coffer up` as a user runs it: a subprocess that starts the servers, answers, stops on
SIGINT leaving no process behind, and keeps its data across runs."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import redis

from coffer.localservices import free_port

READY = "press Ctrl-C to stop"


def _start_up(data_dir: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "coffer", "up", "--data-dir", str(data_dir), "--no-services", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **(env or {})},
    )


def _read_until_ready(proc: subprocess.Popen[str], timeout_s: float = 60) -> str:
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if READY in line:
            return "".join(lines)
    proc.kill()
    raise AssertionError("coffer up did not become ready:\n" + "".join(lines))


def _descendants(pid: int) -> set[int]:
    """All processes whose parent chain leads to `pid` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents[int(entry)] = ppid
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        children = {p for p, pp in parents.items() if pp in frontier}
        frontier = children - found
        found |= children
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_up_serves_redis_and_postgres_and_stops_cleanly_on_sigint(data_dir: Path) -> None:
    data = data_dir
    redis_port, pg_port = free_port(), free_port()
    proc = _start_up(data, "--redis-port", str(redis_port), "--postgres-port", str(pg_port))
    out = _read_until_ready(proc)
    assert f"redis://127.0.0.1:{redis_port}/0" in out
    assert f"127.0.0.1:{pg_port}/coffer" in out
    children = _descendants(proc.pid)
    assert children, "coffer up should run its servers as child processes"

    client = redis.Redis(port=redis_port)
    assert client.ping() is True
    client.xadd("kept", {"v": "1"})
    client.close()

    async def pg() -> int:
        conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{pg_port}/coffer")
        try:
            await conn.execute("INSERT INTO service_meta (key, value) VALUES ('kept', 'yes')")
            return int(await conn.fetchval("SELECT count(*) FROM schema_migrations"))
        finally:
            await conn.close()

    assert asyncio.run(pg()) >= 1

    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest
    assert "coffer stopped" in rest
    time.sleep(0.2)
    left = [pid for pid in children if _alive(pid)]
    assert left == [], f"processes left behind after SIGINT: {left}"

    # Second run on the same data dir: the data is still there.
    proc = _start_up(data, "--redis-port", str(redis_port), "--postgres-port", str(pg_port))
    out = _read_until_ready(proc)
    assert "0 applied now" in out

    async def kept() -> str | None:
        conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{pg_port}/coffer")
        try:
            value = await conn.fetchval("SELECT value FROM service_meta WHERE key = 'kept'")
            return None if value is None else str(value)
        finally:
            await conn.close()

    assert asyncio.run(kept()) == "yes"
    client = redis.Redis(port=redis_port)
    assert client.xlen("kept") == 1
    client.close()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 0


def test_unreachable_external_redis_is_one_clear_line(data_dir: Path) -> None:
    data = data_dir
    port = free_port()
    proc = _start_up(data, "--redis-url", f"redis://:hunter2@127.0.0.1:{port}/0")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    lines = [ln for ln in out.splitlines() if ln.startswith("coffer: error:")]
    assert len(lines) == 1, out
    assert f"cannot reach Redis at redis://:***@127.0.0.1:{port}/0" in lines[0]
    assert "Traceback" not in out
    assert "hunter2" not in out


def test_unreachable_external_postgres_is_one_clear_line(data_dir: Path) -> None:
    data = data_dir
    port = free_port()
    proc = _start_up(data, "--database-url", f"postgresql://app:s3cret@127.0.0.1:{port}/coffer")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "Traceback" not in out
    assert "s3cret" not in out
    expected = rf"coffer: error: cannot reach PostgreSQL at postgresql://app:\*\*\*@127\.0\.0\.1:{port}/coffer"
    assert re.search(expected, out), out


def test_port_already_taken_is_reported(data_dir: Path) -> None:
    data = data_dir
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _start_up(data, "--redis-port", str(port))
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "Traceback" not in out
    assert f"port {port} on 127.0.0.1 is already in use" in out

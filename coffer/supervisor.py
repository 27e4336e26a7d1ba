"""A small process supervisor for `coffer up`: start children, restart the ones that die,
stop them all on SIGINT/SIGTERM, leave no orphan.

Each child runs in its own session (process group), so a Ctrl-C in the terminal reaches
only the supervisor, which then stops the children in reverse start order: SIGTERM to the
group, a grace period, SIGKILL to what is left.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from coffer.errors import ServiceError

log = logging.getLogger("coffer.supervisor")


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A child service: `argv` after `python -m coffer`, what it serves, extra environment."""

    name: str
    argv: tuple[str, ...]
    url: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    ready_line: str = ""  # a stdout line prefix that means "ready"; empty = ready at start
    ready_port: int = 0  # a TCP port on 127.0.0.1 that accepts connections once ready


@dataclass
class _Child:
    spec: ServiceSpec
    proc: subprocess.Popen[bytes]
    started_at: float
    restarts: int = 0


class Supervisor:
    def __init__(self, log_dir: Path, base_env: Mapping[str, str], grace_s: float = 10.0) -> None:
        self._log_dir = log_dir
        self._base_env = dict(base_env)
        self._grace_s = grace_s
        self._children: list[_Child] = []
        self._stopping = threading.Event()

    def _spawn(self, spec: ServiceSpec) -> subprocess.Popen[bytes]:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        env = {**self._base_env, **spec.env}
        log_file = open(self._log_dir / f"{spec.name}.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "coffer", *spec.argv],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                env=env, start_new_session=True,
            )
        finally:
            log_file.close()

    def start(self, spec: ServiceSpec, ready_timeout_s: float = 30.0) -> None:
        from coffer.localservices import port_in_use

        if spec.ready_port and port_in_use(spec.ready_port):
            raise ServiceError(f"cannot start {spec.name}: port {spec.ready_port} on 127.0.0.1 is already in use")
        proc = self._spawn(spec)
        self._children.append(_Child(spec, proc, time.monotonic()))
        if spec.ready_line or spec.ready_port:
            self._wait_ready(spec, proc, ready_timeout_s)

    def _is_ready(self, spec: ServiceSpec, path: Path) -> bool:
        from coffer.localservices import can_connect

        if spec.ready_port:
            return can_connect(spec.ready_port)
        try:
            return any(line.startswith(spec.ready_line) for line in path.read_text(errors="replace").splitlines())
        except OSError:
            return False

    def _wait_ready(self, spec: ServiceSpec, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
        path = self._log_dir / f"{spec.name}.log"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServiceError(f"{spec.name} exited during start (code {proc.returncode}); see {path}")
            if self._is_ready(spec, path):
                return
            time.sleep(0.05)
        raise ServiceError(f"{spec.name} was not ready within {timeout_s:.0f} s; see {path}")

    def update_env(self, extra: Mapping[str, str]) -> None:
        """Environment for children started from now on."""
        self._base_env.update(extra)

    def pids(self) -> list[int]:
        return [c.proc.pid for c in self._children if c.proc.poll() is None]

    def watch_once(self) -> None:
        """Restart children that died (back-off grows with repeated quick deaths)."""
        for child in self._children:
            code = child.proc.poll()
            if code is None or self._stopping.is_set():
                continue
            quick = time.monotonic() - child.started_at < 10
            child.restarts = child.restarts + 1 if quick else 1
            delay = min(30.0, 0.5 * 2 ** min(child.restarts, 6))
            log.error("%s exited with code %s; restarting in %.1f s", child.spec.name, code, delay)
            if self._stopping.wait(delay):
                return
            child.proc = self._spawn(child.spec)
            child.started_at = time.monotonic()

    def run_until_stopped(self, poll_s: float = 0.5) -> None:
        while not self._stopping.wait(poll_s):
            self.watch_once()

    def request_stop(self) -> None:
        self._stopping.set()

    def stop_all(self) -> None:
        self._stopping.set()
        for child in reversed(self._children):
            _terminate_group(child.proc, self._grace_s)
        self._children.clear()


def _terminate_group(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    # Grandchildren left in the group (a worker of the child) go too.
    _signal_group(proc.pid, signal.SIGKILL)


def terminate_groups(procs: Sequence[subprocess.Popen[bytes]], grace_s: float = 15.0) -> None:
    """Stop children started with `start_new_session=True` all at once: SIGTERM to every
    process group, wait up to `grace_s` for each, SIGKILL the groups still running."""
    for proc in procs:
        _signal_group(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def install_stop_handlers(supervisor: Supervisor) -> None:
    def handler(signum: int, _frame: object) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        supervisor.request_stop()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def format_table(rows: Sequence[tuple[str, str]]) -> str:
    width = max((len(name) for name, _ in rows), default=0)
    return "\n".join(f"  {name.ljust(width)}  {where}" for name, where in rows)

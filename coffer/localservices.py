"""Private Redis and PostgreSQL servers run as child processes under a data directory.

Used by `coffer up` (under `./.coffer/`) and by the test harness (under temp dirs). Each
server binds 127.0.0.1 on a free or given port, can be stopped cleanly, killed with
SIGKILL and restarted on the same data and port (the fault tests need that).
PostgreSQL refuses to run as root, so when we are root the server runs as the
unprivileged `postgres` user (shared/STACK.md).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from coffer.errors import ServiceError

PG_BIN_CANDIDATES = ("/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind to port 0 and ask)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def can_connect(port: int, host: str = "127.0.0.1", timeout_s: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def pg_bin_dir() -> Path:
    for cand in PG_BIN_CANDIDATES:
        if Path(cand, "postgres").exists():
            return Path(cand)
    found = shutil.which("postgres")
    if found:
        return Path(found).parent
    raise ServiceError("PostgreSQL server binaries not found (install the Debian package postgresql)")


def _is_root() -> bool:
    return os.geteuid() == 0


def _chown_tree_to_postgres(path: Path) -> None:
    import pwd

    pw = pwd.getpwnam("postgres")
    for root, dirs, files in os.walk(path):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), pw.pw_uid, pw.pw_gid, follow_symlinks=False)


@dataclass
class RedisServer:
    """A private `redis-server` with AOF on, in `directory`, on 127.0.0.1:`port`."""

    directory: Path
    port: int = 0
    appendfsync: str = "everysec"
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise ServiceError("redis-server not found (install the Debian package redis-server)")
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.port == 0:
            self.port = free_port()
        elif port_in_use(self.port):
            raise ServiceError(f"cannot start Redis: port {self.port} on 127.0.0.1 is already in use")
        args = [
            exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory.resolve()),
            "--appendonly", "yes", "--appendfsync", self.appendfsync, "--save", "",
            "--daemonize", "no", "--logfile", str((self.directory / "redis.log").resolve()),
            "--protected-mode", "yes",
        ]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        self._wait_ready(timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise ServiceError(
                    f"Redis exited at start (code {self.proc.returncode}); see {self.directory / 'redis.log'}"
                )
            if _redis_ping(self.port):
                return
            time.sleep(0.02)
        raise ServiceError(f"Redis did not answer PING on port {self.port} within {timeout_s:.0f} s")

    def stop(self, timeout_s: float = 10.0) -> None:
        _stop(self.proc, signal.SIGTERM, timeout_s)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final AOF rewrite (what a crash looks like)."""
        _stop(self.proc, signal.SIGKILL, 5.0)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class PostgresServer:
    """A private PostgreSQL cluster in `directory` (data in `directory/data`)."""

    directory: Path
    port: int = 0
    # fsync=off: tests only. Safe against a process crash (kill -9: the OS keeps what was
    # written), not against an OS crash. synchronous_commit stays on, so a commit that
    # returned is in the OS's hands before a kill.
    fast_unsafe: bool = False
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def socket_dir(self) -> Path:
        return self.directory / "sock"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run_as(self) -> tuple[str | None, str | None, list[str] | None]:
        """(user, group, extra_groups) for subprocess: postgres when we are root."""
        if _is_root():
            return "postgres", "postgres", []
        return None, None, None

    def init(self) -> None:
        """Create the cluster unless `data_dir` already holds one (re-runs keep data)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if _is_root():
            self.directory.chmod(0o755)
            _chown_tree_to_postgres(self.directory)
            _check_traversable(self.directory)
        if (self.data_dir / "PG_VERSION").exists():
            return
        initdb = pg_bin_dir() / "initdb"
        user, group, extra_groups = self._run_as()
        result = subprocess.run(
            [str(initdb), "-D", str(self.data_dir.resolve()), "-U", "postgres", "--auth=trust",
             "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True,
            user=user, group=group, extra_groups=extra_groups,
        )
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise ServiceError(f"initdb failed: {last}")

    def start(self, timeout_s: float = 20.0) -> None:
        self.init()
        if self.port == 0:
            self.port = free_port()
        elif port_in_use(self.port):
            raise ServiceError(f"cannot start PostgreSQL: port {self.port} on 127.0.0.1 is already in use")
        stale_pid = self.data_dir / "postmaster.pid"
        if stale_pid.exists():
            _remove_stale_pidfile(stale_pid)
        args = [
            str(pg_bin_dir() / "postgres"), "-D", str(self.data_dir.resolve()), "-p", str(self.port),
            "-k", str(self.socket_dir.resolve()), "-c", "listen_addresses=127.0.0.1",
            "-c", "max_connections=300", "-c", "shared_buffers=256MB",
        ]
        if self.fast_unsafe:
            args += ["-c", "fsync=off", "-c", "full_page_writes=off"]
        user, group, extra_groups = self._run_as()
        log = open(self.directory / "postgres.log", "ab")  # noqa: SIM115 - owned by the child
        try:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                user=user, group=group, extra_groups=extra_groups,
            )
        finally:
            log.close()
        self._wait_ready(timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise ServiceError(
                    f"PostgreSQL exited at start (code {self.proc.returncode}); "
                    f"see {self.directory / 'postgres.log'}"
                )
            if _pg_ready(self.port):
                return
            time.sleep(0.03)
        raise ServiceError(f"PostgreSQL did not accept connections on port {self.port} within {timeout_s:.0f} s")

    def stop(self, timeout_s: float = 20.0) -> None:
        _stop(self.proc, signal.SIGINT, timeout_s)  # SIGINT = fast shutdown
        self.proc = None

    def kill(self) -> None:
        """SIGKILL the postmaster, then its orphaned backends (a crash of the whole server)."""
        if self.proc is None:
            return
        pid = self.proc.pid
        _stop(self.proc, signal.SIGKILL, 5.0)
        self.proc = None
        _kill_process_group(pid)

    def restart(self) -> None:
        self.stop()
        self.start()


def _check_traversable(path: Path) -> None:
    for parent in path.resolve().parents:
        if not parent.stat().st_mode & 0o001:
            raise ServiceError(
                f"PostgreSQL runs as the user postgres, which cannot enter {parent} "
                f"(mode {parent.stat().st_mode & 0o777:o}); use a data directory it can reach"
            )


def _pg_ready(port: int) -> bool:
    # An SSLRequest probe: a running postmaster answers 'N' or 'S' only once it accepts
    # connections; while starting up it answers nothing useful or closes.
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3) as s:
            s.sendall((8).to_bytes(4, "big") + (80877103).to_bytes(4, "big"))
            if s.recv(1) not in (b"N", b"S"):
                return False
    except OSError:
        return False
    # The postmaster answers SSLRequest before recovery ends; a startup packet tells more.
    return _pg_accepts_startup(port)


def _pg_accepts_startup(port: int) -> bool:
    params = b"user\x00postgres\x00database\x00postgres\x00\x00"
    body = (196608).to_bytes(4, "big") + params
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall((len(body) + 4).to_bytes(4, "big") + body)
            kind = s.recv(1)
            # 'R' = authentication request (trust -> AuthenticationOk); 'E' = error such as
            # "the database system is starting up".
            return kind == b"R"
    except OSError:
        return False


def _remove_stale_pidfile(path: Path) -> None:
    try:
        pid = int(path.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        path.unlink(missing_ok=True)
        return
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
    except PermissionError:
        pass


def _kill_process_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _stop(proc: subprocess.Popen[bytes] | None, sig: signal.Signals, timeout_s: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(sig)
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
    except ProcessLookupError:
        pass

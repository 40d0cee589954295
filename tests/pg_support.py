"""A throwaway PostgreSQL server for the tests: a pytest plugin (conftest.py's `pytest_plugins`).

Fixtures:
  pg_server  session: ONE server for the whole run (initdb + pg_ctl, trust auth, a Unix socket in
             a temporary folder, no TCP), started the first time a test asks for it and stopped
             (`pg_ctl stop -m fast`) at the end of the session; yields the URL of its `postgres`
             database, `postgresql+asyncpg://postgres@/postgres?host=<socket folder>`.
  pg_url     a fresh empty database per test on that server (its asyncpg URL), dropped afterwards.
  db_url     parametrised [sqlite] / [postgresql]: a new SQLite file in tmp_path, or pg_url; a test
             that asks for it runs on both databases.

Where PostgreSQL cannot run (no initdb: `bash scripts/postgres.sh ensure` installs Debian's
package; no asyncpg; root without a `postgres` user to run the server) the PostgreSQL cases
skip with the reason, and the terminal summary repeats it once. A server that is installed but
fails to start is an error, with its log, not a skip.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import importlib.util
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

_SKIP_REASON = pytest.StashKey[str]()  # why the PostgreSQL cases skip (for the terminal summary)
_STARTED = pytest.StashKey[str]()  # what started, for the terminal summary
_FAILED = pytest.StashKey[str]()  # an installed server that would not start

INSTALL_HINT = "`bash scripts/postgres.sh ensure` (as root) installs it"


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", name))


def pg_bin() -> Path | None:
    """The folder with initdb and pg_ctl: $PG_BIN, Debian's newest /usr/lib/postgresql/*/bin, or PATH's."""
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda b: _version(b.parent.name), reverse=True)
    for d in [os.environ.get("PG_BIN"), *debian]:
        if d and (Path(d) / "initdb").exists():
            return Path(d)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _socket_parent() -> str:
    """/tmp where it is usable: the `postgres` user must reach it, and a socket's path is short."""
    return "/tmp" if os.access("/tmp", os.W_OK | os.X_OK) else tempfile.gettempdir()


# Stops the server and removes its folder ($1) once the test process is gone however it ended
# (SIGTERM from `timeout`, SIGKILL): its stdin is a pipe that only that process holds open.
_REAPER = """read -r _
pid=$(head -n 1 "$1/data/postmaster.pid" 2>/dev/null)
if [ -n "$pid" ] && kill -INT "$pid" 2>/dev/null; then
  i=0
  while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  kill -QUIT "$pid" 2>/dev/null
fi
rm -rf "$1"
"""


class PgServer:
    """One throwaway server; run_as is the account it runs as (initdb refuses root)."""

    def __init__(self, bin_dir: Path, run_as: pwd.struct_passwd | None) -> None:
        self.bin_dir, self.run_as = bin_dir, run_as
        self.root = Path(tempfile.mkdtemp(prefix="imagegate-pg-", dir=_socket_parent()))
        self.data = self.root / "data"
        self.log = self.root / "log"
        self.running = False
        if run_as:
            os.chown(self.root, run_as.pw_uid, run_as.pw_gid)
        lifeline, self._lifeline = os.pipe()  # both ends close-on-exec: no other child holds them
        try:
            self._reaper: subprocess.Popen[bytes] | None = subprocess.Popen(
                ["sh", "-c", _REAPER, "imagegate-pg-reaper", str(self.root)], stdin=lifeline,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        finally:
            os.close(lifeline)

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@/postgres?host={self.root}"

    def _run(self, tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        as_user: dict[str, Any] = {}
        if self.run_as:
            as_user = dict(user=self.run_as.pw_uid, group=self.run_as.pw_gid, extra_groups=[])
        return subprocess.run([str(self.bin_dir / tool), *args], check=True, capture_output=True, text=True,
                              cwd=self.root, timeout=timeout, **as_user)

    def start(self) -> None:
        try:
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                      "--locale=C", "--no-sync")
            with open(self.data / "postgresql.conf", "a") as conf:  # appended: the file keeps its owner
                conf.write(f"\n# imagegate tests: Unix socket only, no durability\nlisten_addresses = ''\n"
                           f"unix_socket_directories = '{self.root}'\nfsync = off\nfull_page_writes = off\n"
                           "synchronous_commit = off\ntimezone = 'UTC'\n")
            self.running = True  # from here on, stop() tries pg_ctl stop
            self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
            out = getattr(e, "stderr", None) or getattr(e, "stdout", None) or ""
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            self.stop()
            raise RuntimeError(f"PostgreSQL ({self.bin_dir}) failed to start: {e}\n{out}\n{log}".rstrip()) from e

    def stop(self) -> None:
        """Stop the server (fast: open connections are cut) and remove its files; idempotent."""
        if self.running:
            self.running = False
            for mode in ("fast", "immediate"):
                try:
                    self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop", timeout=60)
                    break
                except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError):
                    continue
        shutil.rmtree(self.root, ignore_errors=True)
        if self._reaper:  # nothing left for it to do
            reaper, self._reaper = self._reaper, None
            reaper.kill()
            reaper.wait()
            os.close(self._lifeline)


def unavailable_reason() -> tuple[str | None, Path | None, pwd.struct_passwd | None]:
    """(why PostgreSQL cannot run here or None, the server's bin folder, the account to run it as)."""
    if importlib.util.find_spec("asyncpg") is None:
        return "the asyncpg driver is not installed (pip install -e '.[test]')", None, None
    bin_dir = pg_bin()
    if bin_dir is None:
        return f"no PostgreSQL server installed (initdb not found; {INSTALL_HINT})", None, None
    if os.geteuid() != 0:
        return None, bin_dir, None
    try:
        return None, bin_dir, pwd.getpwnam("postgres")
    except KeyError:
        return "running as root and there is no `postgres` user to run the server (initdb refuses root)", None, None


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> Iterator[str]:
    """One PostgreSQL server for the session; yields the URL of its `postgres` database."""
    config = request.config
    reason, bin_dir, run_as = unavailable_reason()
    if reason or bin_dir is None:
        config.stash[_SKIP_REASON] = reason or "unknown"
        pytest.skip(f"PostgreSQL tests skipped: {reason}")
    server = PgServer(bin_dir, run_as)
    atexit.register(server.stop)  # a second line of defence; the fixture's teardown comes first
    t0 = time.perf_counter()
    try:
        server.start()
    except RuntimeError as e:
        config.stash[_FAILED] = str(e).splitlines()[0]
        raise
    version = (server.data / "PG_VERSION").read_text().strip()
    config.stash[_STARTED] = f"PostgreSQL {version} from {bin_dir}, started in {time.perf_counter() - t0:.2f}s"
    try:
        yield server.url
    finally:
        server.stop()
        atexit.unregister(server.stop)


def _admin(url: str, work: Callable[[Any], Coroutine[Any, Any, Any]]) -> Any:
    """Run `work(connection)` on an asyncpg connection to the server of `url`, in a thread of its own
    (its own event loop: a test's loop, running or not, is left alone)."""
    import asyncpg
    from sqlalchemy.engine import make_url

    u = make_url(url)

    async def main() -> Any:
        conn = await asyncpg.connect(host=u.query.get("host") or u.host, port=u.port, user=u.username,
                                     password=u.password, database=u.database)
        try:
            return await work(conn)
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A new empty database on the session's server; yields its postgresql+asyncpg URL."""
    from sqlalchemy.engine import make_url

    name = f"t_{os.urandom(6).hex()}"

    async def create(conn: Any) -> None:
        # 15+: copying template1's files beats WAL-logging them, with fsync off
        strategy = " STRATEGY file_copy" if conn.get_server_version().major >= 15 else ""
        await conn.execute(f"CREATE DATABASE {name}{strategy}")

    async def drop(conn: Any) -> None:
        force = " WITH (FORCE)" if conn.get_server_version().major >= 13 else ""  # cuts connections left open
        await conn.execute(f"DROP DATABASE IF EXISTS {name}{force}")

    _admin(pg_server, create)
    try:
        base = make_url(pg_server)  # its host (the socket's folder) written out, not %-quoted
        host = base.query.get("host")
        url = base.set(database=name, query={}).render_as_string(hide_password=False)
        yield f"{url}?host={host}" if host else url
    finally:
        _admin(pg_server, drop)


@pytest.fixture(params=["sqlite", "postgresql"], ids=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty ledger database: SQLite in tmp_path, then (the [postgresql] case) pg_url."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'imagegate.db'}"
    return str(request.getfixturevalue("pg_url"))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if reason := config.stash.get(_SKIP_REASON, None):
        terminalreporter.write_sep("!", f"PostgreSQL tests SKIPPED: {reason}", red=True, bold=True)
    if failed := config.stash.get(_FAILED, None):
        terminalreporter.write_sep("!", f"PostgreSQL tests ERRORED: {failed}", red=True, bold=True)
    if started := config.stash.get(_STARTED, None):
        terminalreporter.write_line(f"PostgreSQL tests ran on a throwaway server: {started}")

"""Shared fixtures: one real PostgreSQL per test session, and a runner for the pgwarden
binary (PGWARDEN_BIN, default build/pgwarden)."""
import json
import os
import signal
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from pgfixture import PgServer, free_port  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _terminate_like_ctrl_c(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


# A run stopped by SIGTERM (a CI or `timeout` limit) still tears the fixtures down, so no
# PostgreSQL or pooler is left running.
signal.signal(signal.SIGTERM, _terminate_like_ctrl_c)


@pytest.fixture(scope="session")
def pg():
    server = PgServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def pg_tls():
    """A second PostgreSQL with ssl = on (see PgServer(ssl=True)), for the TLS tests."""
    server = PgServer(ssl=True)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def pgwarden_bin():
    path = os.environ.get("PGWARDEN_BIN", os.path.join(ROOT, "build", "pgwarden"))
    if not os.path.exists(path):
        pytest.fail(f"pgwarden binary not found at {path}; run make build")
    return path


class Result:
    def __init__(self, proc):
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    def json(self):
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError as e:
            raise AssertionError(f"not JSON ({e}):\nstdout={self.stdout!r}\nstderr={self.stderr!r}")


@pytest.fixture(scope="session")
def run_pgwarden(pgwarden_bin):
    """run_pgwarden(*args, env=None, timeout=60) -> Result with returncode/stdout/stderr/json()."""
    def run(*args, env=None, timeout=60):
        full_env = {k: v for k, v in os.environ.items()
                    if not k.startswith("PG") and k != "DATABASE_URL"}
        if env:
            full_env.update(env)
        proc = subprocess.run([pgwarden_bin, *args], capture_output=True, text=True,
                              env=full_env, timeout=timeout)
        return Result(proc)
    return run


@pytest.fixture
def unused_port():
    return free_port()


@pytest.fixture(scope="module")
def pgbench_db(pg):
    """The fixture's PostgreSQL with pgbench tables (scale 1) in database postgres."""
    return pg.pgbench_init()

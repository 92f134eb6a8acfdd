"""`monitor --watch D`: the report again every D over one connection, against the fixture's
PostgreSQL (inspect mode) and a running pgwarden (serve mode). In a pipe the reports follow one
another after a blank line, without terminal codes; with --format json each is one envelope
on a line of its own; on a terminal each redraw clears the screen and the cursor comes back
at the end. Ctrl-C ends it with exit code 0, a dropped connection is reconnected once, and
--watch on another action is refused with exit code 3."""
import contextlib
import json
import os
import pty
import select
import signal
import subprocess
import time

import pytest

from serve_helpers import Pooler, wait_for

HEADER = "Every 200ms: pgwarden monitor "


def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "DATABASE_URL"}
    env.update(extra or {})
    return env


@pytest.fixture
def pooler(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, settings={"admin_users": "postgres"}).start()
    try:
        yield p
    finally:
        p.stop()


def serve_target(p):
    return f"pgwarden://postgres@127.0.0.1:{p.port}"


@pytest.fixture(params=["inspect", "serve"])
def target(request, pg):
    """(mode, target string) for both modes; serve mode starts a pooler of its own."""
    if request.param == "inspect":
        yield "inspect", pg.dsn()
        return
    p = request.getfixturevalue("pooler")
    yield "serve", serve_target(p)


@contextlib.contextmanager
def watching(pgwarden_bin, *args, stdout=subprocess.PIPE):
    """A pgwarden run in the background, always stopped (by its pid) at the end."""
    proc = subprocess.Popen([pgwarden_bin, *args], stdout=stdout, stderr=subprocess.PIPE,
                            text=stdout == subprocess.PIPE, env=clean_env())
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()


def read_line(proc, timeout=15):
    """The next line of proc's stdout, or a failure after timeout seconds."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"no output within {timeout}s"
    line = proc.stdout.readline()
    assert line, f"stdout closed; exit {proc.poll()}, stderr {proc.stderr.read()!r}"
    return line


def check_envelope(doc, mode):
    assert doc["action"] == "monitor"
    assert doc["success"] is True, doc["error"]
    assert doc["error"] is None and isinstance(doc["data"], dict)
    assert doc["target"]["mode"] == mode, doc["target"]
    assert doc["timestamp"].endswith("Z")
    assert isinstance(doc["duration_ms"], (int, float))
    assert "connections" in doc["data"] and "throughput" in doc["data"]


def test_watch_prints_count_reports_one_after_another(run_pgwarden, target):
    mode, t = target
    r = run_pgwarden("monitor", "--target", t, "--watch", "200ms", "--count", "3",
                     "--interval", "200ms")
    assert r.returncode in (0, 1, 2), (r.stdout, r.stderr)
    assert "\x1b" not in r.stdout, r.stdout  # not a terminal: no screen codes
    lines = r.stdout.splitlines()
    headers = [i for i, line in enumerate(lines) if line.startswith(HEADER)]
    assert len(headers) == 3, r.stdout
    assert headers[0] == 0, r.stdout
    for i in headers[1:]:
        assert lines[i - 1] == "", r.stdout  # a blank line between reports
    for i in headers:
        assert f"({mode})" in lines[i], lines[i]
        assert "password" not in lines[i]
        verdict = lines[i + 1]
        assert verdict.split(":")[0] in ("OK", "WARNING", "CRITICAL"), verdict


def test_watch_json_is_one_envelope_per_line(run_pgwarden, target):
    mode, t = target
    started = time.monotonic()
    r = run_pgwarden("monitor", "--target", t, "--watch", "200ms", "--count", "3",
                     "--interval", "200ms", "--format", "json")
    assert r.returncode in (0, 1, 2), (r.stdout, r.stderr)
    lines = r.stdout.splitlines()
    assert len(lines) == 3, r.stdout
    docs = [json.loads(line) for line in lines]
    for doc in docs:
        check_envelope(doc, mode)
    # Every report has rates: the first from the baseline sample --interval before it, the
    # others from the report before them.
    for doc in docs:
        tp = doc["data"]["throughput"]
        assert tp["requests_per_sec"] is not None and tp["interval_s"] > 0, tp
    if mode == "inspect":
        # No extra waiting after the first: 200ms baseline + 2 more periods of 200ms.
        assert time.monotonic() - started < 10
        for doc in docs[1:]:
            assert 0.1 <= doc["data"]["throughput"]["interval_s"] <= 2.0, doc["data"]


def test_watch_on_another_action_is_refused(run_pgwarden, pg):
    r = run_pgwarden("detect-leaks", "--target", pg.dsn(), "--watch", "1s")
    assert r.returncode == 3
    assert "--watch" in r.stderr and "monitor" in r.stderr, r.stderr
    assert r.stdout == ""
    doc = run_pgwarden("detect-leaks", "--target", pg.dsn(), "--watch", "1s",
                       "--format", "json")
    assert doc.returncode == 3
    env = doc.json()
    assert env["success"] is False and env["error"]["code"] == "bad_input", env
    assert "--watch" in env["error"]["message"]


@pytest.mark.parametrize("args", [
    ["--watch", "fast"],
    ["--watch", "10ms"],
    ["--count", "3"],  # --count without --watch
    ["--watch", "1s", "--count", "0"],
    ["--watch", "1s", "--count", "x"],
])
def test_bad_watch_options_are_one_clear_error(run_pgwarden, pg, args):
    r = run_pgwarden("monitor", "--target", pg.dsn(), *args)
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert r.stderr.startswith("pgwarden monitor: ") and len(r.stderr.splitlines()) == 1


def test_sigint_ends_an_unlimited_watch_with_exit_0(pgwarden_bin, target):
    _, t = target
    with watching(pgwarden_bin, "monitor", "--target", t, "--watch", "200ms",
                  "--interval", "200ms", "--format", "json") as proc:
        json.loads(read_line(proc))
        json.loads(read_line(proc))
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        assert proc.wait(timeout=5) == 0, proc.stderr.read()
        assert time.monotonic() - started < 2.0
        for line in proc.stdout.read().splitlines():
            json.loads(line)  # nothing half-written


def test_terminal_redraws_in_place_and_gets_its_cursor_back(pgwarden_bin, pg):
    leader, follower = pty.openpty()
    try:
        with watching(pgwarden_bin, "monitor", "--target", pg.dsn(), "--watch", "200ms",
                      "--interval", "200ms", stdout=follower) as proc:
            os.close(follower)
            follower = None
            seen = b""
            deadline = time.monotonic() + 15
            while seen.count(b"\x1b[H\x1b[2J") < 2 and time.monotonic() < deadline:
                ready, _, _ = select.select([leader], [], [], 1)
                if ready:
                    seen += os.read(leader, 65536)
            assert seen.count(b"\x1b[H\x1b[2J") >= 2, seen
            assert b"\x1b[?25l" in seen  # cursor hidden while redrawing
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=5) == 0
            with contextlib.suppress(OSError):  # EIO once the writer is gone
                while select.select([leader], [], [], 0.5)[0]:
                    chunk = os.read(leader, 65536)
                    if not chunk:
                        break
                    seen += chunk
            assert seen.rstrip().endswith(b"\x1b[?25h"), seen[-200:]
            screen = seen.split(b"\x1b[H\x1b[2J")[1].decode()
            assert screen.startswith(HEADER), screen
    finally:
        os.close(leader)
        if follower is not None:
            os.close(follower)


def test_a_dropped_connection_is_reconnected_once(pgwarden_bin, pg):
    with watching(pgwarden_bin, "monitor", "--target", pg.dsn(), "--watch", "300ms",
                  "--interval", "200ms", "--count", "4", "--format", "json") as proc:
        check_envelope(json.loads(read_line(proc)), "inspect")
        pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'pgwarden-inspect'")
        for _ in range(3):
            check_envelope(json.loads(read_line(proc)), "inspect")
        assert proc.wait(timeout=10) in (0, 1, 2)
        err = proc.stderr.read()
        assert "reconnecting" in err and len(err.splitlines()) == 1, err


def test_a_pooler_that_goes_away_ends_the_watch_with_exit_3(pgwarden_bin, pooler):
    with watching(pgwarden_bin, "monitor", "--target", serve_target(pooler), "--watch",
                  "200ms", "--interval", "200ms") as proc:
        wait_for(lambda: read_line(proc).startswith(HEADER), what="the first report")
        pooler.stop()
        assert proc.wait(timeout=20) == 3
        err = proc.stderr.read().splitlines()
        assert err and "reconnecting" in err[0], err
        assert err[-1].startswith("pgwarden monitor: "), err

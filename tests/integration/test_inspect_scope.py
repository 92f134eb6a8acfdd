"""Inspect mode: which sessions the manager analyses and which kill-idle may touch. A
superuser's session (initdb's postgres role has the REPLICATION attribute) idle in a
transaction is a leak like any other; full-analysis counts no idle-in-transaction session
detect-leaks cannot report; kill-idle spares pgwarden's own connections and the client
addresses given to --exclude-addr, and still protects superusers."""
import contextlib
import re
import time

import psycopg
import pytest

from test_inspect import live_pids, pid_of, sessions


@pytest.fixture(scope="module")
def repl_role(pg):
    """An ordinary (non-superuser) role with the REPLICATION attribute."""
    pg.psql("DROP ROLE IF EXISTS scope_repl; "
            "CREATE ROLE scope_repl LOGIN REPLICATION PASSWORD 'scope-pw'")
    return "scope_repl"


@pytest.fixture(scope="module")
def pool_role(pg):
    """A role of its own, so kill-idle runs filtered by it touch no other test's sessions."""
    pg.psql("DROP ROLE IF EXISTS scope_pool; CREATE ROLE scope_pool LOGIN PASSWORD 'pool-pw'")
    return "scope_pool"


def repl_session(pg, app, state):
    conn = psycopg.connect(pg.dsn(user="scope_repl", password="scope-pw",
                                  application_name=app), autocommit=True)
    if state == "idle_in_xact":
        conn.execute("BEGIN")
    conn.execute("SELECT 1")
    return conn


def detect_leaks(pg, run_pgwarden, app):
    r = run_pgwarden("detect-leaks", "-t", pg.dsn(user="monitor"), "-f", "json",
                     "--application", app, "--leak-hold-threshold", "1s", "--interval", "100ms")
    assert r.returncode in (0, 1, 2), r.stdout + r.stderr
    return r.json()["data"]


def test_superuser_idle_in_transaction_is_a_leak_suspect(pg, run_pgwarden):
    app = "scope-su-leak"
    with sessions(pg, [(app, "postgres", "idle_in_xact"), (app, "app_user", "idle_in_xact")]) \
            as conns:
        time.sleep(1.5)
        data = detect_leaks(pg, run_pgwarden, app)
        suspects = {s["pid"]: s for s in data["suspected_connections"]}
        assert pid_of(conns[0]) in suspects, data
        assert pid_of(conns[1]) in suspects, data
        assert suspects[pid_of(conns[0])]["user"] == "postgres"
        assert data["total_suspected"] == 2


def test_replication_attribute_makes_no_session_special(pg, run_pgwarden, repl_role):
    app = "scope-repl-role"
    conns = [repl_session(pg, app, "idle_in_xact"), repl_session(pg, app, "idle")]
    try:
        time.sleep(1.5)
        data = detect_leaks(pg, run_pgwarden, app)
        assert pid_of(conns[0]) in {s["pid"] for s in data["suspected_connections"]}, data
        # Not a superuser and not a walsender: kill-idle may plan both.
        r = run_pgwarden("kill-idle", "-t", pg.dsn(user="monitor"), "-f", "json",
                         "--application", app, "--idle-timeout", "1s",
                         "--leak-hold-threshold", "1s", "--max-kill-percentage", "100%")
        results = {a["pid"]: a["result"] for a in r.json()["data"]["actions"]}
        assert results == {pid_of(c): "planned" for c in conns}, r.stdout
    finally:
        for c in conns:
            c.close()


def test_full_analysis_counts_no_more_idle_in_transaction_than_detect_leaks(pg, run_pgwarden):
    app = "scope-full"
    specs = [(app, "postgres", "idle_in_xact"), (app, "app_user", "idle_in_xact"),
             (app, "app_user", "idle")]
    with sessions(pg, specs) as conns:
        time.sleep(1.5)
        r = run_pgwarden("full-analysis", "-t", pg.dsn(user="monitor"), "-f", "json",
                         "--application", app, "--leak-hold-threshold", "1s",
                         "--interval", "100ms")
        d = r.json()["data"]
        iit = [a for a in d["anomalies"] if a["code"] == "idle_in_transaction"]
        assert len(iit) == 1, d["anomalies"]
        counted = int(re.match(r"(\d+) sessions? idle in transaction", iit[0]["message"])[1])
        in_xact = [s for s in d["leaks"]["suspected_connections"]
                   if s["state"].startswith("idle in transaction")]
        assert counted == len(in_xact) == 2, (iit, in_xact)
        assert {s["pid"] for s in in_xact} == {pid_of(c) for c in conns[:2]}


def test_kill_idle_still_protects_superusers(pg, run_pgwarden):
    app = "scope-su-kill"
    with sessions(pg, [(app, "postgres", "idle"), (app, "app_user", "idle")]) as conns:
        time.sleep(1.3)
        r = run_pgwarden("kill-idle", "-t", pg.dsn(user="monitor"), "-f", "json",
                         "--application", app, "--idle-timeout", "1s",
                         "--max-kill-percentage", "100%", "--execute")
        by_pid = {a["pid"]: a for a in r.json()["data"]["actions"]}
        assert by_pid[pid_of(conns[0])]["result"] == "skipped_protected"
        assert "superuser" in by_pid[pid_of(conns[0])]["reason"]
        assert by_pid[pid_of(conns[1])]["result"] == "terminated"
        time.sleep(0.3)
        assert live_pids(pg, app) == {pid_of(conns[0])}


def test_kill_idle_never_plans_a_pgwarden_connection(pg, run_pgwarden):
    # A pooler's server connection marked the way the engine recognises pgwarden's own.
    with sessions(pg, [("pgwarden", "app_user", "idle")]) as conns:
        time.sleep(1.3)
        r = run_pgwarden("kill-idle", "-t", pg.dsn(user="monitor"), "-f", "json",
                         "--application", "pgwarden", "--user", "app_user",
                         "--idle-timeout", "1s", "--max-kill-percentage", "100%", "--execute")
        d = r.json()["data"]
        by_pid = {a["pid"]: a for a in d["actions"]}
        assert by_pid[pid_of(conns[0])]["result"] == "skipped_protected", d
        assert "pgwarden connection" in by_pid[pid_of(conns[0])]["reason"]
        assert d["killed"] == 0
        assert pid_of(conns[0]) in live_pids(pg, "pgwarden")


def test_kill_idle_exclude_addr_spares_another_poolers_connections(pg, run_pgwarden,
                                                                  pool_role):
    # Over TCP from 127.0.0.1 with an empty application_name, as PgBouncer's server
    # connections look after its reset query; one more session over the unix socket.
    tcp = [psycopg.connect(pg.dsn(user=pool_role, password="pool-pw"), autocommit=True)
           for _ in range(2)]
    unix = psycopg.connect(pg.socket_dsn(user=pool_role), autocommit=True)
    for c in tcp + [unix]:
        c.execute("SELECT 1")
    try:
        time.sleep(1.3)
        args = ["kill-idle", "-t", pg.dsn(user="monitor"), "-f", "json", "--user", pool_role,
                "--idle-timeout", "1s", "--max-kill-percentage", "100%"]
        plain = run_pgwarden(*args).json()["data"]
        planned = {a["pid"] for a in plain["actions"] if a["result"] == "planned"}
        assert planned == {pid_of(c) for c in tcp + [unix]}, plain

        r = run_pgwarden(*args, "--exclude-addr", "10.9.9.9,127.0.0.0/8", "--execute")
        assert r.returncode == 0, r.stdout
        by_pid = {a["pid"]: a for a in r.json()["data"]["actions"]}
        for c in tcp:
            assert by_pid[pid_of(c)]["result"] == "skipped_protected"
            assert "exclude_addr" in by_pid[pid_of(c)]["reason"]
        assert by_pid[pid_of(unix)]["result"] == "terminated"
        for c in tcp:
            c.execute("SELECT 1")  # still alive
    finally:
        for c in tcp + [unix]:
            with contextlib.suppress(Exception):
                c.close()


def test_kill_idle_exclude_app_matches_the_name_as_the_client_set_it(pg, run_pgwarden,
                                                                    pool_role):
    # pg_stat_activity shows an application_name cleaned (non-ASCII bytes replaced) and cut
    # to 63 bytes; an exclusion given as the application sets its name must still match.
    long_app = "scope-long-" + "x" * 70
    odd_app = "scope-caf\u00e9"
    names = [long_app, odd_app, "scope-plain"]
    conns = [psycopg.connect(pg.dsn(user=pool_role, password="pool-pw", application_name=n),
                             autocommit=True) for n in names]
    for c in conns:
        c.execute("SELECT 1")
    try:
        time.sleep(1.3)
        args = ["kill-idle", "-t", pg.dsn(user="monitor"), "-f", "json", "--user", pool_role,
                "--idle-timeout", "1s", "--max-kill-percentage", "100%"]
        # The --application filter given the full name finds the session too.
        found = run_pgwarden(*args, "--application", long_app).json()["data"]
        assert [a["pid"] for a in found["actions"]] == [pid_of(conns[0])], found

        r = run_pgwarden(*args, "--exclude-app", long_app, "--exclude-app", odd_app,
                         "--execute")
        assert r.returncode == 0, r.stdout
        by_pid = {a["pid"]: a for a in r.json()["data"]["actions"]}
        for c in conns[:2]:
            assert by_pid[pid_of(c)]["result"] == "skipped_protected", by_pid
            assert "exclude_app" in by_pid[pid_of(c)]["reason"]
        assert by_pid[pid_of(conns[2])]["result"] == "terminated"
        for c in conns[:2]:
            c.execute("SELECT 1")  # still alive
    finally:
        for c in conns:
            with contextlib.suppress(Exception):
                c.close()


@pytest.mark.parametrize("value", ["10.0.0.1/33", "not-an-address", "10.0.0.0/8,fe80::/200"])
def test_bad_exclude_addr_is_bad_input(pg, run_pgwarden, value):
    r = run_pgwarden("kill-idle", "-t", pg.dsn(), "-f", "json", "--exclude-addr", value)
    assert r.returncode == 3
    err = r.json()["error"]
    assert err["code"] == "bad_input"
    assert "exclude_addr" in err["message"] and "CIDR" in err["message"]


def test_interval_zero_takes_one_sample(pg, run_pgwarden):
    """--interval 0 means one sample and no rates, as docs/CLI.md says."""
    started = time.time()
    r = run_pgwarden("monitor", "-t", pg.dsn(), "-f", "json", "--interval", "0")
    assert r.returncode in (0, 1, 2), r.stdout
    doc = r.json()
    assert doc["success"] is True, doc
    assert doc["data"]["connections"]["total"] >= 1
    assert doc["data"]["throughput"]["requests_per_sec"] is None  # no second sample
    assert time.time() - started < 5

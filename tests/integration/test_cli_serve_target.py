"""Manager actions against a running pgwarden (`--target pgwarden://USER@HOST:PORT`): the CLI
reads the pooler's own snapshot through its admin console, so detect-leaks names a client
left idle in a transaction above healthy ones, monitor counts what the pool holds,
kill-idle --execute closes an idle client with KILL_CLIENT (an admin user only), and an
unreachable or refusing pooler is one clear sentence with exit code 3."""
import contextlib
import threading
import time

import psycopg
import pytest

from serve_helpers import Pooler, console_rows, wait_for

ACTIONS = ["monitor", "detect-leaks", "health-check", "auto-scale", "kill-idle",
           "full-analysis", "status"]


@pytest.fixture
def pooler(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg,
               settings={"admin_users": "postgres", "stats_users": "monitor",
                         "default_pool_size": "5"},
               manager={"leak_hold_threshold": "1s"}).start()
    try:
        yield p
    finally:
        p.stop()


def target(p, user="postgres", password=None, port=None):
    auth = user if password is None else f"{user}:{password}"
    return f"pgwarden://{auth}@127.0.0.1:{port or p.port}"


def snapshot_apps(p):
    """application -> state, as the pooler's manager sees its clients right now."""
    return {r["application"]: r["state"] for r in console_rows(p, "SHOW SNAPSHOT")}


@contextlib.contextmanager
def clients(p, idle=(), idle_in_xact=()):
    """Clients through the pooler: idle ones (autocommit, one query done) and ones left idle
    in a transaction (psycopg opens one and keeps it)."""
    conns = []
    try:
        for app in idle:
            c = psycopg.connect(p.dsn(application_name=app), autocommit=True)
            c.execute("SELECT 1")
            conns.append(c)
        for app in idle_in_xact:
            c = psycopg.connect(p.dsn(application_name=app))
            c.execute("SELECT 1")
            conns.append(c)
        yield conns
    finally:
        for c in conns:
            with contextlib.suppress(Exception):
                c.close()


def check_serve_envelope(doc, action, p):
    assert doc["action"] == action
    assert doc["success"] is True, doc["error"]
    assert doc["error"] is None and isinstance(doc["data"], dict)
    t = doc["target"]
    assert t["mode"] == "serve", t
    assert t["host"] == "127.0.0.1" and t["port"] == p.port, t
    assert t["database"] == "pgbouncer" and t["user"] == "postgres", t
    assert t["server_version"].startswith("pgwarden"), t


@pytest.mark.parametrize("action", ACTIONS)
def test_every_action_reads_a_running_pgwarden(pooler, run_pgwarden, action):
    with clients(pooler, idle=["plain-app"]):
        wait_for(lambda: "plain-app" in snapshot_apps(pooler), what="the client in SHOW SNAPSHOT")
        r = run_pgwarden(action, "--target", target(pooler), "--format", "json",
                         "--interval", "200ms")
        assert r.returncode in (0, 1, 2), (r.stdout, r.stderr)
        check_serve_envelope(r.json(), action, pooler)
        table = run_pgwarden(action, "--target", target(pooler), "--interval", "200ms")
        assert table.returncode == r.returncode or action in ("health-check", "full-analysis")
        first = table.stdout.splitlines()[0]
        assert first.split(":")[0] in ("OK", "WARNING", "CRITICAL", "HOLD", "GROW", "SHRINK",
                                       "DRY RUN"), first


def test_detect_leaks_names_the_idle_in_transaction_client(pooler, run_pgwarden):
    with clients(pooler, idle=["healthy-app"], idle_in_xact=["leaky-app"]):
        wait_for(lambda: snapshot_apps(pooler).get("leaky-app") == "idle in transaction",
                 what="the leaking client in SHOW SNAPSHOT")
        time.sleep(2.2)  # past leak_hold_threshold, and a manager snapshot that shows it
        # The CLI takes the pooler's own [manager] settings (leak_hold_threshold 1s) from
        # SHOW MANAGER: no option needed to judge the pool by the pooler's thresholds.
        r = run_pgwarden("detect-leaks", "--target", target(pooler),
                         "--format", "json", "--interval", "200ms")
        doc = r.json()
        check_serve_envelope(doc, "detect-leaks", pooler)
        data = doc["data"]
        assert data["detected"] is True and data["total_suspected"] >= 1, data
        worst = data["suspected_connections"][0]
        assert worst["application"] == "leaky-app", data
        assert worst["state"].startswith("idle in transaction"), worst
        assert worst["pid"] and worst["pid"] > 0 and worst["held_ms"] >= 1000, worst
        scores = {s["application"]: s["score"] for s in data["suspected_connections"]}
        assert scores.get("healthy-app", 0) < worst["score"], scores
        # docs/CLI.md: 1 when there are suspects, 2 at high risk.
        assert r.returncode == (2 if data["risk_level"] == "high" else 1), (r.returncode, data)

        table = run_pgwarden("detect-leaks", "--target", target(pooler),
                             "--leak-hold-threshold", "1s", "--interval", "100ms")
        assert table.returncode in (1, 2)
        assert table.stdout.split(":")[0] in ("WARNING", "CRITICAL"), table.stdout
        assert "leaky-app" in table.stdout.splitlines()[0], table.stdout


def test_monitor_counts_what_the_pooler_holds(pooler, run_pgwarden):
    def busy():
        with psycopg.connect(pooler.dsn(application_name="busy-app"), autocommit=True) as c:
            c.execute("SELECT pg_sleep(6)")

    with clients(pooler, idle=["idle-a", "idle-b"], idle_in_xact=["xact-app"]) as conns:
        for _ in range(3):  # requests the pooler counts, for the rates
            conns[0].execute("SELECT 1")
        th = threading.Thread(target=busy)
        th.start()
        try:
            wait_for(lambda: snapshot_apps(pooler).get("busy-app") == "active",
                     what="the busy client as active")
            r = run_pgwarden("monitor", "--target", target(pooler), "--format", "json",
                             "--interval", "300ms")
            doc = r.json()
            check_serve_envelope(doc, "monitor", pooler)
            data = doc["data"]
            got = data["connections"]
            assert got["total"] == 4, got
            assert got["active"] == 1 and got["idle"] == 2, got
            assert got["idle_in_transaction"] == 1 and got["waiting"] == 0, got
            assert got["max"] == 5, got  # the pool's size: one pool (postgres, postgres)
            apps = {a["application"]: a for a in data["by_application"]}
            assert set(apps) == {"idle-a", "idle-b", "xact-app", "busy-app"}, apps
            assert apps["busy-app"]["active"] == 1 and apps["xact-app"]["idle_in_transaction"] == 1
            states = {c["application"]: c["state"] for c in data["connection_list"]}
            assert states == {"idle-a": "idle", "idle-b": "idle",
                              "xact-app": "idle in transaction", "busy-app": "active"}, states
            # Two distinct manager snapshots: rates exist and cover a real interval.
            assert data["throughput"]["interval_s"] and data["throughput"]["interval_s"] > 0
            assert data["throughput"]["requests_per_sec"] is not None
            assert r.returncode == 0, data["utilization_pct"]  # 4 of 5 = 80%, not above it
            # The pool's own record, read from SHOW SNAPSHOT_POOLS.
            pools = data["pools"]
            assert len(pools) == 1 and pools[0]["database"] == "postgres", pools
            assert pools[0]["size"] == 5 and pools[0]["servers"]["active"] >= 1, pools
        finally:
            th.join(15)


def test_kill_idle_execute_closes_an_idle_client_with_kill_client(pooler, run_pgwarden):
    with clients(pooler, idle=["idle-victim"]) as (victim,):
        wait_for(lambda: "idle-victim" in snapshot_apps(pooler), what="the idle client")
        time.sleep(2.2)  # idle past --idle-timeout in a manager snapshot
        args = ["kill-idle", "--target", target(pooler), "--idle-timeout", "1s",
                "--max-kill-percentage", "100%", "--format", "json"]

        dry = run_pgwarden(*args)
        assert dry.returncode == 0, dry.stdout
        data = dry.json()["data"]
        assert data["dry_run"] is True and data["killed"] == 0, data
        assert [(a["application"], a["result"]) for a in data["actions"]] == \
            [("idle-victim", "planned")], data
        assert "idle-victim" in snapshot_apps(pooler)  # a dry run touches nothing

        # A stats user may read the console but not act: refused, nothing done.
        stats = run_pgwarden(*args[:2], target(pooler, user="monitor"), *args[3:],
                             "--execute", "--yes")
        assert stats.returncode == 4, (stats.stdout, stats.stderr)
        err = stats.json()["error"]
        assert err["code"] == "refused" and "admin_users" in err["message"], err
        assert "idle-victim" in snapshot_apps(pooler)

        r = run_pgwarden(*args, "--execute", "--yes")
        assert r.returncode == 0, (r.stdout, r.stderr)
        data = r.json()["data"]
        assert data["dry_run"] is False and data["killed"] == 1, data
        (action,) = data["actions"]
        assert action["application"] == "idle-victim" and action["result"] == "terminated", action
        with pytest.raises(psycopg.OperationalError):
            victim.execute("SELECT 1")
        wait_for(lambda: "idle-victim" not in snapshot_apps(pooler), what="the client gone")


def test_kill_idle_honours_the_poolers_own_exclusions(pgwarden_bin, pg, run_pgwarden):
    # An exclusion configured in the pooler's [manager] section is a protection: a CLI run
    # against that pooler adds it to its own (here --exclude-user) and spares the client.
    p = Pooler(pgwarden_bin, pg,
               settings={"admin_users": "postgres", "default_pool_size": "5"},
               manager={"exclude_app": "keep-me", "exclude_addr": "10.9.9.9"}).start()
    try:
        with clients(p, idle=["keep-me", "idle-victim"]) as (keep, victim):
            wait_for(lambda: {"keep-me", "idle-victim"} <= set(snapshot_apps(p)),
                     what="both idle clients")
            time.sleep(2.2)  # idle past --idle-timeout in a manager snapshot
            r = run_pgwarden("kill-idle", "--target", target(p), "--idle-timeout", "1s",
                             "--max-kill-percentage", "100%", "--exclude-user", "nobody",
                             "--format", "json", "--execute", "--yes")
            assert r.returncode == 0, (r.stdout, r.stderr)
            by_app = {a["application"]: a for a in r.json()["data"]["actions"]}
            assert by_app["keep-me"]["result"] == "skipped_protected", by_app
            assert "exclude_app" in by_app["keep-me"]["reason"]
            assert by_app["idle-victim"]["result"] == "terminated", by_app
            keep.execute("SELECT 1")  # still served
            with pytest.raises(psycopg.OperationalError):
                victim.execute("SELECT 1")
    finally:
        p.stop()


def test_kill_idle_spares_a_client_that_woke_up(pooler, run_pgwarden):
    """The plan is re-checked on a newer snapshot: a client that ran a query between the plan
    and the act keeps its connection."""
    with clients(pooler, idle=["sleepy-app"]) as (sleepy,):
        wait_for(lambda: "sleepy-app" in snapshot_apps(pooler), what="the idle client")
        time.sleep(2.2)
        result = {}

        def run():
            result["r"] = run_pgwarden(
                "kill-idle", "--target", target(pooler), "--idle-timeout", "1s",
                "--max-kill-percentage", "100%", "--format", "json", "--execute", "--yes",
                env={"PGWARDEN_TEST_PAUSE_BEFORE_EXECUTE_MS": "2500"})

        th = threading.Thread(target=run)
        th.start()
        time.sleep(0.7)  # inside the pause: planned already, not acted yet
        sleepy.execute("SELECT 1")
        th.join(30)
        data = result["r"].json()["data"]
        (action,) = data["actions"]
        assert action["result"] == "gone" and data["killed"] == 0, data
        assert sleepy.execute("SELECT 2").fetchone()[0] == 2


@pytest.mark.parametrize("action", ["status", "monitor", "detect-leaks", "kill-idle"])
def test_unreachable_pooler_is_exit_3_without_the_password(run_pgwarden, unused_port, action):
    t = f"pgwarden://postgres:S3cret-pw@127.0.0.1:{unused_port}"
    r = run_pgwarden(action, "--target", t, "--format", "json", "--interval", "100ms")
    assert r.returncode == 3, (r.stdout, r.stderr)
    doc = r.json()
    assert doc["success"] is False and doc["data"] is None
    assert doc["target"]["mode"] == "serve" and doc["target"]["port"] == unused_port
    assert doc["error"]["code"] == "connection_failed", doc["error"]
    message = doc["error"]["message"]
    assert f"pgwarden admin console at 127.0.0.1:{unused_port}" in message, message
    assert "\n" not in message
    table = run_pgwarden(action, "--target", t, "--interval", "100ms")
    assert table.returncode == 3
    assert table.stdout == "" and len(table.stderr.strip().splitlines()) == 1, table.stderr
    assert "admin console" in table.stderr
    for out in (r.stdout, r.stderr, table.stdout, table.stderr):
        assert "S3cret-pw" not in out


def test_user_without_console_access_is_exit_3(pooler, run_pgwarden):
    r = run_pgwarden("status", "--target", target(pooler, user="app_user", password="app-pw"),
                     "--format", "json")
    assert r.returncode == 3, (r.stdout, r.stderr)
    err = r.json()["error"]
    assert err["code"] == "auth_failed", err
    assert "not allowed to use the admin console" in err["message"], err
    assert "app-pw" not in r.stdout


def test_health_check_times_console_round_trips(pooler, run_pgwarden, unused_port):
    r = run_pgwarden("health-check", "--target", target(pooler), "--connections", "3",
                     "--format", "json")
    assert r.returncode == 0, (r.stdout, r.stderr)
    doc = r.json()
    check_serve_envelope(doc, "health-check", pooler)
    data = doc["data"]
    assert data["total_checked"] == 3 and data["healthy"] == 3, data
    assert all(c["connect_ms"] > 0 and c["query_ms"] > 0 for c in data["checks"]), data
    # Unreachable: still a report, every probe failed (as in inspect mode).
    down = run_pgwarden("health-check", "--target", f"pgwarden://postgres@127.0.0.1:{unused_port}",
                        "--connections", "2", "--format", "json")
    assert down.returncode == 2, down.stdout
    data = down.json()["data"]
    assert data["unhealthy"] == 2 and data["checks"][0]["error_class"] == "network", data


def test_malformed_target_is_bad_input(run_pgwarden):
    r = run_pgwarden("status", "--target", "pgwarden://postgres:pw@127.0.0.1:notaport",
                     "--format", "json")
    assert r.returncode == 3
    err = r.json()["error"]
    assert err["code"] == "bad_input" and "port" in err["message"], err
    assert ":pw@" not in r.stdout


def test_kill_idle_spares_a_walsender(pooler, run_pgwarden):
    """A replication client holds its walsender for life: read through the console, it is as
    protected as in the pooler's own manager (never planned, never closed)."""
    with clients(pooler, idle=["idle-victim"]) as (victim,):
        repl = psycopg.connect(pooler.dsn(replication="database", application_name="walsender-app"),
                               autocommit=True)
        try:
            assert repl.execute("IDENTIFY_SYSTEM").fetchone()[3] == "postgres"
            wait_for(lambda: {"idle-victim", "walsender-app"} <= set(snapshot_apps(pooler)),
                     what="both clients in SHOW SNAPSHOT")
            time.sleep(2.2)  # both idle past --idle-timeout in a manager snapshot
            r = run_pgwarden("kill-idle", "--target", target(pooler), "--idle-timeout", "1s",
                             "--max-kill-percentage", "100%", "--format", "json",
                             "--execute", "--yes")
            assert r.returncode == 0, (r.stdout, r.stderr)
            data = r.json()["data"]
            results = {a["application"]: (a["result"], a["reason"]) for a in data["actions"]}
            assert results["idle-victim"][0] == "terminated", data
            assert results["walsender-app"][0] == "skipped_protected", data
            assert "replication" in results["walsender-app"][1], data
            assert repl.execute("IDENTIFY_SYSTEM").fetchone()[3] == "postgres"
            # Nor is it a leak suspect for detect-leaks through the console.
            leaks = run_pgwarden("detect-leaks", "--target", target(pooler), "--format", "json",
                                 "--interval", "200ms", "--leak-hold-threshold", "1s")
            suspects = leaks.json()["data"]["suspected_connections"]
            assert all(s["application"] != "walsender-app" for s in suspects), suspects
        finally:
            repl.close()


def test_guarded_kill_client_spares_a_client_that_woke_up(pooler):
    """kill-idle --execute re-checks its plan on a snapshot up to a second old; the client may
    run something after it. KILL_CLIENT <id> <state_change_ms> <requests> (what SHOW SNAPSHOT
    printed) closes the client only while it is still as seen, checked in the loop turn that
    closes it: 55000 otherwise, 42704 for a client that left, 42601 for a malformed guard."""
    p = pooler
    with clients(p, idle=["sleeper"]) as (c,):
        seen = wait_for(lambda: [r for r in console_rows(p, "SHOW SNAPSHOT")
                                 if r["application"] == "sleeper"], what="the client seen")[0]
        c.execute("SELECT 2")  # wakes up after the snapshot
        with psycopg.connect(p.dsn("postgres", "pgbouncer", password=""),
                             autocommit=True) as con:
            def kill(args):
                res = con.pgconn.exec_(f"KILL_CLIENT {args}".encode())
                return res.error_field(psycopg.pq.DiagnosticField.SQLSTATE)

            stale = f"{seen['id']} {seen['state_change_ms']} {seen['requests']}"
            assert kill(stale) == b"55000"
            assert c.execute("SELECT 3").fetchone()[0] == 3  # spared
            fresh = wait_for(lambda: [r for r in console_rows(p, "SHOW SNAPSHOT")
                                      if r["application"] == "sleeper" and
                                      r["requests"] != seen["requests"] and
                                      r["state"] == "idle"], what="a newer snapshot")[0]
            # A snapshot may be older than the client's last request: read it again then.
            for _ in range(20):
                got = kill(f"{fresh['id']} {fresh['state_change_ms']} {fresh['requests']}")
                if got is None:
                    break
                assert got == b"55000"
                time.sleep(1.1)
                fresh = [r for r in console_rows(p, "SHOW SNAPSHOT")
                         if r["application"] == "sleeper"][0]
            assert got is None
            with pytest.raises(psycopg.OperationalError):
                c.execute("SELECT 4")
            assert kill(f"{fresh['id']} {fresh['state_change_ms']} {fresh['requests']}") == \
                b"42704"
            assert kill(f"{fresh['id']} 12") == b"42601"
            assert kill("999999") == b"08P01"  # PgBouncer's plain form keeps its code


def test_a_platform_name_exempts_no_pooled_client(pooler, run_pgwarden):
    """Through the pooler a client's application_name is its own choice: naming itself like a
    platform service (PostgREST, pgwarden-...) must not spare it in the CLI's plan against the
    pooler, which follows the pooler's own rule (snapshot_is_infrastructure: roles only)."""
    names = ["PostgREST-12", "pgwarden-fake", "plain-app"]
    with clients(pooler, idle=names):
        wait_for(lambda: set(names) <= set(snapshot_apps(pooler)), what="the idle clients")
        time.sleep(2.2)  # idle past --idle-timeout in a manager snapshot
        r = run_pgwarden("kill-idle", "--target", target(pooler), "--idle-timeout", "1s",
                         "--max-kill-percentage", "100%", "--format", "json")
        assert r.returncode == 0, (r.stdout, r.stderr)
        results = {a["application"]: a["result"] for a in r.json()["data"]["actions"]}
        assert all(results.get(n) == "planned" for n in names), results

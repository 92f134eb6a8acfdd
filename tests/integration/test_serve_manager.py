"""The live manager inside `pgwarden serve`, against a real PostgreSQL: clients left idle in a
transaction are named by SHOW LEAKS above healthy clients and logged once; with
leak_reclaim = rollback their servers go back to the pool so waiting clients proceed, and the
leaking client gets an error on its next statement (not a hang), then works again; every
step is an event."""
import contextlib
import signal
import threading
import time

import psycopg
import pytest

from serve_helpers import CancelHoldingProxy, Pooler, console_rows, wait_for


@contextlib.contextmanager
def sleeping_load(pooler, clients, sleep_s):
    """`clients` connections running SELECT pg_sleep(sleep_s) in a loop through the pooler
    while the block runs: they queue on a small pool."""
    stop = threading.Event()

    def worker():
        with psycopg.connect(pooler.dsn(), autocommit=True) as c:
            while not stop.is_set():
                c.execute(f"SELECT pg_sleep({sleep_s})")

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        stop.set()
        for t in threads:
            t.join(30)


def start(pgwarden_bin, pg, reclaim="off", pool_size="1", mode="transaction"):
    return Pooler(pgwarden_bin, pg, pool_mode=mode,
                  settings={"default_pool_size": str(pool_size), "query_wait_timeout": "60",
                            "admin_users": "postgres"},
                  manager={"leak_hold_threshold": "1s", "leak_reclaim": reclaim}).start()


def test_show_leaks_names_idle_in_transaction_client(pgwarden_bin, pg):
    p = start(pgwarden_bin, pg, pool_size="3")
    try:
        with psycopg.connect(p.dsn(application_name="leaky-app")) as leaker, \
                psycopg.connect(p.dsn(application_name="healthy-app"), autocommit=True) as ok:
            leaker.execute("SELECT 1")  # psycopg opens a transaction and leaves it open
            ok.execute("SELECT 1")
            leaks = wait_for(lambda: [r for r in console_rows(p, "SHOW LEAKS")
                                      if r["application"] == "leaky-app"],
                             what="the leaking client in SHOW LEAKS")
            row = leaks[0]
            assert row["state"].startswith("idle in transaction"), row
            assert int(row["score"]) >= 30 and int(row["pid"]) > 0, row
            assert row["reclaim"] == "off"
            names = [r["application"] for r in console_rows(p, "SHOW LEAKS")]
            assert "healthy-app" not in names
            events = console_rows(p, "SHOW EVENTS")
            suspected = [e for e in events if e["event"] == "leak_suspected"]
            assert len(suspected) == 1, events
            assert suspected[0]["client"] == row["client"]
            # Logged once, with the address, application, user, database and backend pid.
            time.sleep(1.5)
            log = p.log()
            lines = [ln for ln in log.splitlines() if "leak_suspected" in ln]
            assert len(lines) == 1, lines
            assert "leaky-app" in lines[0] and row["pid"] in lines[0], lines
            # The leaking client is still untouched: reclaim is off by default.
            assert leaker.execute("SELECT 2").fetchone()[0] == 2
            leaker.commit()
            # Active again: the event that clears it names it as the one that suspected it.
            cleared = wait_for(lambda: [e for e in console_rows(p, "SHOW EVENTS")
                                        if e["event"] == "leak_cleared"],
                               what="a leak_cleared event")
            assert cleared[0]["client"] == row["client"], cleared
            assert (cleared[0]["database"], cleared[0]["user"]) == ("postgres", "postgres"), \
                cleared
            assert "active again" in cleared[0]["reason"], cleared
            line = [ln for ln in p.log().splitlines() if "leak_cleared" in ln][0]
            assert "leaky-app" in line and "postgres/postgres" in line, line
    finally:
        p.stop()


def test_rollback_reclaim_frees_server_for_waiting_client(pgwarden_bin, pg):
    pg.psql("DROP TABLE IF EXISTS reclaim_t; CREATE TABLE reclaim_t (n int)")
    p = start(pgwarden_bin, pg, reclaim="rollback", pool_size="1")
    try:
        leaker = psycopg.connect(p.dsn(application_name="leaky-app"))
        leaker.execute("INSERT INTO reclaim_t VALUES (1)")  # left open, holding the only server
        result = {}

        def waiter():
            t0 = time.time()
            with psycopg.connect(p.dsn(application_name="waiter"), autocommit=True) as c:
                result["value"] = c.execute("SELECT 42").fetchone()[0]
            result["waited"] = time.time() - t0

        th = threading.Thread(target=waiter)
        th.start()
        th.join(30)
        assert result.get("value") == 42, "the waiting client should get the reclaimed server"
        # The leaking client's next statement fails with the reason, then it works again.
        with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout) as e:
            leaker.execute("SELECT 1")
        assert "rolled back" in str(e.value)
        leaker.rollback()
        assert leaker.execute("SELECT 7").fetchone()[0] == 7
        leaker.close()
        # Its insert was rolled back.
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            assert c.execute("SELECT count(*) FROM reclaim_t").fetchone()[0] == 0
        kinds = [e["event"] for e in console_rows(p, "SHOW EVENTS")]
        assert "leak_suspected" in kinds and "reclaim_notice" in kinds, kinds
        assert "reclaim_rollback" in kinds, kinds
        assert kinds.index("reclaim_notice") < kinds.index("reclaim_rollback")
    finally:
        p.stop()


def test_repeat_leaker_is_disconnected_in_session_mode(pgwarden_bin, pg):
    """Steps continue where they stopped when the same client leaks again: notice, rollback,
    then (leaking once more) disconnect."""
    p = start(pgwarden_bin, pg, reclaim="disconnect", pool_size="1", mode="session")
    try:
        leaker = psycopg.connect(p.dsn(application_name="leaky-app"))
        leaker.execute("SELECT 1")
        wait_for(lambda: any(e["event"] == "reclaim_rollback"
                             for e in console_rows(p, "SHOW EVENTS")),
                 timeout=20, what="the rollback step")
        with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):
            leaker.execute("SELECT 1")
        leaker.rollback()
        leaker.execute("SELECT 1")  # and leaks again
        wait_for(lambda: any(e["event"] == "reclaim_disconnect"
                             for e in console_rows(p, "SHOW EVENTS")),
                 timeout=20, what="the disconnect step")
        with pytest.raises(psycopg.OperationalError):
            leaker.execute("SELECT 1")
        leaker.close()
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            assert c.execute("SELECT 1").fetchone()[0] == 1
        kinds = [e["event"] for e in console_rows(p, "SHOW EVENTS")]
        assert kinds.count("reclaim_notice") == 1, kinds
    finally:
        p.stop()


def test_bad_leak_reclaim_value_is_refused(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, manager={"leak_reclaim": "maybe"})
    with pytest.raises(RuntimeError) as e:
        p.start()
    assert "leak_reclaim" in str(e.value)


def test_pool_grows_under_queueing_and_shrinks_back(pgwarden_bin, pg):
    """A pool configured with 1 server and [manager] max_pool_size 4 grows while clients
    queue, never above 4, and shrinks back to 1 after the load stops; each resize is an event
    that carries the engine's arithmetic."""
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               settings={"default_pool_size": "1", "query_wait_timeout": "60",
                         "admin_users": "postgres"},
               manager={"max_pool_size": "4", "interval": "500ms", "shrink_rate": "100%",
                        "growth_rate": "100%"}).start()
    try:
        peak = {"servers": 0}
        with sleeping_load(p, 6, 0.2):
            def grown():
                row = [r for r in console_rows(p, "SHOW SCALING")
                       if r["database"] == "postgres" and r["user"] == "postgres"]
                if row:
                    peak["servers"] = max(peak["servers"], int(row[0]["servers"]))
                    assert int(row[0]["size"]) <= 4 and int(row[0]["servers"]) <= 4, row
                return row and int(row[0]["size"]) == 4
            wait_for(grown, timeout=30, what="the pool to grow to max_pool_size")
            time.sleep(2)
            grown()
        assert peak["servers"] <= 4
        row = wait_for(lambda: [r for r in console_rows(p, "SHOW SCALING")
                                if r["database"] == "postgres" and int(r["size"]) == 1],
                       timeout=30, what="the pool to shrink back")
        assert row[0]["configured"] == "1" and row[0]["max"] == "4"
        events = console_rows(p, "SHOW EVENTS")
        grows = [e for e in events if e["event"] == "scale_grow"]
        shrinks = [e for e in events if e["event"] == "scale_shrink"]
        assert grows and shrinks, events
        assert all(int(e["after"]) <= 4 for e in grows)
        assert "queued" in grows[0]["reason"] or "busy" in grows[0]["reason"]
        assert int(shrinks[-1]["after"]) == 1
        # Idle servers above the new size were closed.
        wait_for(lambda: [r for r in console_rows(p, "SHOW SCALING")
                          if r["database"] == "postgres" and int(r["servers"]) <= 1],
                 timeout=15, what="extra servers to close")
    finally:
        p.stop()


def test_turning_auto_scaling_off_restores_the_configured_size(pgwarden_bin, pg):
    """A pool auto-scaling grew goes back to its configured size when a RELOAD turns
    auto_scaling off, as a restart would give it, even while its clients still queue; the
    event says why."""
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               settings={"default_pool_size": "1", "query_wait_timeout": "60",
                         "admin_users": "postgres"},
               manager={"max_pool_size": "4", "interval": "500ms", "growth_rate": "100%"}).start()
    try:
        def size():
            rows = [r for r in console_rows(p, "SHOW SCALING")
                    if r["database"] == "postgres" and r["user"] == "postgres"]
            return int(rows[0]["size"]) if rows else 0
        with sleeping_load(p, 6, 0.2):
            wait_for(lambda: size() == 4, timeout=30, what="the pool to grow")
            p.manager["auto_scaling"] = "off"
            p.write_config()
            p.signal(signal.SIGHUP)
            wait_for(lambda: size() == 1, timeout=15, what="the configured size back")
            # Clients still queue: that now makes recommendations only.
            wait_for(lambda: [e for e in console_rows(p, "SHOW EVENTS")
                              if e["event"] == "scale_recommend"],
                     timeout=30, what="a scale_recommend event")
            assert size() == 1
        events = console_rows(p, "SHOW EVENTS")
        back = [e for e in events if "auto_scaling turned off" in e["reason"]]
        assert back and back[-1]["event"] == "scale_shrink" and back[-1]["after"] == "1", events
    finally:
        p.stop()


def test_lowered_max_pool_size_applies_at_the_first_decision(pgwarden_bin, pg):
    """A RELOAD that lowers [manager] max_pool_size below a grown pool's size brings the pool
    back under the new bound at the first decision that sees it, while clients still queue:
    a bound is not a load signal to confirm over ten intervals first."""
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               settings={"default_pool_size": "1", "query_wait_timeout": "60",
                         "admin_users": "postgres"},
               manager={"max_pool_size": "5", "interval": "500ms",
                        "growth_rate": "100%"}).start()
    try:
        def row():
            rows = [r for r in console_rows(p, "SHOW SCALING")
                    if r["database"] == "postgres" and r["user"] == "postgres"]
            return rows[0] if rows else None
        with sleeping_load(p, 8, 0.2):
            wait_for(lambda: row() and int(row()["size"]) == 5, timeout=30,
                     what="the pool to grow to max_pool_size")
            p.manager["max_pool_size"] = "2"
            p.write_config()
            p.signal(signal.SIGHUP)
            first = wait_for(lambda: (r := row()) and r["max"] == "2" and r,
                             timeout=15, what="a decision under the new bound")
            assert int(first["size"]) <= 2, first
            assert first["applied"] == "yes" and first["decision"] == "shrink", first
            wait_for(lambda: int(row()["servers"]) <= 2, timeout=15,
                     what="servers above the new bound to close")
            assert int(row()["size"]) <= 2
        shrink = [e for e in console_rows(p, "SHOW EVENTS") if e["event"] == "scale_shrink"]
        assert shrink and shrink[-1]["after"] == "2", shrink
    finally:
        p.stop()


def test_repeated_auto_scale_dry_run_records_a_recommendation_once(pgwarden_bin, pg):
    """AUTO_SCALE DRY RUN is a read any stats user may repeat in a loop: the same
    recommendation for the same pool is recorded (and logged) once, so a loop cannot push the
    other events out of SHOW EVENTS; a different one is recorded again."""
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               settings={"default_pool_size": "4", "admin_users": "postgres",
                         "stats_users": "monitor"},
               manager={"min_pool_size": "1", "leak_hold_threshold": "1s",
                        "interval": "60s"}).start()  # no periodic resize meanwhile
    try:
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            c.execute("SELECT 1")  # the pool exists, idle: the engine would shrink it
        leaker = psycopg.connect(p.dsn(application_name="leaky-app"))
        leaker.execute("SELECT 1")
        wait_for(lambda: [e for e in console_rows(p, "SHOW EVENTS")
                          if e["event"] == "leak_suspected"], what="a leak_suspected event")
        for _ in range(30):
            rows = console_rows(p, "AUTO_SCALE DRY RUN", user="monitor")
            row = [r for r in rows if r["database"] == "postgres" and r["user"] == "postgres"]
            assert row and int(row[0]["target"]) < 4 and row[0]["applied"] == "no", rows
        events = console_rows(p, "SHOW EVENTS")
        recommend = [e for e in events if e["event"] == "scale_recommend"
                     and e["database"] == "postgres" and e["user"] == "postgres"]
        assert len(recommend) == 1, recommend
        assert recommend[0]["before"] == "4" and recommend[0]["after"] == row[0]["target"], \
            recommend
        assert [e for e in events if e["event"] == "leak_suspected"], events
        log = p.log()
        assert log.count("scale_recommend: pool postgres/postgres") == 1, log[-3000:]
        leaker.close()
    finally:
        p.stop()


def test_without_bounds_pool_keeps_configured_size(pgwarden_bin, pg):
    """A PgBouncer config alone never resizes: queueing clients on a pool of 1 stay queued."""
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               settings={"default_pool_size": "1", "admin_users": "postgres"}).start()
    try:
        with sleeping_load(p, 3, 0.1):
            time.sleep(4)
            rows = [r for r in console_rows(p, "SHOW SCALING") if r["database"] == "postgres"]
        assert rows and rows[0]["size"] == "1" and rows[0]["max"] == "1", rows
        assert int(rows[0]["servers"]) <= 1
        assert not [e for e in console_rows(p, "SHOW EVENTS") if e["event"].startswith("scale")]
    finally:
        p.stop()


def test_background_probe_replaces_killed_idle_server(pgwarden_bin, pg):
    """A server connection terminated while idle in the pool is found by the background
    health check (or its own socket) and replaced, before any client gets it; SHOW HEALTH
    reports probes with latencies."""
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               settings={"default_pool_size": "2", "min_pool_size": "2",
                         "admin_users": "postgres"},
               manager={"health_check_interval": "1s"}).start()
    try:
        def backends():
            out = pg.psql("SELECT pid FROM pg_stat_activity WHERE usename = 'postgres' "
                          "AND datname = 'postgres' AND pid <> pg_backend_pid() "
                          "AND backend_type = 'client backend'")
            return [int(x) for x in out.split()]
        # A connected client keeps min_pool_size servers open (as in PgBouncer).
        holder = psycopg.connect(p.dsn(), autocommit=True)
        holder.execute("SELECT 1")
        before = wait_for(lambda: len(backends()) >= 2 and backends(), what="min_pool_size")
        wait_for(lambda: [r for r in console_rows(p, "SHOW HEALTH")
                          if r["database"] == "postgres" and int(r["probes"]) > 0],
                 what="background probes")
        victim = before[0]
        pg.psql(f"SELECT pg_terminate_backend({victim})")
        wait_for(lambda: victim not in backends() and len(backends()) >= 2,
                 what="the killed server to be replaced")
        # No client ever saw the dead server.
        for _ in range(6):
            with psycopg.connect(p.dsn(), autocommit=True) as c:
                assert c.execute("SELECT 1").fetchone()[0] == 1
        row = wait_for(lambda: [r for r in console_rows(p, "SHOW HEALTH")
                                if r["database"] == "postgres" and r["max_ms"]],
                       what="probe latencies")[0]
        assert row["status"] in ("ok", "warning"), row
        assert float(row["max_ms"]) >= 0
        holder.close()
    finally:
        p.stop()


def test_health_marks_unreachable_database_critical(pgwarden_bin, pg):
    from pgfixture import free_port
    dbs = {"gone": f"host=127.0.0.1 port={free_port()} dbname=postgres",
           "postgres": f"host={pg.socket_dir} port={pg.port} dbname=postgres"}
    p = Pooler(pgwarden_bin, pg, databases=dbs,
               settings={"admin_users": "postgres", "server_login_retry": "30"},
               manager={"health_check_interval": "1s"}).start()
    try:
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(p.dsn(dbname="gone"))
        row = wait_for(lambda: [r for r in console_rows(p, "SHOW HEALTH")
                                if r["database"] == "gone" and r["status"] == "critical"],
                       what="the unreachable database to be critical")
        assert "login" in row[0]["reason"]
        assert any(e["event"] == "health_changed" and e["database"] == "gone"
                   for e in console_rows(p, "SHOW EVENTS"))
    finally:
        p.stop()


def test_console_actions_kill_idle_health_check_auto_scale(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, pool_mode="session",
               settings={"default_pool_size": "4", "admin_users": "postgres",
                         "stats_users": "monitor"},
               manager={"idle_timeout": "1s", "max_kill_percentage": "100%",
                        "max_pool_size": "8"}).start()
    try:
        idle = [psycopg.connect(p.dsn(application_name=f"idle-{i}"), autocommit=True)
                for i in range(2)]
        for c in idle:
            c.execute("SELECT 1")
        busy = psycopg.connect(p.dsn(application_name="busy"), autocommit=True)
        time.sleep(2.2)
        busy.execute("SELECT 1")
        plan = console_rows(p, "KILL_IDLE DRY RUN", user="monitor")
        planned = {r["application"] for r in plan if r["result"] == "planned"}
        assert planned == {"idle-0", "idle-1"}, plan
        for c in idle:  # a dry run changes nothing
            assert c.execute("SELECT 2").fetchone()[0] == 2
        with pytest.raises(AssertionError):
            console_rows(p, "KILL_IDLE", user="monitor")  # stats users may not act
        time.sleep(2.2)
        busy.execute("SELECT 1")
        done = console_rows(p, "KILL_IDLE")
        assert {r["application"] for r in done if r["result"] == "terminated"} == \
            {"idle-0", "idle-1"}, done
        for c in idle:
            with pytest.raises(psycopg.OperationalError):
                c.execute("SELECT 1")
            c.close()
        assert busy.execute("SELECT 3").fetchone()[0] == 3
        kinds = [e["event"] for e in console_rows(p, "SHOW EVENTS")]
        assert kinds.count("kill_idle") == 2 and kinds.count("kill_idle_planned") == 2, kinds
        assert int(console_rows(p, "HEALTH_CHECK")[0]["probes_sent"]) >= 0
        rows = console_rows(p, "AUTO_SCALE DRY RUN", user="monitor")
        assert rows and rows[0]["applied"] == "no", rows
        busy.close()
    finally:
        p.stop()


def test_client_that_stops_reading_is_a_suspect(pgwarden_bin, pg):
    """A client that asks for a big result and never reads it holds its server; the manager
    names it (and, once a client waits for a server, the session-mode client holding an idle
    one) in SHOW LEAKS."""
    from serve_helpers import login_raw, query_msg
    p = start(pgwarden_bin, pg, pool_size="2", mode="session")
    try:
        slow = login_raw(p)
        slow.setsockopt(__import__("socket").SOL_SOCKET, __import__("socket").SO_RCVBUF, 4096)
        slow.sendall(query_msg("SELECT repeat('x', 1000) FROM generate_series(1, 200000)"))
        holder = psycopg.connect(p.dsn(application_name="idle-holder"), autocommit=True)
        holder.execute("SELECT 1")
        rows = wait_for(lambda: [r for r in console_rows(p, "SHOW LEAKS")
                                 if "has not read its results" in r["reason"]],
                        timeout=20, what="the client that stopped reading")
        assert int(rows[0]["pid"]) > 0
        waiter = threading.Thread(target=lambda: psycopg.connect(
            p.dsn(application_name="waiter"), autocommit=True).execute("SELECT 1").close())
        waiter.start()  # both servers are held: it queues
        wait_for(lambda: [r for r in console_rows(p, "SHOW LEAKS")
                          if r["application"] == "idle-holder"
                          and "without traffic" in r["reason"]],
                 timeout=20, what="the session client holding an idle server")
        slow.close()
        holder.close()
        waiter.join(30)
    finally:
        p.stop()


def test_idle_session_clients_are_not_leaks_until_others_wait(pgwarden_bin, pg):
    """In session pooling a client keeps its server between transactions by design: a LISTEN
    client idle far past leak_hold_threshold is no leak suspect and leak_reclaim leaves it
    alone (it still gets its notifications). Once another client of the pool waits for a
    server, the held one is denied to it: then it is a suspect and is reclaimed."""
    p = Pooler(pgwarden_bin, pg, pool_mode="session",
               settings={"default_pool_size": "1", "query_wait_timeout": "60",
                         "admin_users": "postgres"},
               manager={"leak_hold_threshold": "1s", "leak_reclaim": "disconnect"}).start()
    try:
        listener = psycopg.connect(p.dsn(application_name="listener"), autocommit=True)
        listener.execute("LISTEN jobs")

        def idle_s():
            rows = [r for r in console_rows(p, "SHOW SNAPSHOT")
                    if r["application"] == "listener"]
            return rows and (int(rows[0]["taken_ms"]) - int(rows[0]["state_change_ms"])) / 1000
        wait_for(lambda: (idle_s() or 0) >= 4, timeout=30,
                 what="the listener idle for 4x leak_hold_threshold")
        assert not [r for r in console_rows(p, "SHOW LEAKS") if r["application"] == "listener"]
        events = console_rows(p, "SHOW EVENTS")
        assert not [e for e in events if e["event"].startswith(("leak_", "reclaim_"))], events
        got = []
        listener.add_notify_handler(lambda n: got.append(n.payload))
        pg.psql("NOTIFY jobs, 'hello'")
        wait_for(lambda: listener.execute("SELECT 1") and got, what="the notification")
        assert got == ["hello"]
        # A client now waits for the only server: the listener is reclaimed for it.
        result = {}

        def waiter():
            with psycopg.connect(p.dsn(application_name="waiter"), autocommit=True) as c:
                result["value"] = c.execute("SELECT 42").fetchone()[0]
        th = threading.Thread(target=waiter)
        th.start()
        th.join(30)
        assert result.get("value") == 42
        kinds = [e["event"] for e in console_rows(p, "SHOW EVENTS")]
        assert "leak_suspected" in kinds and "reclaim_disconnect" in kinds, kinds
        listener.close()
    finally:
        p.stop()


def test_server_usable_slots_are_read_and_bound_growth(pgwarden_bin, pg):
    """The pooler reads the server's usable slots (max_connections minus reserved) at a server
    login, for auto-scaling's fair-share bound (the bound itself: test_manager_autoscale)."""
    expected = int(pg.psql(
        "SELECT current_setting('max_connections')::int"
        " - current_setting('superuser_reserved_connections')::int"
        " - coalesce(current_setting('reserved_connections', true)::int, 0)"))
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               settings={"default_pool_size": "1", "admin_users": "postgres"},
               manager={"max_pool_size": "100000"}).start()
    try:
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            c.execute("SELECT 1")
            row = wait_for(lambda: [r for r in console_rows(p, "AUTO_SCALE DRY RUN")
                                    if r["database"] == "postgres" and r["server_slots"] != "0"],
                           what="the server's slots")[0]
            assert int(row["server_slots"]) == expected, (row, expected)
            assert int(row["max"]) == 100000
    finally:
        p.stop()


def test_hold_far_above_application_usual_is_a_suspect(pgwarden_bin, pg):
    """An application whose transactions take milliseconds: one of its clients idle in a
    transaction for a few seconds is a suspect long before leak_hold_threshold (60 s here),
    with the usual hold in the reason; the manager learned it from the pool's traffic."""
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               settings={"default_pool_size": "3", "admin_users": "postgres"},
               manager={"leak_hold_threshold": "60s"}).start()
    try:
        with psycopg.connect(p.dsn(application_name="web"), autocommit=True) as busy, \
                psycopg.connect(p.dsn(application_name="web")) as leaker:
            def learned():
                for _ in range(30):
                    busy.execute("SELECT 1")
                rows = [r for r in console_rows(p, "SHOW SNAPSHOT") if r["application"] == "web"]
                return all(int(r["app_usual_hold_ms"]) > 0 for r in rows) and rows
            rows = wait_for(learned, what="the usual hold of application web")
            usual = int(rows[0]["app_usual_hold_ms"])
            assert 1 <= usual < 100, rows
            leaker.execute("SELECT 1")  # opens a transaction and leaves it open
            leaks = wait_for(lambda: [r for r in console_rows(p, "SHOW LEAKS")
                                      if "usually holds" in r["reason"]],
                             what="the long hold in SHOW LEAKS", timeout=15)
            assert leaks[0]["application"] == "web", leaks
            assert int(leaks[0]["idle_s"]) < 60, leaks
            assert "what application 'web' usually holds" in leaks[0]["reason"], leaks
            # The busy client of the same application is not a suspect.
            assert len(leaks) == 1, leaks
    finally:
        p.stop()


def test_show_analysis_sizes_queued_pool_and_suggests_timeouts(pgwarden_bin, pg):
    """A pool of 1 with 4 clients running 50 ms queries: the manager's per-pool record shows
    the queueing (p99 wait, rates from the last stats period), and SHOW ANALYSIS recommends
    a pool size by Little's law from those numbers, and an idle_transaction_timeout from the
    observed transaction times (it is off)."""
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               settings={"default_pool_size": "1", "admin_users": "postgres",
                         "stats_period": "1", "query_wait_timeout": "60"}).start()
    try:
        with sleeping_load(p, clients=4, sleep_s=0.05):
            def queued():
                rows = console_rows(p, "SHOW SNAPSHOT_POOLS")
                row = [r for r in rows if r["database"] == "postgres"]
                return row and float(row[0]["wait_p99_ms"]) > 10 \
                    and float(row[0]["xacts_per_sec"]) > 1 and row[0]
            pool = wait_for(queued, what="queueing in SHOW SNAPSHOT_POOLS", timeout=20)
            assert pool["pool_mode"] == "transaction" and int(pool["size"]) == 1, pool
            assert float(pool["avg_xact_ms"]) >= 40, pool
            assert float(pool["wait_max_ms"]) >= float(pool["wait_p95_ms"]) * 0.5, pool
            assert int(pool["query_wait_timeout_ms"]) == 60000, pool

            def recommended():
                rows = console_rows(p, "SHOW ANALYSIS")
                return [r for r in rows if r["setting"].startswith("pool_size =")] and rows
            rows = wait_for(recommended, what="a pool_size recommendation", timeout=20)
        status = [r for r in rows if r["kind"] == "status"]
        assert len(status) == 1 and status[0]["severity"] in ("ok", "warning", "critical")
        size = [r for r in rows if r["setting"].startswith("pool_size =")][0]
        assert int(size["setting"].split("=")[1]) >= 2, size
        assert "Little's law" in size["message"] and "postgres/" in size["message"], size
        idle = [r for r in rows if r["setting"].startswith("idle_transaction_timeout =")]
        assert idle and int(idle[0]["setting"].split("=")[1]) >= 1, rows
    finally:
        p.stop()


def test_show_analysis_session_pool_that_would_fit_transaction_mode(pgwarden_bin, pg):
    """Session pooling with 3 clients that each hold a server and query rarely: SHOW ANALYSIS
    suggests transaction pooling, with the busy share it measured."""
    p = Pooler(pgwarden_bin, pg, pool_mode="session",
               settings={"default_pool_size": "5", "admin_users": "postgres",
                         "stats_period": "1"}).start()
    try:
        conns = [psycopg.connect(p.dsn(), autocommit=True) for _ in range(3)]
        try:
            def suggested():
                for c in conns:
                    c.execute("SELECT 1")
                rows = console_rows(p, "SHOW ANALYSIS")
                return [r for r in rows if r["setting"] == "pool_mode = transaction"]
            rec = wait_for(suggested, what="a pool_mode recommendation", timeout=20)[0]
            assert "session mode" in rec["message"] and "3 linked servers" in rec["message"], rec
            assert rec["severity"] == "ok"
            # Query time counts from each query, not from the start of the session.
            pool = [r for r in console_rows(p, "SHOW SNAPSHOT_POOLS")
                    if r["database"] == "postgres"][0]
            assert 0 <= float(pool["avg_query_ms"]) < 100, pool  # not the session's age
        finally:
            for c in conns:
                c.close()
    finally:
        p.stop()


def test_idle_pool_servers_are_named_pgwarden_and_spared_by_kill_idle(pgwarden_bin, pg,
                                                                       run_pgwarden):
    """A server idle in the pool is renamed 'pgwarden' by the background probe, so inspect
    mode's kill-idle (pointed at the same PostgreSQL) recognises it as pgwarden's own and
    never plans it; the next client still sees its own application_name."""
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               settings={"default_pool_size": "2", "admin_users": "postgres"},
               manager={"health_check_interval": "1s"}).start()
    try:
        with psycopg.connect(p.dsn(application_name="shop"), autocommit=True) as c:
            pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]

        def app_of(backend):
            return pg.psql(f"SELECT application_name FROM pg_stat_activity WHERE pid = {backend}")
        wait_for(lambda: app_of(pid).strip() == "pgwarden", what="the idle server renamed")
        r = run_pgwarden("kill-idle", "-t", pg.dsn(), "-f", "json", "--idle-timeout", "1s",
                         "--max-kill-percentage", "100%")
        actions = {a["pid"]: a for a in r.json()["data"]["actions"]}
        assert pid not in actions or actions[pid]["result"] == "skipped_protected", actions
        with psycopg.connect(p.dsn(application_name="shop"), autocommit=True) as c:
            again, name = c.execute("SELECT pg_backend_pid(), current_setting('application_name')"
                                    ).fetchone()
            assert name == "shop"
            assert c.info.parameter_status("application_name") == "shop"
        assert again == pid  # the same pooled server, named for its client while it has one
    finally:
        p.stop()


def test_rollback_reclaim_waits_for_a_cancel_in_flight(pgwarden_bin, pg):
    """The leaking client sent a cancel that has not reached PostgreSQL yet: the manager must
    not hand its server to a waiting client before it has, or the late cancel would stop that
    other client's query."""
    proxy = CancelHoldingProxy(pg, hold_s=4)
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               databases={"postgres": f"host=127.0.0.1 port={proxy.port} dbname=postgres"},
               settings={"default_pool_size": "1", "query_wait_timeout": "60",
                         "admin_users": "postgres"},
               manager={"leak_hold_threshold": "1s", "leak_reclaim": "rollback",
                        "auto_scaling": "off"}).start()
    try:
        leaker = psycopg.connect(p.dsn(application_name="leaky-app"))
        leaker.execute("SELECT 1")  # left open, holding the only server
        leaker.cancel()  # nothing runs: PostgreSQL ignores it, once it arrives
        result = {}

        def victim():
            with psycopg.connect(p.dsn(application_name="victim"), autocommit=True) as c:
                try:
                    result["value"] = c.execute("SELECT pg_sleep(3), 42").fetchone()[1]
                except psycopg.Error as e:
                    result["error"] = e
                result["done"] = time.time()

        th = threading.Thread(target=victim)
        th.start()
        th.join(40)
        assert "error" not in result, f"{result['error']!r}\n{p.log()}"
        assert result.get("value") == 42, p.log()
        assert proxy.delivered and proxy.delivered[0] < result["done"]
        kinds = [e["event"] for e in console_rows(p, "SHOW EVENTS")]
        assert "reclaim_rollback" in kinds, kinds
        leaker.close()
    finally:
        p.stop()
        proxy.close()


def test_auto_scale_never_shrinks_below_pgbouncer_min_pool_size(pgwarden_bin, pg):
    """[pgbouncer] min_pool_size promises that many open servers per pool; [manager]
    min_pool_size only says how far auto-scaling may shrink. A pool shrunk below the former
    would close the servers the operator asked to keep warm (and never open them again)."""
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               settings={"default_pool_size": "4", "min_pool_size": "3",
                         "admin_users": "postgres"},
               manager={"min_pool_size": "1", "shrink_rate": "100%"}).start()
    try:
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            c.execute("SELECT 1")

            def row():
                rows = [r for r in console_rows(p, "SHOW SCALING")
                        if r["database"] == "postgres" and r["user"] == "postgres"]
                return rows[0] if rows else None
            wait_for(lambda: row() and int(row()["servers"]) >= 3, what="min_pool_size servers")
            for _ in range(3):  # applied at once, without hysteresis
                console_rows(p, "AUTO_SCALE")
            time.sleep(1.5)  # the manager's next run closes idle servers above the size
            r = row()
            assert int(r["size"]) >= 3, r
            assert int(r["min"]) == 3, r
            assert int(r["servers"]) >= 3, r
            assert c.execute("SELECT 2").fetchone()[0] == 2
    finally:
        p.stop()


def test_filtered_out_clients_do_not_shrink_a_pool(pgwarden_bin, pg):
    """[manager] database/user/application narrow what the reports look at. A pool's clients
    that fall outside them are still the pooler's clients, not connections on the server: they
    take none of its slots, so they must not eat the pool's server budget (which shrank the
    pool, with enough of them to 0: every client then queued until query_wait_timeout)."""
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               settings={"default_pool_size": "3", "max_client_conn": "400",
                         "query_wait_timeout": "5", "admin_users": "postgres"},
               manager={"database": "appdb"}).start()
    conns = []
    try:
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            c.execute("SELECT 1")
        slots = int(wait_for(lambda: [r for r in console_rows(p, "SHOW SCALING")
                                      if r["database"] == "postgres"],
                             what="the pool in SHOW SCALING")[0]["server_slots"])
        assert 0 < slots < 300, slots
        conns = [psycopg.connect(p.dsn(), autocommit=True) for _ in range(slots + 2)]
        rows = console_rows(p, "AUTO_SCALE")
        row = [r for r in rows if r["database"] == "postgres"][0]
        assert int(row["size"]) == 3 and int(row["target"]) == 3, row
        assert conns[0].execute("SELECT 2").fetchone()[0] == 2
    finally:
        for c in conns:
            c.close()
        p.stop()



def test_reclaim_spares_excluded_clients(pgwarden_bin, pg):
    """exclude_user / exclude_app / exclude_addr say "never kill connections of these"; the
    graduated reclaim rolled excluded clients back (and disconnected them, where allowed) like
    any other suspect. They are still suspects and get the notice, nothing more."""
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               settings={"default_pool_size": "3", "admin_users": "postgres"},
               manager={"leak_hold_threshold": "1s", "leak_reclaim": "disconnect",
                        "exclude_app": "batch-*"}).start()
    try:
        kept = psycopg.connect(p.dsn(application_name="batch-nightly"))
        leaky = psycopg.connect(p.dsn(application_name="leaky-app"))
        kept.execute("SELECT 1")  # both left idle in a transaction
        leaky.execute("SELECT 1")
        wait_for(lambda: any(e["event"] == "reclaim_rollback"
                             for e in console_rows(p, "SHOW EVENTS")),
                 timeout=30, what="the leaky client's rollback")
        time.sleep(2.5)  # the excluded client's steps would have come by now
        with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):
            leaky.execute("SELECT 1")
        assert kept.execute("SELECT 2").fetchone()[0] == 2  # its transaction untouched
        kept.commit()
        events = console_rows(p, "SHOW EVENTS")
        kinds = [e["event"] for e in events]
        assert kinds.count("reclaim_rollback") == 1, events
        assert kinds.count("reclaim_notice") == 2, events  # the notice goes to both
        assert "reclaim_disconnect" not in kinds, events
        kept.close()
        leaky.close()
    finally:
        p.stop()


def test_notice_never_tears_or_closes_a_client_that_stopped_reading(pgwarden_bin, pg):
    """The notice step checked that nothing was in flight between the client and its server,
    not that the client's socket had room. A client that stopped reading right after its
    result, its socket filled to the brim, got the notice cut short (a torn message) and was
    closed: the gentlest step acted as a disconnect. Such a client now gets no notice (the
    step is passed) and keeps its connection. Which result size leaves the socket exactly full
    depends on the kernel's buffer, so the clients' result sizes sweep the socket's capacity,
    measured first."""
    import os
    import socket
    from serve_helpers import query_msg, read_messages, startup_packet
    p = Pooler(pgwarden_bin, pg, pool_mode="session",
               settings={"default_pool_size": "60", "max_client_conn": "100",
                         "admin_users": "postgres"},
               manager={"leak_hold_threshold": "1s", "leak_reclaim": "notice"})
    p.start()
    path = os.path.join(p.dir, f".s.PGSQL.{p.port}")

    def stalled(size):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        s.sendall(startup_packet("postgres", "postgres"))
        read_messages(s, timeout=10, until=b"Z")
        s.sendall(query_msg(f"BEGIN; SELECT repeat('x', {size})"))  # then reads nothing
        return s

    socks = []
    try:
        # What the kernel holds for a client that reads nothing.
        probe = stalled(4 << 20)
        socks.append(probe)
        time.sleep(1)
        held = len(probe.recv(16 << 20, socket.MSG_PEEK))  # read nothing: it stays full
        assert held > 10000, held
        sizes = range(held - 12000, held + 2000, 250)
        socks += [stalled(n) for n in sizes]
        time.sleep(10)  # every client a suspect, every notice step taken (10 per run)
        closed, torn = [], []
        for n, s in zip(sizes, socks[1:]):
            s.settimeout(0.3)
            data = b""
            eof = False
            try:
                while True:
                    got = s.recv(1 << 20)
                    if not got:
                        eof = True
                        break
                    data += got
            except OSError:
                pass
            pos = 0
            while pos + 5 <= len(data):
                pos += 1 + int.from_bytes(data[pos + 1:pos + 5], "big")
            if eof:
                closed.append(n)
            if pos != len(data):
                torn.append(n)
        with open(p.logfile) as f:
            log = f.read()
        print(f"capacity {held} B; closed {closed}; torn {torn}")
        assert not closed and not torn, (closed, torn, held)
        assert "a notice could not be delivered" not in log
        kinds = [e["event"] for e in console_rows(p, "SHOW EVENTS")]
        assert kinds.count("reclaim_notice") >= len(sizes), kinds
    finally:
        for s in socks:
            s.close()
        p.stop()


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_a_long_query_is_not_idle_time(pgwarden_bin, pg, mode):
    """Idleness counts from the answer of the last request, not from its start: a client whose
    query just ran longer than the thresholds is neither a leak suspect nor a kill-idle
    target the moment it gets its answer (in a transaction or not)."""
    p = Pooler(pgwarden_bin, pg, pool_mode=mode,
               settings={"default_pool_size": "4", "admin_users": "postgres"},
               manager={"leak_hold_threshold": "4s", "idle_timeout": "4s",
                        "max_kill_percentage": "100%"}).start()
    try:
        in_xact = psycopg.connect(p.dsn(application_name="long-in-xact"))
        plain = psycopg.connect(p.dsn(application_name="long-plain"), autocommit=True)
        done = {}

        def long_plain():
            plain.execute("SELECT pg_sleep(6)")
            done["plain"] = True

        th = threading.Thread(target=long_plain)
        th.start()
        in_xact.execute("SELECT pg_sleep(6)")  # the transaction stays open
        th.join(30)
        assert done.get("plain")
        # Both just got their answers: idle for well under the 4 s thresholds.
        plan = console_rows(p, "KILL_IDLE DRY RUN")
        mine = [r for r in plan if r["application"].startswith("long-")]
        assert all(r["result"] != "planned" for r in mine), plan
        assert all(int(r["idle_s"]) < 4 for r in mine), plan
        # The manager's next run sees them idle too, and suspects neither.
        wait_for(lambda: {r["application"] for r in console_rows(p, "SHOW SNAPSHOT")
                          if r["application"].startswith("long-")
                          and r["state"].startswith("idle")} == {"long-in-xact", "long-plain"},
                 what="both clients idle in the manager's snapshot")
        leaks = [r for r in console_rows(p, "SHOW LEAKS") if r["application"].startswith("long-")]
        assert leaks == [], leaks
        # Idle past the thresholds, both become targets: idleness is measured, not reset.
        wait_for(lambda: {r["application"] for r in console_rows(p, "KILL_IDLE DRY RUN")
                          if r["result"] == "planned"} == {"long-in-xact", "long-plain"},
                 timeout=30, what="both clients planned once idle past the thresholds")
        in_xact.rollback()
        plain.close()
        in_xact.close()
    finally:
        p.stop()

"""Inspect mode against the fixture's real PostgreSQL: each action finds planted problems,
kill-idle acts exactly on its plan, and every output is a valid envelope."""
import contextlib
import json
import threading
import time

import psycopg
import pytest

ACTIONS = ["monitor", "detect-leaks", "health-check", "auto-scale", "kill-idle",
           "full-analysis", "status"]


def open_session(pg, app, user="app_user", state="idle"):
    """A real client session left in `state` (idle, idle_in_xact, active-free)."""
    conn = psycopg.connect(pg.dsn(user=user, application_name=app), autocommit=True)
    if state == "idle_in_xact":
        conn.execute("BEGIN")
        conn.execute("SELECT 1")
    else:
        conn.execute("SELECT 1")
    return conn


def pid_of(conn):
    return conn.info.backend_pid


@contextlib.contextmanager
def sessions(pg, specs):
    """specs: list of (app, user, state). Yields the connections; closes them at the end."""
    conns = [open_session(pg, app, user, state) for app, user, state in specs]
    try:
        yield conns
    finally:
        for c in conns:
            with contextlib.suppress(Exception):
                c.close()


def live_pids(pg, app):
    out = pg.psql(f"SELECT pid FROM pg_stat_activity WHERE application_name = '{app}'")
    return {int(x) for x in out.split()} if out else set()


def check_envelope(doc, action):
    assert set(["action", "success", "timestamp", "duration_ms", "target", "data",
                "error"]) <= set(doc)
    assert doc["action"] == action
    assert isinstance(doc["duration_ms"], (int, float))
    assert doc["timestamp"].endswith("Z")
    if doc["success"]:
        assert doc["error"] is None and isinstance(doc["data"], dict)
        assert doc["target"]["mode"] == "inspect"
        assert doc["target"]["server_version"]
    else:
        assert doc["data"] is None
        assert doc["error"]["code"] and doc["error"]["message"]


@pytest.mark.parametrize("action", ACTIONS)
def test_every_action_emits_the_json_envelope(pg, run_pgwarden, action):
    r = run_pgwarden(action, "--target", pg.dsn(), "--format", "json", "--interval", "200ms")
    assert r.returncode in (0, 1, 2), r.stderr
    doc = r.json()
    check_envelope(doc, action)
    assert doc["success"] is True
    assert doc["target"]["port"] == pg.port


@pytest.mark.parametrize("action", ACTIONS)
def test_every_action_prints_a_table_with_a_verdict_first(pg, run_pgwarden, action):
    r = run_pgwarden(action, "--target", pg.dsn(), "--interval", "200ms")
    assert r.returncode in (0, 1, 2), r.stderr
    first = r.stdout.splitlines()[0]
    assert first.split(":")[0] in ("OK", "WARNING", "CRITICAL", "GROW", "SHRINK", "HOLD",
                                   "DRY RUN"), first


def test_monitor_counts_match_pg_stat_activity(pg, run_pgwarden):
    app = "plant-monitor"
    specs = [(app, "app_user", "idle")] * 3 + [(app, "app_user", "idle_in_xact")] * 2
    with sessions(pg, specs) as conns:
        r = run_pgwarden("monitor", "-t", pg.dsn(), "-f", "json", "--application", app,
                         "--interval", "100ms")
        doc = r.json()
        assert r.returncode == 0, r.stdout
        c = doc["data"]["connections"]
        assert c["total"] == 5
        assert c["idle"] == 3
        assert c["idle_in_transaction"] == 2
        assert c["active"] == 0
        listed = {row["pid"] for row in doc["data"]["connection_list"]}
        assert listed == {pid_of(x) for x in conns} == live_pids(pg, app)
        expected = int(pg.psql("SELECT current_setting('max_connections')::int"
                               " - current_setting('superuser_reserved_connections')::int"))
        assert c["max"] == expected
        apps = {a["application"]: a for a in doc["data"]["by_application"]}
        assert apps[app]["total"] == 5


def test_monitor_reports_rates_from_two_samples(pg, run_pgwarden):
    stop = threading.Event()

    def load():
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            while not stop.is_set():
                conn.execute("SELECT 1")

    t = threading.Thread(target=load)
    t.start()
    try:
        r = run_pgwarden("monitor", "-t", pg.dsn(), "-f", "json", "--interval", "1500ms")
    finally:
        stop.set()
        t.join()
    tp = r.json()["data"]["throughput"]
    assert tp["requests_per_sec"] is not None and tp["requests_per_sec"] > 10


def test_detect_leaks_ranks_idle_in_transaction_above_plain_idle(pg, run_pgwarden):
    app = "plant-leaks"
    specs = [(app, "app_user", "idle_in_xact")] * 2 + [(app, "app_user", "idle")] * 2
    with sessions(pg, specs) as conns:
        time.sleep(2.2)
        r = run_pgwarden("detect-leaks", "-t", pg.dsn(), "-f", "json", "--application", app,
                         "--leak-hold-threshold", "1s", "--idle-timeout", "1s",
                         "--interval", "100ms")
        assert r.returncode in (1, 2), r.stdout
        data = r.json()["data"]
        assert data["detected"] is True
        assert 0 < data["confidence"] <= 100
        scores = {s["pid"]: s for s in data["suspected_connections"]}
        xact_pids = {pid_of(c) for c in conns[:2]}
        idle_pids = {pid_of(c) for c in conns[2:]}
        assert xact_pids <= set(scores), data
        for pid in xact_pids:
            s = scores[pid]
            assert s["state"] == "idle in transaction"
            assert s["reasons"], s
            assert s["xact_age_ms"] >= 2000
            for other in idle_pids:
                assert s["score"] > scores.get(other, {"score": 0})["score"]
        assert data["recommendation"]


def test_detect_leaks_flags_an_application_whose_connections_only_grow(pg, run_pgwarden):
    app = "plant-grower"
    opened = []
    stop = threading.Event()

    def grow():
        while not stop.is_set() and len(opened) < 12:
            opened.append(open_session(pg, app))
            time.sleep(0.15)

    opened.append(open_session(pg, app))
    t = threading.Thread(target=grow)
    t.start()
    try:
        r = run_pgwarden("detect-leaks", "-t", pg.dsn(), "-f", "json", "--interval", "1s")
    finally:
        stop.set()
        t.join()
        for c in opened:
            c.close()
    growth = r.json()["data"]["growing_applications"]
    mine = [g for g in growth if g["application"] == app]
    assert mine, growth
    assert mine[0]["after"] > mine[0]["before"]


def test_health_check_running_server_has_no_failures(pg, run_pgwarden):
    r = run_pgwarden("health-check", "-t", pg.dsn(), "-f", "json", "--connections", "4")
    assert r.returncode == 0, r.stdout
    d = r.json()["data"]
    assert d["total_checked"] == 4 and d["healthy"] == 4
    assert d["failure_rate"] == 0
    assert d["headroom"]["free_slots"] > 0
    assert d["in_recovery"] is False
    assert all(c["healthy"] and c["error"] is None for c in d["checks"])


def test_health_check_stopped_server_reports_failures(run_pgwarden, unused_port):
    target = f"host=127.0.0.1 port={unused_port} user=postgres dbname=postgres"
    r = run_pgwarden("health-check", "-t", target, "-f", "json", "--connections", "3")
    assert r.returncode == 2
    doc = r.json()
    assert doc["success"] is True
    d = doc["data"]
    assert d["failure_rate"] > 0 and d["unhealthy"] == 3
    assert all(c["error_class"] == "network" for c in d["checks"])


def test_auto_scale_recommends_within_bounds(pg, run_pgwarden):
    r = run_pgwarden("auto-scale", "-t", pg.dsn(), "-f", "json", "--current-size", "50",
                     "--min-pool-size", "5", "--max-pool-size", "60", "--interval", "300ms")
    assert r.returncode == 0
    d = r.json()["data"]
    assert d["applied"] is False
    assert d["current_size"] == 50
    assert 5 <= d["target_size"] <= 60
    # An almost idle server: shrink, by at most 15% of 50 per decision.
    assert d["decision"] == "shrink"
    assert d["target_size"] >= 50 - int(50 * 0.15) - 1
    assert "50" in d["reason"]


def kill_args(pg, app, *extra, user="monitor"):
    return ["kill-idle", "-t", pg.dsn(user=user), "-f", "json", "--application", app,
            "--idle-timeout", "1s", "--leak-hold-threshold", "1s", *extra]


def test_kill_idle_dry_run_changes_nothing(pg, run_pgwarden):
    app = "plant-dry"
    with sessions(pg, [(app, "app_user", "idle")] * 2) as conns:
        time.sleep(1.3)
        r = run_pgwarden(*kill_args(pg, app, "--max-kill-percentage", "100%"))
        d = r.json()["data"]
        assert d["dry_run"] is True
        assert d["candidates"] == 2 and d["killed"] == 0
        assert {a["result"] for a in d["actions"]} == {"planned"}
        assert live_pids(pg, app) == {pid_of(c) for c in conns}


def test_kill_idle_execute_terminates_exactly_the_plan(pg, run_pgwarden):
    app = "plant-kill"
    specs = [(app, "app_user", "idle")] * 2 + [(app, "app_user", "idle_in_xact")]
    with sessions(pg, specs) as conns:
        fresh = open_session(pg, app)  # idle, but not for long enough
        try:
            time.sleep(1.3)
            fresh.execute("SELECT 1")
            r = run_pgwarden(*kill_args(pg, app, "--max-kill-percentage", "100%", "--execute"))
            assert r.returncode == 0, r.stdout
            d = r.json()["data"]
            assert d["dry_run"] is False
            planned = {a["pid"] for a in d["actions"] if a["result"] == "terminated"}
            assert planned == {pid_of(c) for c in conns}
            assert d["killed"] == 3
            # Afterwards only the fresh session remains.
            deadline = time.time() + 5
            while live_pids(pg, app) != {pid_of(fresh)} and time.time() < deadline:
                time.sleep(0.1)
            assert live_pids(pg, app) == {pid_of(fresh)}
        finally:
            fresh.close()


def test_kill_idle_respects_the_percentage_limit(pg, run_pgwarden):
    app = "plant-limit"
    with sessions(pg, [(app, "app_user", "idle")] * 8) as conns:
        time.sleep(1.3)
        r = run_pgwarden(*kill_args(pg, app, "--max-kill-percentage", "10%", "--execute"))
        d = r.json()["data"]
        total = d["client_connections"]
        assert d["limit"] == int(total * 0.10)
        assert d["killed"] <= d["limit"]
        terminated = [a for a in d["actions"] if a["result"] == "terminated"]
        over = [a for a in d["actions"] if a["result"] == "skipped_limit"]
        assert len(terminated) == min(8, d["limit"])
        assert len(terminated) + len(over) == 8
        time.sleep(0.3)
        assert len(live_pids(pg, app)) == 8 - len(terminated)
        del conns


def test_kill_idle_honours_every_exclusion(pg, run_pgwarden):
    app = "plant-exclude"
    specs = [(app, "app_user", "idle"), (app, "md5_user", "idle"), (app, "postgres", "idle"),
             (app + "-keep", "app_user", "idle")]
    with sessions(pg, specs) as conns:
        time.sleep(1.3)
        r = run_pgwarden("kill-idle", "-t", pg.dsn(user="monitor"), "-f", "json",
                         "--application", app + "*", "--idle-timeout", "1s",
                         "--max-kill-percentage", "100%", "--exclude-user", "md5_user",
                         "--exclude-app", app + "-keep", "--execute")
        d = r.json()["data"]
        by_pid = {a["pid"]: a for a in d["actions"]}
        assert by_pid[pid_of(conns[0])]["result"] == "terminated"
        for protected in conns[1:]:
            a = by_pid[pid_of(protected)]
            assert a["result"] == "skipped_protected", a
            assert a["reason"]
        time.sleep(0.3)
        assert live_pids(pg, app) == {pid_of(conns[1]), pid_of(conns[2])}
        assert live_pids(pg, app + "-keep") == {pid_of(conns[3])}


def test_kill_idle_spares_a_session_that_woke_up_between_plan_and_act(pg, run_pgwarden,
                                                                    pgwarden_bin):
    import subprocess
    app = "plant-wake"
    with sessions(pg, [(app, "app_user", "idle")] * 2) as conns:
        time.sleep(1.3)
        proc = subprocess.Popen(
            [pgwarden_bin, *kill_args(pg, app, "--max-kill-percentage", "100%", "--execute")],
            stdout=subprocess.PIPE, text=True,
            env={"PGWARDEN_TEST_PAUSE_BEFORE_EXECUTE_MS": "1500", "PATH": "/usr/bin:/bin"})
        time.sleep(0.8)
        conns[0].execute("SELECT 1")  # wakes up after the plan, before the act
        out, _ = proc.communicate(timeout=30)
        d = json.loads(out)["data"]
        by_pid = {a["pid"]: a for a in d["actions"]}
        assert by_pid[pid_of(conns[0])]["result"] == "gone"
        assert by_pid[pid_of(conns[1])]["result"] == "terminated"
        assert pid_of(conns[0]) in live_pids(pg, app)


def test_kill_idle_without_privilege_is_refused(pg, run_pgwarden):
    r = run_pgwarden("kill-idle", "-t", pg.dsn(user="nopriv"), "-f", "json", "--execute")
    assert r.returncode == 4
    doc = r.json()
    check_envelope(doc, "kill-idle")
    assert doc["error"]["code"] == "refused"
    assert "pg_signal_backend" in doc["error"]["message"]


def test_kill_idle_says_when_sessions_were_hidden_from_the_role(pg, run_pgwarden):
    # pg_signal_backend without pg_read_all_stats: other roles' rows are hidden, so the run
    # can terminate nothing there and must not read as "nothing is idle".
    pg.psql("DROP ROLE IF EXISTS signal_only; "
            "CREATE ROLE signal_only LOGIN PASSWORD 'signal-pw'; "
            "GRANT pg_signal_backend TO signal_only")
    app = "plant-hidden"
    with sessions(pg, [(app, "app_user", "idle")] * 2) as conns:
        time.sleep(1.3)
        args = ["kill-idle", "-t", pg.dsn(user="signal_only", password="signal-pw"),
                "--user", "app_user", "--idle-timeout", "1s", "--max-kill-percentage", "100%",
                "--execute"]
        r = run_pgwarden(*args, "-f", "json")
        assert r.returncode == 0, r.stdout
        d = r.json()["data"]
        assert d["killed"] == 0 and d["hidden"] >= 2, d
        table = run_pgwarden(*args)
        assert table.returncode == 0
        first = table.stdout.splitlines()[0]
        assert "hidden from this role" in first and "pg_read_all_stats" in first, first
        assert live_pids(pg, app) == {pid_of(c) for c in conns}


def test_table_output_never_passes_a_clients_control_bytes_to_the_terminal(pg, run_pgwarden):
    # Any client chooses its query text: escape sequences in it (clear screen, retitle, a
    # C1 CSI) must not reach the operator's terminal through the table output.
    app = "plant-escape"
    conn = psycopg.connect(pg.dsn(user="app_user"), application_name=app, autocommit=True)
    try:
        conn.execute("BEGIN")
        conn.execute("SELECT '\x1b[2J\x1b]0;owned\x07\u009b31m' AS x")
        r = run_pgwarden("monitor", "-t", pg.dsn(user="monitor"), "--interval", "0",
                         "--application", app)
        assert r.returncode == 0, r.stderr
        assert str(pid_of(conn)) in r.stdout, r.stdout
        controls = [ch for ch in r.stdout + r.stderr
                    if ch not in "\n\t" and (ord(ch) < 0x20 or 0x7f <= ord(ch) < 0xa0)]
        assert controls == [], repr(r.stdout)
        assert "SELECT '?[2J?]0;owned??31m'" in r.stdout
    finally:
        conn.close()


def test_full_analysis_finds_planted_problems(pg, run_pgwarden):
    app = "plant-full"
    specs = [(app, "app_user", "idle_in_xact")] * 2 + [(app, "app_user", "idle")] * 2
    with sessions(pg, specs) as conns:
        time.sleep(1.5)
        r = run_pgwarden("full-analysis", "-t", pg.dsn(), "-f", "json", "--interval", "300ms",
                         "--leak-hold-threshold", "1s", "--idle-timeout", "1s")
        assert r.returncode in (1, 2)
        d = r.json()["data"]
        for key in ("statistics", "leaks", "health", "scaling", "idle", "anomalies",
                    "recommendations", "has_leak_risk", "status"):
            assert key in d
        assert d["status"] in ("warning", "critical")
        assert d["has_leak_risk"] is True
        suspects = {s["pid"] for s in d["leaks"]["suspected_connections"]}
        assert {pid_of(c) for c in conns[:2]} <= suspects
        assert d["anomalies"] and d["recommendations"]
        assert d["health"]["failure_rate"] == 0


# ---- bad input: one clear sentence, exit 3, JSON error object, never a password --------

@pytest.mark.parametrize("args,code", [
    (["no-such-action"], "bad_input"),
    (["monitor", "--no-such-option", "1"], "bad_input"),
    (["monitor", "--idle-timeout", "5x"], "bad_input"),
    (["kill-idle", "--max-kill-percentage", "150%"], "bad_input"),
    (["monitor", "--format", "xml"], "bad_input"),
    # An empty scope filter (an unset shell variable) would widen kill-idle to everyone.
    (["kill-idle", "--application", "", "--execute", "--yes"], "bad_input"),
    (["kill-idle", "--user=", "--execute", "--yes"], "bad_input"),
])
def test_bad_input_is_one_clear_error(run_pgwarden, args, code):
    r = run_pgwarden(*args, "--format", "json") if "--format" not in args else \
        run_pgwarden(*args)
    assert r.returncode == 3
    if "--format" not in args:
        doc = r.json()
        assert doc["success"] is False and doc["data"] is None
        assert doc["error"]["code"] == code
        assert len(doc["error"]["message"].splitlines()) == 1
    else:
        assert r.stderr.strip() and len(r.stderr.strip().splitlines()) == 1


def test_wrong_password_is_reported_without_the_password(pg, run_pgwarden):
    secret = "s3cret-Wrong-Pw"
    r = run_pgwarden("monitor", "-t", pg.dsn(user="app_user", password=secret), "-f", "json")
    assert r.returncode == 3
    doc = r.json()
    assert doc["error"]["code"] == "auth_failed"
    assert "password authentication failed" in doc["error"]["message"]
    assert secret not in r.stdout + r.stderr
    r = run_pgwarden("monitor", "-t", pg.uri(user="app_user", password=secret))
    assert r.returncode == 3 and secret not in r.stdout + r.stderr


def test_unreachable_host_is_exit_3(run_pgwarden, unused_port):
    r = run_pgwarden("detect-leaks", "-t", f"host=127.0.0.1 port={unused_port} user=x",
                     "-f", "json")
    assert r.returncode == 3
    assert r.json()["error"]["code"] == "connection_failed"


def test_missing_privileges_are_visible_not_fatal(pg, run_pgwarden):
    with sessions(pg, [("plant-priv", "app_user", "idle")]):
        r = run_pgwarden("full-analysis", "-t", pg.dsn(user="nopriv"), "-f", "json",
                         "--interval", "100ms")
        assert r.returncode in (0, 1, 2), r.stdout
        d = r.json()["data"]
        codes = {a["code"] for a in d["anomalies"]}
        assert any("privilege" in c or "invisible" in c for c in codes), codes


def test_target_from_database_url_and_pg_variables(pg, run_pgwarden):
    r = run_pgwarden("status", "-f", "json", env={"DATABASE_URL": pg.uri()})
    assert r.returncode == 0 and r.json()["target"]["port"] == pg.port
    env = {"PGHOST": pg.host, "PGPORT": str(pg.port), "PGUSER": "app_user",
           "PGPASSWORD": "app-pw", "PGDATABASE": "appdb"}
    r = run_pgwarden("status", "-f", "json", env=env)
    assert r.returncode == 0, r.stdout
    assert r.json()["target"]["database"] == "appdb"


def test_manager_section_of_a_config_file_is_used(pg, run_pgwarden, tmp_path):
    cfg = tmp_path / "pgwarden.ini"
    cfg.write_text("[pgbouncer]\nlisten_port = 6432\n[manager]\nmax_kill_percentage = 50%\n"
                   "idle_timeout = 2min\n")
    r = run_pgwarden("kill-idle", "-t", pg.dsn(), "-f", "json", "-c", str(cfg))
    assert r.returncode == 0, r.stdout
    d = r.json()["data"]
    assert d["limit"] == int(d["client_connections"] * 0.5)
    bad = tmp_path / "bad.ini"
    bad.write_text("[manager]\nidle_timeout = soon\n")
    r = run_pgwarden("kill-idle", "-t", pg.dsn(), "-c", str(bad))
    assert r.returncode == 3
    assert "bad.ini:2" in r.stderr


def test_help_and_version(run_pgwarden):
    r = run_pgwarden("--version")
    assert r.returncode == 0 and r.stdout.startswith("pgwarden ")
    r = run_pgwarden("--help")
    assert r.returncode == 0
    for action in ACTIONS:
        assert action in r.stdout
    r = run_pgwarden("kill-idle", "--help")
    assert r.returncode == 0
    assert "--max-kill-percentage" in r.stdout and "--execute" in r.stdout


def test_status_is_a_nagios_check_with_thresholds_and_perfdata(pg, run_pgwarden):
    """status drops into Nagios/Icinga: --warning/--critical as a count or a share of the
    usable slots decide the exit code, and perfdata follows '|' on the one line."""
    import psycopg
    conns = [psycopg.connect(pg.dsn(), autocommit=True) for _ in range(3)]
    try:
        r = run_pgwarden("status", "-t", pg.dsn(), "--warning", "2", "--critical", "1000")
        assert r.returncode == 1, r.stdout + r.stderr
        line = r.stdout.strip()
        assert len(line.splitlines()) == 1 and line.startswith("WARNING:"), line
        text, perf = line.split(" | ")
        fields = dict(f.split("=", 1) for f in perf.split())
        used, warn, crit, low, high = fields["connections"].split(";")
        assert int(used) >= 3 and warn == "2" and crit == "1000" and low == "0" and int(high) > 0
        assert fields["utilization"].endswith(";;;0;100")
        r = run_pgwarden("status", "-t", pg.dsn(), "--warning", "1%", "--critical", "2")
        assert r.returncode == 2 and r.stdout.startswith("CRITICAL:"), r.stdout
        r = run_pgwarden("status", "-t", pg.dsn(), "--warning", "999", "--critical", "1000")
        assert r.returncode == 0 and r.stdout.startswith("OK:"), r.stdout
        r = run_pgwarden("status", "-t", pg.dsn(), "-f", "json", "--warning", "2")
        assert "connections=" in r.json()["data"]["perfdata"]
        r = run_pgwarden("status", "-t", pg.dsn(), "--warning", "90%", "--critical", "80%")
        assert r.returncode == 3 and "above --critical" in r.stderr, r.stderr
        r = run_pgwarden("status", "-t", pg.dsn(), "--warning", "lots")
        assert r.returncode == 3 and "not a number of connections" in r.stderr, r.stderr
        # --help lists the options status uses, and only those.
        r = run_pgwarden("status", "--help")
        assert "--warning" in r.stdout and "--critical" in r.stdout
        assert "--execute" not in r.stdout and "--max-kill-percentage" not in r.stdout
        r = run_pgwarden("status", "--bogus")
        assert r.returncode == 3 and "unknown option --bogus" in r.stderr
    finally:
        for c in conns:
            c.close()

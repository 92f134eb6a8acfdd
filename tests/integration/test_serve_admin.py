"""The admin console (virtual databases pgbouncer and pgwarden): PgBouncer's SHOW commands
over the simple query protocol, access levels, PAUSE/RESUME/RELOAD, and no secrets."""
import subprocess

import psycopg
import pytest

from serve_helpers import Pooler


@pytest.fixture
def pooler(pgwarden_bin, pg):
    dbs = {"postgres": f"host={pg.socket_dir} port={pg.port} dbname=postgres",
           "secretdb": f"host=127.0.0.1 port={pg.port} dbname=appdb user=app_user "
                       f"password=app-pw"}
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction", databases=dbs,
               settings={"admin_users": "postgres", "stats_users": "monitor, nopriv"}).start()
    yield p
    p.stop()


def console(pooler, user="postgres", db="pgbouncer"):
    return psycopg.connect(pooler.dsn(user, db, password=""), autocommit=True)


def held(fn, hold_s=0.8):
    """Runs fn in a thread and checks it is still waiting after hold_s; returns a function
    that, once the wait is released, joins it and gives fn's result."""
    import threading
    import time
    done = []
    t = threading.Thread(target=lambda: done.append(fn()))
    t.start()
    time.sleep(hold_s)
    assert not done, "answered while it should wait"

    def released():
        t.join(5)
        assert done, "still waiting after the release"
        return done[0]
    return released


def rows(conn, sql):
    res = conn.pgconn.exec_(sql.encode())
    assert res.status in (psycopg.pq.ExecStatus.TUPLES_OK, psycopg.pq.ExecStatus.COMMAND_OK), \
        res.error_message
    names = [res.fname(i).decode() for i in range(res.nfields)]
    out = []
    for r in range(res.ntuples):
        out.append({names[i]: (res.get_value(r, i) or b"").decode() for i in range(res.nfields)})
    return out


def test_show_pools_stats_clients_servers(pooler):
    with psycopg.connect(pooler.dsn(application_name="worker"), autocommit=True) as w:
        for _ in range(5):
            w.execute("SELECT 1")
        with console(pooler) as c:
            pools = rows(c, "SHOW POOLS;")
            p = [r for r in pools if r["database"] == "postgres" and r["user"] == "postgres"]
            assert p and p[0]["pool_mode"] == "transaction"
            assert int(p[0]["cl_active"]) >= 1
            assert int(p[0]["sv_idle"]) + int(p[0]["sv_active"]) >= 1
            stats = rows(c, "show stats")
            s = [r for r in stats if r["database"] == "postgres"]
            assert s and int(s[0]["total_xact_count"]) >= 5
            assert int(s[0]["total_received"]) > 0 and int(s[0]["total_sent"]) > 0
            clients = rows(c, "SHOW CLIENTS")
            assert any(r["application_name"] == "worker" for r in clients)
            servers = rows(c, "SHOW SERVERS")
            assert servers and all(int(r["remote_pid"]) > 0 for r in servers)
            lists = rows(c, "SHOW LISTS")
            assert any(r["list"] == "pools" for r in lists)
            assert rows(c, "SHOW VERSION")[0]["version"].startswith("pgwarden")
            dbs = rows(c, "SHOW DATABASES")
            assert any(r["name"] == "secretdb" for r in dbs)
            config = {r["key"]: r for r in rows(c, "SHOW CONFIG")}
            assert config["max_client_conn"]["value"] == "100"
            assert config["pool_mode"]["value"] == "transaction"
            assert config["query_wait_timeout"]["value"] == "15"
            assert config["default_pool_size"]["default"] == "20"
            assert config["listen_port"]["changeable"] == "no"
            assert "app-pw" not in repr(dbs) + repr(config)


def test_psql_on_console(pooler, pg):
    out = subprocess.run([pg.bin("psql"), "-X", "-A", "-t", "-h", "127.0.0.1", "-p",
                          str(pooler.port), "-U", "postgres", "-d", "pgwarden", "-c",
                          "SHOW POOLS"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    bad = subprocess.run([pg.bin("psql"), "-X", "-A", "-t", "-h", "127.0.0.1", "-p",
                          str(pooler.port), "-U", "postgres", "-d", "pgwarden", "-c",
                          "DROP TABLE x"], capture_output=True, text=True, timeout=20)
    assert bad.returncode != 0 and "invalid command" in bad.stderr


def test_access_levels(pooler):
    with pytest.raises(psycopg.OperationalError) as e:
        console(pooler, "app_user")
    assert "not allowed" in str(e.value)
    with console(pooler, "monitor") as c:
        assert rows(c, "SHOW POOLS") is not None
        res = c.pgconn.exec_(b"PAUSE")
        assert res.status == psycopg.pq.ExecStatus.FATAL_ERROR
        assert b"admin access" in res.error_message
        assert rows(c, "SHOW STATS") is not None  # still usable after the error


def test_pause_resume_reload(pooler):
    with console(pooler) as c:
        assert c.pgconn.exec_(b"PAUSE").status == psycopg.pq.ExecStatus.COMMAND_OK
        assert c.pgconn.exec_(b"RESUME").status == psycopg.pq.ExecStatus.COMMAND_OK
        assert c.pgconn.exec_(b"RELOAD").status == psycopg.pq.ExecStatus.COMMAND_OK
    with psycopg.connect(pooler.dsn(), autocommit=True) as w:
        assert w.execute("SELECT 1").fetchone()[0] == 1


def test_kill_admin_db_and_suspend_with_paused_db_are_refused(pooler):
    """PgBouncer's rules and words: the console's own database cannot be killed, and SUSPEND
    waits for nothing while a database is paused (its clients' requests could never be
    flushed): both are refused, and the console goes on."""
    with console(pooler) as c:
        for db in ("pgbouncer", "pgwarden"):
            res = c.pgconn.exec_(f"KILL {db}".encode())
            assert res.status == psycopg.pq.ExecStatus.FATAL_ERROR
            assert res.error_message.decode().startswith(f"ERROR:  cannot kill admin db: {db}")
        assert c.pgconn.exec_(b"PAUSE postgres").status == psycopg.pq.ExecStatus.COMMAND_OK
        res = c.pgconn.exec_(b"SUSPEND")
        assert res.status == psycopg.pq.ExecStatus.FATAL_ERROR
        assert b"cannot suspend with paused databases" in res.error_message
        assert c.pgconn.exec_(b"RESUME postgres").status == psycopg.pq.ExecStatus.COMMAND_OK
        assert c.pgconn.exec_(b"SUSPEND").status == psycopg.pq.ExecStatus.COMMAND_OK
        assert c.pgconn.exec_(b"RESUME").status == psycopg.pq.ExecStatus.COMMAND_OK
    with psycopg.connect(pooler.dsn(), autocommit=True) as w:
        assert w.execute("SELECT 1").fetchone()[0] == 1


def test_extended_protocol_refused(pooler):
    """The extended protocol gets an error, as from PostgreSQL, and the session goes on."""
    with console(pooler) as c:
        res = c.pgconn.exec_params(b"SHOW POOLS", [])  # Parse/Bind/Describe/Execute/Sync
        assert res.status == psycopg.pq.ExecStatus.FATAL_ERROR
        assert b"simple query protocol" in res.error_message, res.error_message
        assert rows(c, "SHOW POOLS") is not None  # the same connection still works
        res = c.pgconn.exec_params(b"SHOW VERSION", [])
        assert res.status == psycopg.pq.ExecStatus.FATAL_ERROR
        assert rows(c, "SHOW VERSION")[0]["version"].startswith("pgwarden")
    assert pooler.alive()


def test_pgbouncer_user_over_unix_socket_needs_no_password(pooler):
    """PgBouncer's rule: user "pgbouncer" on the console over the unix socket, from the
    pooler's own Unix user, is an admin without a password; over TCP it is nobody."""
    dsn = f"host={pooler.dir} port={pooler.port} user=pgbouncer dbname=pgbouncer"
    with psycopg.connect(dsn, autocommit=True) as c:
        assert rows(c, "SHOW VERSION")
        c.pgconn.exec_(b"RELOAD")  # an admin command is allowed
        assert rows(c, "SHOW STATE")
    with pytest.raises(psycopg.OperationalError, match="not allowed to use the admin console"):
        psycopg.connect(pooler.dsn("pgbouncer", "pgbouncer", password=""))


def test_big_show_clients(pooler):
    conns = [psycopg.connect(pooler.dsn(application_name="x" * 60), autocommit=True)
             for _ in range(60)]
    try:
        with console(pooler) as c:
            for _ in range(3):
                assert len(rows(c, "SHOW CLIENTS")) >= 60
    finally:
        for x in conns:
            x.close()


def test_kill_client_kill_db_reconnect(pooler):
    victim = psycopg.connect(pooler.dsn(application_name="victim"), autocommit=True)
    victim.execute("SELECT 1")
    other = psycopg.connect(pooler.dsn(application_name="other"), autocommit=True)
    pid_before = other.execute("SELECT pg_backend_pid()").fetchone()[0]
    with console(pooler) as c:
        ids = [r["ptr"] for r in rows(c, "SHOW CLIENTS") if r["application_name"] == "victim"]
        assert len(ids) == 1
        assert c.pgconn.exec_(f"KILL_CLIENT {ids[0]}".encode()).status == \
            psycopg.pq.ExecStatus.COMMAND_OK
        with pytest.raises(psycopg.OperationalError):
            victim.execute("SELECT 1")
        assert other.execute("SELECT 1").fetchone()[0] == 1
        # RECONNECT: servers are replaced when released
        assert c.pgconn.exec_(b"RECONNECT postgres").status == psycopg.pq.ExecStatus.COMMAND_OK
        other.execute("SELECT 1")
        assert other.execute("SELECT pg_backend_pid()").fetchone()[0] != pid_before
        # KILL db: every client and server of the database goes
        assert c.pgconn.exec_(b"KILL postgres").status == psycopg.pq.ExecStatus.COMMAND_OK
        with pytest.raises(psycopg.OperationalError):
            other.execute("SELECT 1")
        assert c.pgconn.exec_(b"KILL nosuchdb").status == psycopg.pq.ExecStatus.FATAL_ERROR
        assert rows(c, "SHOW POOLS") is not None
        # A killed database waits for RESUME, as in PgBouncer.
        assert c.pgconn.exec_(b"RESUME postgres").status == psycopg.pq.ExecStatus.COMMAND_OK
    victim.close()
    other.close()
    with psycopg.connect(pooler.dsn(), autocommit=True) as again:
        assert again.execute("SELECT 1").fetchone()[0] == 1


def test_stats_averages(pgwarden_bin, pg):
    import time
    p = Pooler(pgwarden_bin, pg, settings={"admin_users": "postgres", "stats_period": "1"}).start()
    try:
        with psycopg.connect(p.dsn(), autocommit=True) as w:
            deadline = time.time() + 2.5
            while time.time() < deadline:
                w.execute("SELECT 1")
            time.sleep(1.2)
            w.execute("SELECT 1")
            with console(p) as c:
                s = [r for r in rows(c, "SHOW STATS") if r["database"] == "postgres"][0]
                assert int(s["avg_xact_count"]) >= 0
                assert int(s["total_xact_count"]) > 10
                assert "avg_query_time" in s and "avg_wait_time" in s
    finally:
        p.stop()


def test_set_changes_a_key_until_reload(pooler):
    """SET key = value on the console changes a running setting (shown by SHOW CONFIG) until
    the next RELOAD reads the file again; keys read at start, unknown keys and bad values are
    refused with the reason, and stats users may not SET."""
    def value(c, key):
        return [r for r in rows(c, "SHOW CONFIG") if r["key"] == key][0]["value"]

    with console(pooler) as c:
        assert c.pgconn.exec_(b"SET default_pool_size = 3").status == \
            psycopg.pq.ExecStatus.COMMAND_OK
        assert value(c, "default_pool_size") == "3"
        res = c.pgconn.exec_(b"SET server_reset_query TO 'DISCARD ALL'")
        assert res.status == psycopg.pq.ExecStatus.COMMAND_OK, res.error_message
        assert value(c, "server_reset_query") == "DISCARD ALL"
        for sql, why in ((b"SET listen_port = 7000", b"read at start"),
                         (b"SET no_such_key = 1", b"unknown"),
                         (b"SET default_pool_size = lots", b"not a non-negative integer"),
                         (b"SET default_pool_size", b"SET needs")):
            res = c.pgconn.exec_(sql)
            assert res.status == psycopg.pq.ExecStatus.FATAL_ERROR, sql
            assert why in res.error_message, (sql, res.error_message)
        assert value(c, "default_pool_size") == "3"
        assert c.pgconn.exec_(b"RELOAD").status == psycopg.pq.ExecStatus.COMMAND_OK
        assert value(c, "default_pool_size") == "5"
    with console(pooler, "monitor") as c:
        res = c.pgconn.exec_(b"SET default_pool_size = 9")
        assert res.status == psycopg.pq.ExecStatus.FATAL_ERROR
        assert b"admin access" in res.error_message
    with psycopg.connect(pooler.dsn(), autocommit=True) as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1


def test_pause_waits_for_servers_then_holds_clients(pooler):
    """PAUSE answers only once no server is linked to a client (a transaction in progress is
    waited for), closes idle servers, and holds new requests until RESUME; a second PAUSE
    is refused, as is RESUME when nothing is paused."""
    busy = psycopg.connect(pooler.dsn())
    busy.execute("SELECT 1")  # in a transaction: its server is linked
    with console(pooler) as c:
        answer = held(lambda: c.pgconn.exec_(b"PAUSE").status, hold_s=1.2)
        busy.commit()  # releases the server
        assert answer() == psycopg.pq.ExecStatus.COMMAND_OK
    with console(pooler) as c:
        res = c.pgconn.exec_(b"PAUSE")
        assert b"already suspended/paused" in res.error_message
        assert [r for r in rows(c, "SHOW STATE") if r["key"] == "paused"][0]["value"] == "yes"
        # A request now waits for RESUME.
        result = held(lambda: busy.execute("SELECT 2").fetchone())
        assert c.pgconn.exec_(b"RESUME").status == psycopg.pq.ExecStatus.COMMAND_OK
        assert result() == (2,)
        res = c.pgconn.exec_(b"RESUME")
        assert b"not paused" in res.error_message
    busy.close()


def test_pause_one_database_disable_enable_kill(pooler):
    """PAUSE db holds only that database; DISABLE db refuses new logins to it while its
    connected clients go on; KILL db closes its clients and pauses it until RESUME db."""
    with console(pooler) as c, psycopg.connect(pooler.dsn(), autocommit=True) as pg_client:
        pg_client.execute("SELECT 1")
        assert c.pgconn.exec_(b"PAUSE postgres").status == psycopg.pq.ExecStatus.COMMAND_OK
        dbs = {r["name"]: r for r in rows(c, "SHOW DATABASES")}
        assert dbs["postgres"]["paused"] == "1" and dbs["secretdb"]["paused"] == "0"
        with psycopg.connect(pooler.dsn(dbname="secretdb"), autocommit=True) as other:
            assert other.execute("SELECT 3").fetchone()[0] == 3  # not paused
        result = held(lambda: pg_client.execute("SELECT 4").fetchone())
        assert c.pgconn.exec_(b"RESUME postgres").status == psycopg.pq.ExecStatus.COMMAND_OK
        assert result() == (4,)
        res = c.pgconn.exec_(b"PAUSE nosuchdb")
        assert b"no such database" in res.error_message

        assert c.pgconn.exec_(b"DISABLE postgres").status == psycopg.pq.ExecStatus.COMMAND_OK
        with pytest.raises(psycopg.OperationalError, match="disabled"):
            psycopg.connect(pooler.dsn())
        assert pg_client.execute("SELECT 5").fetchone()[0] == 5  # connected clients go on
        assert [r for r in rows(c, "SHOW DATABASES") if r["name"] == "postgres"][0][
            "disabled"] == "1"
        assert c.pgconn.exec_(b"ENABLE postgres").status == psycopg.pq.ExecStatus.COMMAND_OK
        with psycopg.connect(pooler.dsn(), autocommit=True) as again:
            assert again.execute("SELECT 6").fetchone()[0] == 6

        assert c.pgconn.exec_(b"KILL postgres").status == psycopg.pq.ExecStatus.COMMAND_OK
        with pytest.raises(psycopg.OperationalError):
            pg_client.execute("SELECT 7")
        assert c.pgconn.exec_(b"RESUME postgres").status == psycopg.pq.ExecStatus.COMMAND_OK
    with psycopg.connect(pooler.dsn(), autocommit=True) as fresh:
        assert fresh.execute("SELECT 8").fetchone()[0] == 8


def test_wait_close_after_reconnect(pooler):
    """RECONNECT marks servers to be closed when released; WAIT_CLOSE answers once none is
    left marked."""
    busy = psycopg.connect(pooler.dsn())
    busy.execute("SELECT 1")
    with console(pooler) as c:
        assert c.pgconn.exec_(b"RECONNECT postgres").status == psycopg.pq.ExecStatus.COMMAND_OK
        answer = held(lambda: c.pgconn.exec_(b"WAIT_CLOSE postgres").status, hold_s=1.0)
        busy.commit()
        assert answer() == psycopg.pq.ExecStatus.COMMAND_OK
    busy.close()


def test_shutdown_wait_for_clients(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, settings={"admin_users": "postgres"}).start()
    try:
        client = psycopg.connect(p.dsn(), autocommit=True)
        with console(p) as c:
            res = c.pgconn.exec_(b"SHUTDOWN WAIT_FOR_CLIENTS")
            assert res.status == psycopg.pq.ExecStatus.COMMAND_OK, res.error_message
        assert client.execute("SELECT 1").fetchone()[0] == 1  # existing clients go on
        assert p.proc.poll() is None
        client.close()
        p.proc.wait(timeout=10)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(p.dsn(), connect_timeout=2)
    finally:
        p.stop()


def test_long_console_command_is_refused_cleanly(pooler):
    """A command longer than the console reads, words separated by spaces (the fuzz target
    found a one-byte overrun there), is an error and nothing else."""
    with console(pooler, "monitor") as c:
        for n in range(120, 140):
            res = c.pgconn.exec_(("SHOW " + "a " * n).encode())
            assert res.status == psycopg.pq.ExecStatus.FATAL_ERROR
        assert rows(c, "SHOW VERSION")
    assert pooler.alive()

"""Replication connections through the pooler (PgBouncer 1.23+): a client that asks for
replication=true (physical) or replication=database (logical) gets a walsender of its own,
opened with its startup parameters, never shared, never reused, closed when it leaves; the
replication protocol passes through in any pool_mode; its server counts against pool_size
(an idle server of the pool is closed to make room) and max_db/max_user_connections."""
import os
import signal
import subprocess
import tempfile
import threading
import time
import uuid

import psycopg
import pytest

from serve_helpers import Pooler


def walsenders(pg, app=None):
    q = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'"
    if app:
        q += f" AND application_name = '{app}'"
    return int(pg.psql(q))


def wait_for(cond, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def console(p, sql):
    with psycopg.connect(p.dsn(dbname="pgbouncer"),
                         autocommit=True) as c:
        cur = c.execute(sql)
        cols = [d.name for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]


def pg_env(p, user="postgres"):
    from pgfixture import PASSWORDS
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = PASSWORDS[user]
    env["PGSSLMODE"] = "disable"
    return env


@pytest.fixture(params=["transaction", "session"])
def pooler(request, pgwarden_bin, pg):
    # pg_receivewal and pg_basebackup ask for the database "replication" (libpq's rule for
    # physical replication): like PgBouncer, the pooler needs an entry of that name.
    dbs = {name: f"host={pg.socket_dir} port={pg.port} dbname=postgres"
           for name in ("postgres", "replication")}
    p = Pooler(pgwarden_bin, pg, pool_mode=request.param, auth_type="scram-sha-256",
               databases=dbs,
               settings={"admin_users": "postgres", "max_prepared_statements": "10"}).start()
    try:
        yield p
    finally:
        p.stop()


def test_physical_identify_system_with_psql(pooler, pg):
    """psql "replication=true" -c IDENTIFY_SYSTEM answers with the server's system id."""
    sysid = pg.psql("SELECT system_identifier FROM pg_control_system()")
    out = subprocess.run([pg.bin("psql"), "-X", "-A", "-t", "-c", "IDENTIFY_SYSTEM",
                          pooler.dsn(replication="true")],
                         capture_output=True, text=True, env=pg_env(pooler), timeout=30)
    assert out.returncode == 0, out.stderr + pooler.log()
    assert out.stdout.split("|")[0] == sysid
    # A physical walsender takes no SQL: PostgreSQL's own answer reaches the client.
    with psycopg.connect(pooler.dsn(replication="true", application_name="phys"),
                         autocommit=True) as c:
        # Its own reports reach the client: connected to no database, a physical walsender
        # says SQL_ASCII, so psycopg returns bytes (as straight from PostgreSQL).
        assert c.info.parameter_status("client_encoding") == "SQL_ASCII"
        assert c.execute("SHOW application_name").fetchone()[0] == b"phys"
        with pytest.raises(psycopg.errors.FeatureNotSupported,
                           match="cannot execute SQL commands in WAL sender"):
            c.execute("SELECT 1")


def test_logical_options_and_settings(pooler):
    """A logical walsender runs SQL; its options (any switch) and startup parameters are the
    client's, set in the server's startup packet."""
    dsn = pooler.dsn(replication="database", application_name="abc")
    with psycopg.connect(dsn, options="-c enable_seqscan=off -c extra_float_digits=2",
                         autocommit=True) as c:
        assert c.execute("SHOW application_name").fetchone()[0] == "abc"
        assert c.execute("SHOW enable_seqscan").fetchone()[0] == "off"
        assert c.execute("SHOW extra_float_digits").fetchone()[0] == "2"
        assert c.execute("SELECT 1").fetchone()[0] == 1
        row = c.execute("IDENTIFY_SYSTEM").fetchone()
        assert row[3] == "postgres"  # dbname: a logical walsender is bound to its database
    # A normal client of the same pool is not disturbed, and sees none of those settings.
    with psycopg.connect(pooler.dsn(), autocommit=True) as c:
        assert c.execute("SHOW enable_seqscan").fetchone()[0] == "on"
        assert c.execute("SELECT 1").fetchone()[0] == 1


def test_pg_recvlogical_streams_a_change(pooler, pg):
    slot = "pgw_recvlogical_" + uuid.uuid4().hex[:8]
    table = "repl_" + uuid.uuid4().hex[:8]
    pg.psql(f"CREATE TABLE {table}(a int)")
    env = pg_env(pooler)
    conn = ["--dbname", pooler.dsn(), "--slot", slot]
    try:
        out = subprocess.run([pg.bin("pg_recvlogical"), *conn, "--create-slot",
                              "--plugin=test_decoding"],
                             capture_output=True, text=True, env=env, timeout=30)
        assert out.returncode == 0, out.stderr + pooler.log()
        outfile = os.path.join(tempfile.mkdtemp(prefix="pgwarden-recvlogical-"), "out")
        proc = subprocess.Popen([pg.bin("pg_recvlogical"), *conn, "--start", "--file", outfile,
                                 "--no-loop", "--status-interval=1"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        try:
            assert wait_for(lambda: walsenders(pg, "pg_recvlogical") == 1)
            with psycopg.connect(pooler.dsn(), autocommit=True) as c:
                c.execute(f"INSERT INTO {table} VALUES (42)")

            def decoded():
                try:
                    with open(outfile) as f:
                        return f.read().splitlines()
                except OSError:
                    return []

            assert wait_for(lambda: len(decoded()) >= 3, timeout=20), pooler.log()
            lines = decoded()
            assert lines[0].startswith("BEGIN"), lines
            assert lines[1] == f"table public.{table}: INSERT: a[integer]:42", lines
            assert lines[2].startswith("COMMIT"), lines
            # The walsender and its client show on the console as PgBouncer shows them.
            servers = [s for s in console(pooler, "SHOW SERVERS") if s["replication"] != "none"]
            clients = [c for c in console(pooler, "SHOW CLIENTS") if c["replication"] != "none"]
            assert [s["replication"] for s in servers] == ["logical"]
            assert [c["replication"] for c in clients] == ["logical"]
            assert servers[0]["state"] == "active" and clients[0]["state"] == "active"
            assert clients[0]["link"] == servers[0]["ptr"]
        finally:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=10)
        # The server closes with its client.
        assert wait_for(lambda: walsenders(pg) == 0), pooler.log()
        assert "replication client was closed" in pooler.log()
    finally:
        subprocess.run([pg.bin("pg_recvlogical"), *conn, "--drop-slot"],
                       capture_output=True, env=env, timeout=30)
        pg.psql(f"DROP TABLE IF EXISTS {table}")


def test_pg_receivewal(pooler, pg):
    slot = "pgw_receivewal_" + uuid.uuid4().hex[:8]
    pg.psql(f"SELECT pg_create_physical_replication_slot('{slot}')")
    outdir = tempfile.mkdtemp(prefix="pgwarden-wal-")
    try:
        proc = subprocess.Popen([pg.bin("pg_receivewal"), "--dbname", pooler.dsn(),
                                 "--slot", slot, "--directory", outdir, "--no-loop"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=pg_env(pooler))
        try:
            assert wait_for(lambda: walsenders(pg, "pg_receivewal") == 1), pooler.log()
            # WAL written meanwhile reaches the client through the pooler: a whole segment.
            pg.psql("CREATE TABLE IF NOT EXISTS pgw_wal_probe(a int); "
                    "INSERT INTO pgw_wal_probe VALUES (1)")
            pg.psql("SELECT pg_switch_wal()")
            assert wait_for(lambda: any(not n.endswith(".partial") for n in os.listdir(outdir)),
                            timeout=20), pooler.log()
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert wait_for(lambda: walsenders(pg) == 0)
    finally:
        pg.psql(f"SELECT pg_drop_replication_slot('{slot}')")


def test_never_shared_nor_reused(pooler, pg):
    """Two replication clients have two walsenders; a normal client never gets one, and
    a walsender never becomes idle in the pool."""
    a = psycopg.connect(pooler.dsn(replication="database", application_name="ra"),
                        autocommit=True)
    b = psycopg.connect(pooler.dsn(replication="database", application_name="rb"),
                        autocommit=True)
    try:
        pa = a.execute("SELECT pg_backend_pid()").fetchone()[0]
        pb = b.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert pa != pb
        assert walsenders(pg) == 2
        for _ in range(3):
            with psycopg.connect(pooler.dsn(), autocommit=True) as n:
                pid, kind = n.execute(
                    "SELECT pid, backend_type FROM pg_stat_activity "
                    "WHERE pid = pg_backend_pid()").fetchone()
                assert pid not in (pa, pb) and kind == "client backend"
        # Each keeps its own walsender.
        assert a.execute("SELECT pg_backend_pid()").fetchone()[0] == pa
        assert b.execute("SELECT pg_backend_pid()").fetchone()[0] == pb
        pools = [s for s in console(pooler, "SHOW SERVERS") if s["replication"] != "none"]
        assert len(pools) == 2 and all(s["state"] == "active" for s in pools)
    finally:
        a.close()
        b.close()
    assert wait_for(lambda: walsenders(pg) == 0), pooler.log()
    # Nothing replication-like is left in the pool for the next client.
    assert all(s["replication"] == "none" for s in console(pooler, "SHOW SERVERS"))


def test_refusals(pooler):
    with pytest.raises(psycopg.OperationalError, match="admin console"):
        psycopg.connect(pooler.dsn(dbname="pgbouncer", replication="database"))
    with pytest.raises(psycopg.OperationalError, match='invalid value for parameter "replication"'):
        psycopg.connect(pooler.dsn(replication="maybe"))
    # replication=false is an ordinary connection.
    with psycopg.connect(pooler.dsn(replication="false"), autocommit=True) as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1


def test_unprivileged_role_is_refused_by_postgres(pgwarden_bin, pg):
    """PostgreSQL decides who may start a walsender; its refusal reaches the client."""
    p = Pooler(pgwarden_bin, pg, auth_type="scram-sha-256").start()
    try:
        with pytest.raises(psycopg.OperationalError,
                           match="permission denied to start WAL sender|must be superuser"):
            psycopg.connect(p.dsn(user="app_user", dbname="appdb", replication="database"))
        # The pool still serves ordinary clients.
        with psycopg.connect(p.dsn(user="app_user", dbname="appdb"), autocommit=True) as c:
            assert c.execute("SELECT 1").fetchone()[0] == 1
    finally:
        p.stop()


def test_pool_size_counts_and_evicts(pgwarden_bin, pg):
    """A walsender counts against pool_size: with the pool full of idle servers one is
    evicted for it; with the pool full of busy ones the replication client waits."""
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction", auth_type="scram-sha-256",
               settings={"default_pool_size": "2", "admin_users": "postgres",
                         "query_wait_timeout": "30"}).start()
    try:
        # Two servers, both left idle in the pool.
        c1 = psycopg.connect(p.dsn(), autocommit=False)
        c2 = psycopg.connect(p.dsn(), autocommit=False)
        c1.execute("SELECT 1")
        c2.execute("SELECT 1")
        c1.commit()
        c2.commit()
        assert len(console(p, "SHOW SERVERS")) == 2
        with psycopg.connect(p.dsn(replication="database"), autocommit=True) as r:
            assert r.execute("SELECT 1").fetchone()[0] == 1
            assert "closing because: evicted" in p.log()
            servers = console(p, "SHOW SERVERS")
            assert len(servers) == 2
            assert sorted(s["replication"] for s in servers) == ["logical", "none"]
        c1.close()
        c2.close()
        assert wait_for(lambda: walsenders(pg) == 0)

        # Both servers busy in transactions: the replication client waits for one to close.
        c1 = psycopg.connect(p.dsn(), autocommit=False)
        c2 = psycopg.connect(p.dsn(), autocommit=False)
        c1.execute("SELECT 1")
        c2.execute("SELECT 1")
        got = {}

        def replicate():
            with psycopg.connect(p.dsn(replication="database"), autocommit=True) as r:
                got["pid"] = r.execute("SELECT pg_backend_pid()").fetchone()[0]

        t = threading.Thread(target=replicate)
        t.start()
        assert wait_for(lambda: any(c["replication"] == "logical" and c["state"] == "waiting"
                                    for c in console(p, "SHOW CLIENTS")))
        assert "pid" not in got and walsenders(pg) == 0
        c1.commit()  # its server goes idle: evicted for the walsender
        t.join(timeout=20)
        assert "pid" in got, p.log()
        c1.close()
        c2.close()
    finally:
        p.stop()


def test_max_db_connections_counts(pgwarden_bin, pg):
    """A walsender counts against max_db_connections: with the database's limit taken by a
    busy server, a replication client waits (query_wait_timeout ends the wait)."""
    p = Pooler(pgwarden_bin, pg, pool_mode="session", auth_type="scram-sha-256",
               settings={"default_pool_size": "5", "max_db_connections": "1",
                         "query_wait_timeout": "2"}).start()
    try:
        with psycopg.connect(p.dsn(replication="database"), autocommit=True) as r:
            assert r.execute("SELECT 1").fetchone()[0] == 1
            with pytest.raises(psycopg.OperationalError, match="query_wait_timeout"):
                with psycopg.connect(p.dsn(), autocommit=True) as n:
                    n.execute("SELECT 1")
        assert wait_for(lambda: walsenders(pg) == 0)
        # The walsender is gone: the limit's slot is free again.
        with psycopg.connect(p.dsn(), autocommit=True) as n:
            assert n.execute("SELECT 1").fetchone()[0] == 1
    finally:
        p.stop()


def test_reconnect_closes_walsender(pooler, pg):
    """A walsender is never released, so RECONNECT (or a changed database entry) closes it
    at once, with its client, instead of waiting for a release that never comes."""
    r = psycopg.connect(pooler.dsn(replication="database"), autocommit=True)
    try:
        assert r.execute("SELECT 1").fetchone()[0] == 1
        assert walsenders(pg) == 1
        with psycopg.connect(pooler.dsn(dbname="pgbouncer"), autocommit=True) as c:
            c.execute("RECONNECT postgres")
        assert wait_for(lambda: walsenders(pg) == 0), pooler.log()
        with pytest.raises(psycopg.OperationalError):
            r.execute("SELECT 1")
        assert "database configuration changed" in pooler.log()
    finally:
        r.close()


def test_pg_basebackup(pooler, pg):
    """BASE_BACKUP streams a tar per tablespace through the pooler (COPY out of a walsender)."""
    outdir = tempfile.mkdtemp(prefix="pgwarden-basebackup-")
    out = subprocess.run([pg.bin("pg_basebackup"), "--dbname", pooler.dsn(), "--pgdata",
                          os.path.join(outdir, "data"), "--checkpoint=fast", "--wal-method=none"],
                         capture_output=True, text=True, env=pg_env(pooler), timeout=120)
    assert out.returncode == 0, out.stderr + pooler.log()
    assert os.path.exists(os.path.join(outdir, "data", "PG_VERSION"))
    assert wait_for(lambda: walsenders(pg) == 0)


def test_subscription_through_pooler(pgwarden_bin, pg):
    """CREATE SUBSCRIPTION whose connection goes through the pooler in transaction pooling:
    the apply worker's options (settings PostgreSQL does not report) reach its walsender, the
    initial COPY and a later change arrive."""
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction", auth_type="scram-sha-256",
               settings={"admin_users": "postgres"}).start()
    table = "sub_" + uuid.uuid4().hex[:8]
    slot = table + "_slot"
    try:
        pg.psql(f"CREATE TABLE {table}(a int PRIMARY KEY); INSERT INTO {table} VALUES (1);"
                f"CREATE PUBLICATION {table}_pub FOR TABLE {table}")
        pg.psql(f"SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')")
        pg.psql(f"CREATE TABLE {table}(a int PRIMARY KEY)", dbname="appdb")
        conninfo = p.dsn().replace("connect_timeout=10", "")
        pg.psql(f"CREATE SUBSCRIPTION {table}_sub CONNECTION '{conninfo}' "
                f"PUBLICATION {table}_pub WITH (slot_name = '{slot}', create_slot = false)",
                dbname="appdb")

        def count():
            return int(pg.psql(f"SELECT count(*) FROM {table}", dbname="appdb"))

        assert wait_for(lambda: count() == 1, timeout=30), p.log()
        pg.psql(f"INSERT INTO {table} VALUES (2)")
        assert wait_for(lambda: count() == 2, timeout=30), p.log()
        assert any(s["replication"] == "logical" for s in console(p, "SHOW SERVERS"))
    finally:
        pg.psql(f"DROP SUBSCRIPTION IF EXISTS {table}_sub", dbname="appdb")
        p.stop()
        pg.psql(f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                f"WHERE slot_name = '{slot}'")
        pg.psql(f"DROP PUBLICATION IF EXISTS {table}_pub; DROP TABLE IF EXISTS {table}")
        pg.psql(f"DROP TABLE IF EXISTS {table}", dbname="appdb")


def test_hba_physical_needs_replication_line(pgwarden_bin, pg):
    """auth_type = hba: a physical replication connection matches only lines for the
    database "replication"; a logical one matches its own database, as in PostgreSQL."""
    p = Pooler(pgwarden_bin, pg, auth_type="hba",
               settings={"auth_hba_file": "hba.conf", "admin_users": "postgres"})
    with open(os.path.join(p.dir, "hba.conf"), "w") as f:
        f.write("host replication postgres 127.0.0.1/32 reject\n"
                "host all all 127.0.0.1/32 scram-sha-256\n")
    p.start()
    try:
        with psycopg.connect(p.dsn(replication="database"), autocommit=True) as c:
            assert c.execute("SELECT 1").fetchone()[0] == 1
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(p.dsn(replication="true"))
        # "all" does not cover physical replication: without the reject line no line matches.
        with open(os.path.join(p.dir, "hba.conf"), "w") as f:
            f.write("host all all 127.0.0.1/32 scram-sha-256\n")
        with psycopg.connect(p.dsn(dbname="pgbouncer"), autocommit=True) as c:
            c.execute("RELOAD")
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(p.dsn(replication="true"))
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            assert c.execute("SELECT 1").fetchone()[0] == 1
    finally:
        p.stop()


def test_pause_waits_for_a_walsender(pooler, pg):
    """A walsender is linked to its client for life: PAUSE answers once the replication
    client has left (PgBouncer counts it as an active server too)."""
    r = psycopg.connect(pooler.dsn(replication="database"), autocommit=True)
    done = threading.Event()
    try:
        assert r.execute("SELECT 1").fetchone()[0] == 1

        def pause():
            with psycopg.connect(pooler.dsn(dbname="pgbouncer"), autocommit=True) as c:
                c.execute("PAUSE postgres")
                done.set()

        t = threading.Thread(target=pause)
        t.start()
        assert not done.wait(1.5), "PAUSE answered while a walsender was linked"
        r.close()
        assert done.wait(10), pooler.log()
        t.join(10)
    finally:
        r.close()
        with psycopg.connect(pooler.dsn(dbname="pgbouncer"), autocommit=True) as c:
            c.execute("RESUME postgres")

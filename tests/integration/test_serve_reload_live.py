"""Configuration changes under live traffic: RELOAD and console SET while clients hold
servers, sit in transactions or run a benchmark. What the change asks for must hold once it is
made (limits, modes), and no server may carry one client's session into another's."""
import os
import subprocess
import threading
import time

import psycopg

from fault_proxy import Fault, FaultProxy
from serve_helpers import Pooler, console_rows, wait_for


def pooler_backends(pg, db="appdb"):
    """PostgreSQL backends of database db (the tests' psql runs in postgres)."""
    return int(pg.psql("SELECT count(*) FROM pg_stat_activity "
                       f"WHERE backend_type = 'client backend' AND datname = '{db}'"))


def console_exec(p, sql):
    with psycopg.connect(p.dsn("postgres", "pgbouncer", password=""), autocommit=True) as c:
        res = c.pgconn.exec_(sql.encode())
        assert res.status == psycopg.pq.ExecStatus.COMMAND_OK, res.error_message


def appdb_client_in_background(p):
    """Starts a client that logs in to appdb and asks current_database(); returns its thread
    and the list that gets the answer (or the psycopg error)."""
    got = []

    def client():
        try:
            with psycopg.connect(p.dsn(dbname="appdb"), autocommit=True) as c:
                got.append(c.execute("SELECT current_database()").fetchone()[0])
        except psycopg.Error as e:
            got.append(e)

    t = threading.Thread(target=client)
    t.start()
    return t, got


def make_pooler(pgwarden_bin, pg, pool_mode="transaction", **settings):
    settings.setdefault("admin_users", "postgres")
    return Pooler(pgwarden_bin, pg, pool_mode=pool_mode, settings=settings).start()


def hold_servers(p, n, db="appdb"):
    """n clients, each inside a transaction (so each holds its own server)."""
    conns = []
    for _ in range(n):
        c = psycopg.connect(p.dsn(dbname=db))
        c.execute("SELECT 1")
        conns.append(c)
    return conns


def test_session_to_transaction_mode_does_not_hand_on_session_state(pgwarden_bin, pg):
    """A client of a session pool set a session variable on its server; a RELOAD turns the
    pool to transaction mode. The server it releases at its next transaction's end must not
    reach another client with that variable set (it was never reset: session pools reset a
    server when the client leaves, transaction pools never hand out one with session state)."""
    p = make_pooler(pgwarden_bin, pg, pool_mode="session", default_pool_size="1")
    try:
        a = psycopg.connect(p.dsn(dbname="appdb"), autocommit=True)
        a.execute("SET statement_timeout = '4321s'")
        a.execute("SET work_mem = '7777kB'")
        p.settings["pool_mode"] = "transaction"
        p.write_config()
        console_exec(p, "RELOAD")
        assert [r["pool_mode"] for r in console_rows(p, "SHOW POOLS")
                if r["database"] == "appdb"] == ["transaction"]
        assert a.execute("SELECT 1").fetchone()[0] == 1  # releases the server (transaction mode)
        with psycopg.connect(p.dsn(dbname="appdb"), autocommit=True) as b:
            assert b.execute("SHOW statement_timeout").fetchone()[0] == "0"
            assert b.execute("SHOW work_mem").fetchone()[0] != "7777kB"
        a.close()
        assert p.alive()
    finally:
        p.stop()


def test_set_pool_mode_from_session_does_not_hand_on_session_state(pgwarden_bin, pg):
    """The same through SET pool_mode on the console, to statement mode."""
    p = make_pooler(pgwarden_bin, pg, pool_mode="session", default_pool_size="1")
    try:
        a = psycopg.connect(p.dsn(dbname="appdb"), autocommit=True)
        a.execute("SET statement_timeout = '4321s'")
        console_exec(p, "SET pool_mode = statement")
        assert a.execute("SELECT 1").fetchone()[0] == 1
        with psycopg.connect(p.dsn(dbname="appdb"), autocommit=True) as b:
            assert b.execute("SHOW statement_timeout").fetchone()[0] == "0"
        a.close()
    finally:
        p.stop()



def test_reconnect_during_the_first_server_login_does_not_strand_the_client(pgwarden_bin, pg):
    """RECONNECT (or a RELOAD that moves the database) while the pool's first server is still
    logging in (here in its connect_query): that server closes instead of joining the pool,
    but the parameters it reported already make the pool's welcome. The client that waited for
    it must be greeted with them, not left waiting until query_wait_timeout."""
    dbs = {"appdb": f"host={pg.socket_dir} port={pg.port} dbname=appdb "
                    "connect_query='SELECT pg_sleep(1.5)'"}
    p = Pooler(pgwarden_bin, pg, databases=dbs,
               settings={"admin_users": "postgres", "query_wait_timeout": "8"}).start()
    try:
        t, got = appdb_client_in_background(p)
        wait_for(lambda: any(r["database"] == "appdb" for r in console_rows(p, "SHOW SERVERS")),
                 what="the first server launched")
        console_exec(p, "RECONNECT appdb")
        t.join(30)
        assert got == ["appdb"], str(got) + p.log()
        assert p.alive()
    finally:
        p.stop()



def test_reload_moving_a_database_during_its_first_login_greets_with_the_new_target(
        pgwarden_bin, pg):
    """A RELOAD moves the database to another target while the pool's first server is still
    logging in to the old one. That server closes when its login ends; the parameters it
    reported are the old target's and must not become the pool's welcome: the client waiting
    for it is greeted by a server of the new target."""
    # server_encoding is reported at login only: a client keeps what its welcome said.
    if pg.psql("SELECT count(*) FROM pg_database WHERE datname = 'latin1db'") == "0":
        pg.psql("CREATE DATABASE latin1db ENCODING 'LATIN1' TEMPLATE template0 "
                "LC_COLLATE 'C' LC_CTYPE 'C'")
    with FaultProxy(pg.port) as proxy:
        # Server bytes one at a time: the RELOAD lands while the login is under way.
        proxy.set_fault(Fault("trickle", delay=0.005))
        dbs = {"appdb": f"host=127.0.0.1 port={proxy.port} dbname=appdb"}
        p = Pooler(pgwarden_bin, pg, databases=dbs,
                   settings={"admin_users": "postgres", "query_wait_timeout": "20"}).start()
        try:
            got = []

            def client():
                try:
                    with psycopg.connect(p.dsn(dbname="appdb"), autocommit=True) as c:
                        got.append(c.execute("SELECT current_database()").fetchone()[0])
                        got.append(c.info.parameter_status("server_encoding"))
                except psycopg.Error as e:
                    got.append(e)

            t = threading.Thread(target=client)
            t.start()
            wait_for(lambda: proxy.links(), what="the first server's connection")
            p.databases["appdb"] = f"host={pg.socket_dir} port={pg.port} dbname=latin1db"
            p.write_config()
            console_exec(p, "RELOAD")
            t.join(30)
            assert got == ["latin1db", "LATIN1"], str(got) + p.log()
            assert p.alive()
        finally:
            p.stop()


def concurrent_peak(pg, conns, rounds=5):
    """Runs short transactions on every connection at once; returns the most backends of
    appdb seen meanwhile."""
    seen = [0]
    done = threading.Event()

    def watch():
        while not done.is_set():
            seen[0] = max(seen[0], pooler_backends(pg))
            time.sleep(0.02)

    def work(c):
        for _ in range(rounds):
            c.execute("SELECT pg_sleep(0.05)")
            c.commit()

    w = threading.Thread(target=watch)
    w.start()
    ts = [threading.Thread(target=work, args=(c,)) for c in conns]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    done.set()
    w.join(10)
    return seen[0]


def test_reload_lowering_max_db_connections_closes_servers_over_it(pgwarden_bin, pg):
    """max_db_connections lowered by RELOAD below the servers the database has: the extra ones
    close (idle ones at once, busy ones when released) instead of serving on above the new
    limit; clients queue for the servers left."""
    p = make_pooler(pgwarden_bin, pg, default_pool_size="4", max_db_connections="4",
                    reserve_pool_size="0")
    try:
        conns = hold_servers(p, 4)
        assert pooler_backends(pg) == 4
        p.settings["max_db_connections"] = "2"
        p.write_config()
        console_exec(p, "RELOAD")
        conns[0].commit()
        conns[1].commit()
        wait_for(lambda: pooler_backends(pg) == 2, what="idle servers over the limit closed")
        conns[2].commit()
        conns[3].commit()
        wait_for(lambda: pooler_backends(pg) <= 2, what="released servers over the limit closed")
        assert concurrent_peak(pg, conns) <= 2
        for c in conns:
            c.close()
        assert p.alive()
    finally:
        p.stop()


def test_reload_lowering_pool_size_under_a_queue_closes_servers_over_it(pgwarden_bin, pg):
    """default_pool_size lowered by RELOAD while every server is busy and clients queue: no
    server is ever idle for the janitor to close, so the servers over the new size must close
    as they are released instead of serving the queue."""
    p = make_pooler(pgwarden_bin, pg, default_pool_size="4", reserve_pool_size="0")
    stop = threading.Event()

    def work(c):
        while not stop.is_set():
            c.execute("SELECT pg_sleep(0.05)")
            c.commit()

    conns = [psycopg.connect(p.dsn(dbname="appdb")) for _ in range(8)]
    ts = [threading.Thread(target=work, args=(c,)) for c in conns]
    try:
        for t in ts:
            t.start()
        wait_for(lambda: pooler_backends(pg) == 4, what="the pool full under the load")
        p.settings["default_pool_size"] = "2"
        p.write_config()
        console_exec(p, "RELOAD")
        wait_for(lambda: pooler_backends(pg) <= 2, what="servers over the new size closed")
        peak = 0
        for _ in range(10):
            peak = max(peak, pooler_backends(pg))
            time.sleep(0.05)
        assert peak <= 2
        assert p.alive()
    finally:
        stop.set()
        for t in ts:
            t.join(30)
        for c in conns:
            c.close()
        p.stop()


def test_set_max_user_connections_closes_servers_over_it(pgwarden_bin, pg):
    """The same for max_user_connections changed by SET on the console."""
    p = make_pooler(pgwarden_bin, pg, default_pool_size="4", reserve_pool_size="0")
    try:
        conns = hold_servers(p, 3)
        for c in conns:
            c.commit()
        assert pooler_backends(pg) == 3
        console_exec(p, "SET max_user_connections = 1")
        wait_for(lambda: pooler_backends(pg) == 1, what="idle servers over the limit closed")
        assert concurrent_peak(pg, conns) <= 1
        for c in conns:
            c.close()
    finally:
        p.stop()



def test_idle_server_over_a_lowered_limit_serves_no_client(pgwarden_bin, pg):
    """Right after SET lowers max_db_connections, before the janitor's pass closes the idle
    servers over it, a client's transaction must not be given one of them: it gets the one
    server the new limit allows."""
    p = make_pooler(pgwarden_bin, pg, default_pool_size="4", reserve_pool_size="0")
    try:
        conns = hold_servers(p, 3)
        for c in conns:
            c.commit()
        with psycopg.connect(p.dsn("postgres", "pgbouncer", password=""),
                             autocommit=True) as console:
            console.execute("SET max_db_connections = 1")
            conns[0].execute("SELECT 1")  # in a transaction: holds its server
            servers = [r for r in console.execute("SHOW SERVERS").fetchall()
                       if r[2] == "appdb"]
        assert len(servers) == 1, servers
        for c in conns:
            c.close()
    finally:
        p.stop()


def test_kill_of_a_database_without_a_pool_yet_holds_its_clients(pgwarden_bin, pg):
    """KILL db pauses the database until RESUME db (PgBouncer), also when no client of it has
    logged in yet, so that it has no pool: a client that logs in after the KILL (or was in the
    middle of its login during it) waits for RESUME instead of being served at once."""
    p = make_pooler(pgwarden_bin, pg)
    try:
        console_exec(p, "KILL appdb")
        t, got = appdb_client_in_background(p)
        time.sleep(1.0)
        held = not got
        console_exec(p, "RESUME appdb")
        t.join(20)
        assert held, got
        assert got == ["appdb"], got
    finally:
        p.stop()



def app_user_backends(pg):
    return int(pg.psql("SELECT count(*) FROM pg_stat_activity "
                       "WHERE backend_type = 'client backend' AND usename = 'app_user'"))


def test_reload_removing_a_database_lets_its_pool_go(pgwarden_bin, pg):
    """A [databases] entry removed by RELOAD: its clients in a transaction go on, new logins
    are refused, and once its last client left its servers close and its pool is freed (gone
    from SHOW POOLS), even for a forced-user database whose min_pool_size kept servers open
    with no client at all."""
    dbs = {"postgres": f"host={pg.socket_dir} port={pg.port} dbname=postgres",
           "appdb": f"host={pg.socket_dir} port={pg.port} dbname=appdb",
           "forced": f"host=127.0.0.1 port={pg.port} dbname=appdb user=app_user "
                     "password=app-pw min_pool_size=2"}
    p = Pooler(pgwarden_bin, pg, databases=dbs, settings={"admin_users": "postgres"}).start()
    try:
        wait_for(lambda: app_user_backends(pg) == 2, what="min_pool_size of the forced database")
        c = psycopg.connect(p.dsn(dbname="appdb"))
        c.execute("SELECT 1")  # holds its server in a transaction
        del p.databases["appdb"]
        del p.databases["forced"]
        p.write_config()
        console_exec(p, "RELOAD")
        assert c.execute("SELECT current_database()").fetchone()[0] == "appdb"
        c.commit()
        try:
            psycopg.connect(p.dsn(dbname="appdb")).close()
            raise AssertionError("a removed database still takes logins")
        except psycopg.OperationalError:
            pass
        wait_for(lambda: app_user_backends(pg) == 0, what="the removed database's servers closed")
        assert "forced" not in {r["database"] for r in console_rows(p, "SHOW POOLS")}
        c.close()
        wait_for(lambda: pooler_backends(pg) == 0, what="the servers of the last client closed")
        wait_for(lambda: "appdb" not in {r["database"] for r in console_rows(p, "SHOW POOLS")},
                 what="the removed database's pool freed")
        assert p.alive()
    finally:
        p.stop()



def appdb_pids(pg):
    return set(pg.psql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' "
                       "AND datname = 'appdb'").split())


def test_lowered_server_lifetime_applies_to_open_servers(pgwarden_bin, pg):
    """server_lifetime lowered by SET (or RELOAD): servers opened under the old, longer
    lifetime are replaced once they are older than the new one, as PgBouncer compares each
    server's age with the lifetime in force, not the hour they were given at connect."""
    p = make_pooler(pgwarden_bin, pg, server_lifetime="3600", server_lifetime_jitter="0")
    try:
        with psycopg.connect(p.dsn(dbname="appdb"), autocommit=True) as c:
            c.execute("SELECT 1")
            first = appdb_pids(pg)
            assert len(first) == 1
            console_exec(p, "SET server_lifetime = 1")
            time.sleep(1.2)  # older than the new lifetime (not a speed assertion)
            wait_for(lambda: not (appdb_pids(pg) & first), what="the old server closed")
            c.execute("SELECT 1")
            assert appdb_pids(pg) and not (appdb_pids(pg) & first)
        assert p.alive()
    finally:
        p.stop()


def run_pgbench(pg, port, *args, timeout=120):
    cmd = [pg.bin("pgbench"), "-n", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
           *args, "postgres"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={"PGSSLMODE": "disable", "PATH": "/usr/bin:/bin"})


def test_reload_and_set_in_a_loop_under_pgbench(pgwarden_bin, pgbench_db):
    """RELOAD and SET as fast as one console connection sends them while pgbench runs
    read/write transactions: pgbench sees no error, pgwarden keeps no server PostgreSQL does
    not list (nor the reverse), and its memory stays flat."""
    pg = pgbench_db
    p = make_pooler(pgwarden_bin, pg, default_pool_size="4", max_client_conn="100")
    try:
        stop = threading.Event()
        counts = {"reload": 0, "set": 0}
        errors = []

        def steer():
            with psycopg.connect(p.dsn("postgres", "pgbouncer", password=""),
                                 autocommit=True) as c:
                sizes = ["2", "6", "4"]
                i = 0
                while not stop.is_set():
                    for sql in (b"RELOAD", f"SET default_pool_size = {sizes[i % 3]}".encode(),
                                b"SET server_reset_query = 'DISCARD ALL'",
                                b"SET track_extra_parameters = 'IntervalStyle, search_path'"):
                        res = c.pgconn.exec_(sql)
                        if res.status != psycopg.pq.ExecStatus.COMMAND_OK:
                            errors.append((sql, res.error_message))
                    counts["reload"] += 1
                    counts["set"] += 3
                    i += 1

        t = threading.Thread(target=steer)
        t.start()
        rss = []
        try:
            for _ in range(3):
                out = run_pgbench(pg, p.port, "-c", "8", "-j", "2", "-T", "3")
                assert out.returncode == 0, out.stdout + out.stderr + p.log()
                assert "number of failed transactions: 0" in out.stdout, out.stdout
                rss.append(int(open(f"/proc/{p.proc.pid}/status").read()
                               .split("VmRSS:")[1].split()[0]))
        finally:
            stop.set()
            t.join(30)
        assert not errors, errors[:3]
        assert counts["reload"] > 50, counts
        if "ASAN_OPTIONS" not in os.environ:  # RSS is meaningless under AddressSanitizer
            assert rss[-1] - rss[0] < 4096, rss
        # A lowered size closes servers as they are released: logins and exits may still
        # be under way when the steering stops, so the two sides are compared once settled.
        seen = []

        def settled():
            pids = {int(r["remote_pid"]) for r in console_rows(p, "SHOW SERVERS")}
            backends = {int(x) for x in pg.psql(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' "
                "AND datname = 'postgres' AND application_name <> 'psql' "
                "AND pid <> pg_backend_pid()").split()}
            seen[:] = [pids, backends]
            return pids == backends

        try:
            wait_for(settled, what="SHOW SERVERS matching pg_stat_activity")
        except AssertionError:
            raise AssertionError(seen)
        assert p.alive()
    finally:
        p.stop()

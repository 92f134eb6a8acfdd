"""Server-side behaviour that PgBouncer's own test suite checks (docs/COMPATIBILITY.md): one
pool per forced-user database, min_pool_size without clients, eviction under
max_db_connections, server_check_delay = 0, clients kept queued while server logins fail (and
failed together when the server refuses the login), a server that PostgreSQL ended while idle,
long cleartext passwords, SHUTDOWN WAIT_FOR_SERVERS, server_lifetime = 0, the per-database
and per-user settings, and PgBouncer's log lines."""
import os
import re
import shutil
import signal
import socket
import struct
import tempfile
import threading
import time

import psycopg
import pytest

from pgfixture import PASSWORDS
from serve_helpers import FakeServer, Pooler, be_msg, console_rows, wait_for

ADMIN = {"admin_users": "postgres"}


def console(p):
    return psycopg.connect(p.dsn("postgres", "pgbouncer", password=""), autocommit=True)


def console_ok(p, cmd):
    with console(p) as c:
        res = c.pgconn.exec_(cmd.encode())
        assert res.status == psycopg.pq.ExecStatus.COMMAND_OK, res.error_message


def servers_of(p, db):
    return [r for r in console_rows(p, "SHOW SERVERS") if r["database"] == db]


def full_log(p):
    with open(p.logfile, errors="replace") as f:
        return f.read()


def run_threads(fns, timeout=30):
    """Runs each fn in a thread; returns their results or exceptions, in order."""
    out = [None] * len(fns)

    def body(i):
        try:
            out[i] = fns[i]()
        except BaseException as e:  # noqa: B902 - handed to the caller
            out[i] = e

    threads = [threading.Thread(target=body, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a client hung"
    return out


def sleeper(p, user, db, seconds):
    def go():
        with psycopg.connect(p.dsn(user, db, password=""), autocommit=True) as c:
            c.execute(f"SELECT pg_sleep({seconds})")
            return c.execute("SELECT current_user").fetchone()[0]
    return go


def error_msg(sqlstate, message):
    fields = b"SFATAL\0" + b"C" + sqlstate.encode() + b"\0" + b"M" + message.encode() + b"\0\0"
    return be_msg(b"E", fields)


def simple_query(conn, sql):
    """The first value of a simple-protocol query (MiniServer speaks no other)."""
    res = conn.pgconn.exec_(sql.encode())
    assert res.status == psycopg.pq.ExecStatus.TUPLES_OK, res.error_message
    return res.get_value(0, 0).decode()


class MiniServer(FakeServer):
    """A PostgreSQL stand-in: logs the pooler in (asking for a cleartext password when
    password is set, or failing the first `starting_up` logins with 57P03), then answers
    every simple query with one row holding "1" (an error for the pooler's max_connections
    query)."""

    def __init__(self, password=None, starting_up=0):
        self.password = password
        self.starting_up = starting_up
        self.logins = 0
        self.passwords = []
        super().__init__()

    def serve(self, conn):
        conn.settimeout(10)
        self.read_startup(conn)
        self.logins += 1
        if self.logins <= self.starting_up:
            conn.sendall(error_msg("57P03", "the database system is starting up"))
            return
        if self.password is not None:
            conn.sendall(be_msg(b"R", struct.pack("!I", 3)))
            t, body = self.read_msg(conn)
            self.passwords.append(body.rstrip(b"\0").decode())
            if t != b"p" or body.rstrip(b"\0").decode() != self.password:
                conn.sendall(error_msg("28P01", "password authentication failed"))
                return
        self.send_login_ok(conn)
        for body in self.queries(conn):
            if b"max_connections" in body:
                conn.sendall(error_msg("42704", "no such setting") + be_msg(b"Z", b"I"))
                continue
            field = b"x\0" + struct.pack("!IhIhih", 0, 0, 25, -1, -1, 0)
            conn.sendall(be_msg(b"T", struct.pack("!h", 1) + field) +
                         be_msg(b"D", struct.pack("!hi", 1, 1) + b"1") +
                         be_msg(b"C", b"SELECT 1\0") + be_msg(b"Z", b"I"))


# -- 1. forced-user databases: one pool ---------------------------------------------------


def test_forced_user_database_has_one_pool_of_its_own_size(pgwarden_bin, pg):
    """test_limits::test_pool_size: clients of several users on a database with user= share
    one pool of the database's pool_size; a [users] pool_size of a client user does not
    apply. SHOW POOLS lists the forced user."""
    dbs = {"forced": f"host={pg.socket_dir} port={pg.port} dbname=postgres user=app_user "
                     "pool_size=2",
           "postgres": f"host={pg.socket_dir} port={pg.port} dbname=postgres"}
    p = Pooler(pgwarden_bin, pg, databases=dbs, users={"trust_user": "pool_size=1"},
               settings=ADMIN).start()
    try:
        got = run_threads([sleeper(p, u, "forced", 0.5)
                           for u in ("trust_user", "monitor", "nopriv") * 2])
        assert got == ["app_user"] * 6, got
        assert len(servers_of(p, "forced")) == 2
        pools = [r for r in console_rows(p, "SHOW POOLS") if r["database"] == "forced"]
        assert [r["user"] for r in pools] == ["app_user"], pools
        # a database without user= keeps a pool per client user, sized by [users]
        run_threads([sleeper(p, "trust_user", "postgres", 0.5) for _ in range(3)])
        assert len(servers_of(p, "postgres")) == 1
    finally:
        p.stop()


# -- 2. min_pool_size without clients -----------------------------------------------------


def test_min_pool_size_of_a_forced_user_database_is_kept_without_clients(pgwarden_bin, pg):
    """test_limits::test_min_pool_size: a forced-user database with min_pool_size gets its
    servers before any client (also when it appears by RELOAD); others wait for a client."""
    dbs = {"plain": f"host={pg.socket_dir} port={pg.port} dbname=postgres min_pool_size=3"}
    p = Pooler(pgwarden_bin, pg, databases=dbs, settings=ADMIN).start()
    try:
        p.databases["minforced"] = (f"host={pg.socket_dir} port={pg.port} dbname=postgres "
                                    "user=app_user min_pool_size=3")
        p.write_config()
        console_ok(p, "RELOAD")
        wait_for(lambda: len(servers_of(p, "minforced")) == 3, timeout=5,
                 what="3 servers for minforced")
        assert servers_of(p, "plain") == []
        # never beyond pool_size
        p.databases["minforced"] += " pool_size=2"
        p.write_config()
        console_ok(p, "RELOAD")
        console_ok(p, "RECONNECT minforced")
        time.sleep(1.5)
        assert len(servers_of(p, "minforced")) == 2
    finally:
        p.stop()


# -- 3. max_db_connections evicts an idle server of another pool -------------------------


def test_max_db_connections_evicts_an_idle_server_of_another_pool(pgwarden_bin, pg):
    """test_limits::test_max_db_connections: the database's limit is taken by one user's idle
    servers; another user's client gets a server by closing one of them ("evicted")."""
    dbs = {"limited": f"host={pg.socket_dir} port={pg.port} dbname=postgres "
                      "max_db_connections=2"}
    p = Pooler(pgwarden_bin, pg, databases=dbs,
               settings={**ADMIN, "query_wait_timeout": "3"}).start()
    try:
        run_threads([sleeper(p, "app_user", "limited", 0.3) for _ in range(2)])
        assert len(servers_of(p, "limited")) == 2
        t0 = time.time()
        assert sleeper(p, "monitor", "limited", 0)() == "monitor"
        assert time.time() - t0 < 2
        assert "closing because: evicted" in full_log(p)
        assert len(servers_of(p, "limited")) == 2
    finally:
        p.stop()


def test_min_pool_size_stays_within_max_user_connections(pgwarden_bin, pg):
    """test_limits::test_min_pool_size_with_lower_max_user_connections: min_pool_size opens
    no more than max_user_connections allows, and evicts nothing for it."""
    dbs = {"minp": f"host={pg.socket_dir} port={pg.port} dbname=postgres min_pool_size=5"}
    p = Pooler(pgwarden_bin, pg, databases=dbs, users={"app_user": "max_user_connections=2"},
               settings=ADMIN).start()
    try:
        sleeper(p, "app_user", "minp", 1.5)()
        assert len(servers_of(p, "minp")) == 2
        log = full_log(p)
        assert log.count("new connection to server") == 2, log
        assert "evicted" not in log
    finally:
        p.stop()


# -- 4. server_check_delay = 0 ------------------------------------------------------------


@pytest.mark.parametrize("check, backends", [("SELECT 1/0", 3), ("", 1)])
def test_server_check_delay_zero_checks_before_every_reuse(pgwarden_bin, pg, check, backends):
    """With server_check_delay = 0 every reuse runs the check: one that fails replaces the
    server each time (a new backend per transaction); one that passes keeps it."""
    p = Pooler(pgwarden_bin, pg, settings={"server_check_delay": "0",
                                           "server_check_query": check,
                                           "default_pool_size": "1"}).start()
    try:
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            pids = [c.execute("SELECT pg_backend_pid()").fetchone()[0] for _ in range(3)]
        assert len(set(pids)) == backends, pids
    finally:
        p.stop()


# -- 5. failed server logins --------------------------------------------------------------


def test_clients_wait_while_the_server_cannot_be_reached(pgwarden_bin, pg):
    """test_timeouts::test_server_login_retry, test_misc::test_scram_server: a connect that
    fails leaves the client queued; the login is retried after server_login_retry and the
    client is served once the server is there. The log says "connect failed"."""
    sockdir = tempfile.mkdtemp(prefix="pgwarden-late-")
    os.rmdir(sockdir)  # not there yet
    dbs = {"late": f"host={sockdir} port={pg.port} dbname=postgres"}
    p = Pooler(pgwarden_bin, pg, databases=dbs, settings={"server_login_retry": "1"}).start()
    try:
        def appear():
            time.sleep(1.2)
            os.mkdir(sockdir)
            sock = f".s.PGSQL.{pg.port}"
            os.symlink(os.path.join(pg.socket_dir, sock), os.path.join(sockdir, sock))

        def client():
            with psycopg.connect(p.dsn(dbname="late")) as c:
                return c.execute("SELECT 1").fetchone()[0]

        t0 = time.time()
        got = run_threads([client, appear])
        assert got[0] == 1, got
        assert time.time() - t0 >= 1.0
        assert "connect failed" in full_log(p)
    finally:
        p.stop()
        shutil.rmtree(sockdir, ignore_errors=True)


def test_a_server_starting_up_is_waited_for(pgwarden_bin, pg):
    """test_operations::test_database_restart: 57P03 ("the database system is starting up")
    at a server login is retried after server_login_retry; no client gets it."""
    srv = MiniServer(starting_up=1)
    dbs = {"mini": f"host=127.0.0.1 port={srv.port} dbname=x"}
    p = Pooler(pgwarden_bin, pg, databases=dbs, settings={"server_login_retry": "1",
                                                         "default_pool_size": "1",
                                                         "server_tls_sslmode": "disable"}
               ).start()
    try:
        def client():
            with psycopg.connect(p.dsn(dbname="mini"), autocommit=True) as c:
                return simple_query(c, "SELECT 1")

        def later_client():
            time.sleep(0.3)  # arrives while the retry is not due yet
            return client()

        assert run_threads([client, later_client]) == ["1", "1"]
        assert srv.logins >= 2
    finally:
        p.stop()
        srv.stop()


def drop_role(pg, role):
    """Drops role once its sessions (the stopped pooler's servers) are gone."""
    def gone():
        pg.psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'")
        return pg.psql(f"SELECT count(*) FROM pg_stat_activity WHERE usename = '{role}'") == "0"
    wait_for(gone, timeout=10, what=f"the sessions of {role} to end")
    pg.psql(f"DROP ROLE IF EXISTS {role}")


def role_fixture(name, options):
    @pytest.fixture
    def fixture(pg):
        pg.psql(f"DROP ROLE IF EXISTS {name}")
        pg.psql(f"CREATE ROLE {name} {options}")
        yield name
        drop_role(pg, name)
    return fixture


pw_role = role_fixture("g2_pw_user", "LOGIN PASSWORD 'foo'")
nologin_role = role_fixture("g2_msg_user", "LOGIN")


def test_a_refused_login_fails_the_waiting_clients(pgwarden_bin, pg, pw_role):
    """test_auth::test_change_server_password_reconnect: the only server is held in a
    transaction and marked by RECONNECT; the new server's login is refused (28P01): every
    waiting client gets that error at once, and PostgreSQL sees one attempt."""
    dbs = {"pw": f"host=127.0.0.1 port={pg.port} dbname=postgres user={pw_role}"}
    p = Pooler(pgwarden_bin, pg, databases=dbs, userlist={**PASSWORDS, pw_role: "foo"},
               settings={**ADMIN, "default_pool_size": "1", "server_login_retry": "15",
                         "server_tls_sslmode": "disable"}).start()
    try:
        with psycopg.connect(p.dsn(dbname="pw")) as c:
            c.execute("SELECT 1")
        pg.psql(f"ALTER ROLE {pw_role} PASSWORD 'bar'")
        holder = psycopg.connect(p.dsn(dbname="pw"))
        holder.execute("SELECT 1")  # a transaction keeps the server

        def waiter():
            with psycopg.connect(p.dsn(dbname="pw")) as c:
                return c.execute("SELECT 1").fetchone()[0]

        results = []
        threads = [threading.Thread(target=lambda: results.append(run_threads([waiter])[0]))
                   for _ in range(3)]
        for t in threads:
            t.start()
        wait_for(lambda: sum(int(r["cl_waiting"]) for r in console_rows(p, "SHOW POOLS")
                             if r["database"] == "pw") == 3, what="3 waiting clients")
        console_ok(p, "RECONNECT")
        t0 = time.time()
        console_ok(p, "SET default_pool_size = 2")
        for t in threads:
            t.join(10)
        assert time.time() - t0 < 5
        assert len(results) == 3
        for r in results:
            assert isinstance(r, psycopg.OperationalError), results
            assert "password authentication failed" in str(r), results
        log = full_log(p)
        assert log.count("closing because: password authentication failed for user") == 4, log
        holder.close()
    finally:
        p.stop()


# -- 6. a server ended by PostgreSQL while idle --------------------------------------------


def test_a_server_terminated_while_idle_is_not_handed_out(pgwarden_bin, pg, nologin_role):
    """test_auth::test_message: the pool's idle server is terminated, and the role may no
    longer log in: the next client must get a fresh login (and its error), never the dead
    server, however soon it comes."""
    p = Pooler(pgwarden_bin, pg, pool_mode="statement",
               userlist={**PASSWORDS, nologin_role: ""}).start()
    admin = psycopg.connect(pg.dsn(), autocommit=True)  # straight to PostgreSQL: no delay
    try:
        for _ in range(5):
            keep = psycopg.connect(p.dsn(nologin_role, "postgres", password=""), autocommit=True)
            keep.execute("SELECT 1")  # the pool has an idle server
            time.sleep(0.05)
            admin.execute(f"ALTER ROLE {nologin_role} NOLOGIN")
            # with a timeout, pg_terminate_backend waits for the backend to be gone: before
            # that, nothing on the pooler's socket tells the server is about to die
            admin.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                          f"WHERE usename = '{nologin_role}'")
            for _ in range(2):
                with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
                    with psycopg.connect(p.dsn(nologin_role, "postgres", password="")) as c:
                        c.execute("SELECT 1")
            keep.close()
            admin.execute(f"ALTER ROLE {nologin_role} LOGIN")
            time.sleep(1.1)  # server_login_retry
    finally:
        admin.close()
        p.stop()


# -- 7. a long cleartext password --------------------------------------------------------


def test_a_long_cleartext_server_password(pgwarden_bin, pg):
    """test_auth::test_password_server (p4l): a 2,047-byte password from auth_file, sent to a
    server that asks for cleartext."""
    long_pw = ("longpass" * 300)[:2047]
    srv = MiniServer(password=long_pw)
    dbs = {"p4l": f"host=127.0.0.1 port={srv.port} dbname=x user=longpass"}
    p = Pooler(pgwarden_bin, pg, databases=dbs, userlist={**PASSWORDS, "longpass": long_pw},
               settings={"server_tls_sslmode": "disable"}).start()
    try:
        with psycopg.connect(p.dsn(dbname="p4l"), autocommit=True) as c:
            assert simple_query(c, "SELECT 1") == "1"
        assert srv.passwords == [long_pw]
    finally:
        p.stop()
        srv.stop()


# -- 8. SHUTDOWN WAIT_FOR_SERVERS / WAIT_FOR_CLIENTS ---------------------------------------


def test_shutdown_wait_for_servers_fails_clients_that_need_a_server(pgwarden_bin, pg):
    """test_misc::test_newly_paused_client_during_wait_for_servers_shutdown and
    test_already_paused_...: a client in a transaction goes on; one that needs a server (now
    or already queued) gets "server shutting down" instead of waiting."""
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               settings={**ADMIN, "default_pool_size": "1"}).start()
    try:
        busy = psycopg.connect(p.dsn())
        busy.execute("SELECT 1")
        queued = psycopg.connect(p.dsn(), autocommit=True)
        idle = psycopg.connect(p.dsn(), autocommit=True)
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("q", run_threads(
            [lambda: queued.execute("SELECT 1").fetchone()[0]])[0]))
        t.start()
        wait_for(lambda: any(r["cl_waiting"] == "1" for r in console_rows(p, "SHOW POOLS")),
                 what="a queued client")
        console_ok(p, "SHUTDOWN WAIT_FOR_SERVERS")
        t.join(5)
        assert isinstance(out.get("q"), psycopg.OperationalError), out
        t0 = time.time()
        with pytest.raises(psycopg.OperationalError):
            idle.execute("SELECT 1")
        assert time.time() - t0 < 2
        assert busy.execute("SELECT 2").fetchone()[0] == 2
        assert "closing because: server shutting down" in full_log(p)
        busy.commit()
        p.proc.wait(timeout=10)
    finally:
        p.stop()


@pytest.mark.parametrize("how", ["WAIT_FOR_SERVERS", "WAIT_FOR_CLIENTS"])
def test_shutdown_keeps_the_unix_socket_for_the_console(pgwarden_bin, pg, how):
    """test_misc::test_shutdown_wait_for_servers / _clients: after the command the TCP
    listener is closed, the unix socket still serves the admin console, and no other
    database."""
    p = Pooler(pgwarden_bin, pg, pool_mode="session", settings=ADMIN).start()
    try:
        held = psycopg.connect(p.dsn(), autocommit=True)
        held.execute("SELECT 1")
        console_ok(p, f"SHUTDOWN {how}")
        time.sleep(0.5)
        unix = f"host={p.dir} port={p.port} user=postgres connect_timeout=5"
        with psycopg.connect(f"{unix} dbname=pgbouncer", autocommit=True) as c:
            assert c.pgconn.exec_(b"SHOW VERSION").status == psycopg.pq.ExecStatus.TUPLES_OK
        with pytest.raises(psycopg.OperationalError):
            with psycopg.connect(f"{unix} dbname=postgres", autocommit=True) as c:
                c.execute("SELECT 1")
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(p.dsn(), connect_timeout=2)
        held.close()
        p.proc.wait(timeout=10)
        assert not os.path.exists(os.path.join(p.dir, f".s.PGSQL.{p.port}"))
    finally:
        p.stop()


def test_sigusr2_during_shutdown_is_ignored(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, settings=ADMIN).start()
    try:
        held = psycopg.connect(p.dsn(), autocommit=True)
        console_ok(p, "SHUTDOWN WAIT_FOR_CLIENTS")
        p.signal(signal.SIGUSR2)
        wait_for(lambda: "got SIGUSR2 while shutting down, ignoring" in full_log(p), timeout=5,
                 what="the SIGUSR2 line")
        # RESUME cannot undo a shutdown: PgBouncer's answer (test_misc::resume_during_shutdown).
        with psycopg.connect(host=p.dir, port=p.port, user="postgres", dbname="pgbouncer",
                             autocommit=True) as c:  # TCP listeners are closed by now
            with pytest.raises(psycopg.errors.ProtocolViolation, match="pooler is shutting down"):
                c.execute("RESUME")
        held.close()
    finally:
        p.stop()


def test_auto_database_is_logged_once_when_registered(pgwarden_bin, pg):
    """A database known only through the "*" entry: PgBouncer's "registered new
    auto-database" line, once per database, not for configured ones."""
    dbs = {"postgres": f"host=127.0.0.1 port={pg.port} dbname=postgres",
           "*": f"host=127.0.0.1 port={pg.port}"}
    pg.psql("DROP DATABASE IF EXISTS autodb_x")
    pg.psql("CREATE DATABASE autodb_x")
    p = Pooler(pgwarden_bin, pg, databases=dbs,
               settings={"server_tls_sslmode": "disable"}).start()
    try:
        for _ in range(2):
            for db in ("postgres", "autodb_x"):
                with psycopg.connect(p.dsn("postgres", db), autocommit=True) as c:
                    assert c.execute("SELECT current_database()").fetchone()[0] == db
        log = full_log(p)
        assert log.count("registered new auto-database: autodb_x") == 1, log
        assert "registered new auto-database: postgres" not in log, log
    finally:
        p.stop()


# -- 9. server_lifetime = 0: a server serves one client ------------------------------------


def test_server_lifetime_zero_uses_a_server_once(pgwarden_bin, pg):
    """test_admin::test_socket_id / test_server_id: with server_lifetime = 0 each client gets a
    new server, numbered right after the client from the one id counter."""
    p = Pooler(pgwarden_bin, pg, pool_mode="session",
               settings={**ADMIN, "server_lifetime": "0"}).start()
    try:
        pids = []
        for _ in range(3):
            with psycopg.connect(p.dsn(), autocommit=True) as c:
                pids.append(c.execute("SELECT pg_backend_pid()").fetchone()[0])
                client = [r for r in console_rows(p, "SHOW CLIENTS") if r["database"] ==
                          "postgres"]
                server = servers_of(p, "postgres")
                assert len(client) == 1 and len(server) == 1
                assert int(server[0]["id"]) == int(client[0]["id"]) + 1
        assert len(set(pids)) == 3, pids
        wait_for(lambda: not servers_of(p, "postgres"), timeout=5, what="no server kept")
    finally:
        p.stop()


# -- 10. PgBouncer's log lines ------------------------------------------------------------


def test_pgbouncer_log_lines(pgwarden_bin, pg):
    """Lines PgBouncer's suite looks for: "new connection to server (from ...)", "closing
    because: ...", "taking connection from reserve_pool", "query timeout"."""
    dbs = {"tcp": f"host=127.0.0.1 port={pg.port} dbname=postgres"}
    p = Pooler(pgwarden_bin, pg, databases=dbs, users={"postgres": "pool_size=1"},
               settings={"reserve_pool_size": "1", "reserve_pool_timeout": "0.3",
                         "query_timeout": "1", "server_tls_sslmode": "disable"}).start()
    try:
        run_threads([sleeper(p, "postgres", "tcp", 0.6) for _ in range(2)])
        with pytest.raises(psycopg.OperationalError, match="query timeout"):
            sleeper(p, "postgres", "tcp", 3)()
        log = full_log(p)
        assert "new connection to server (from 127.0.0.1:" in log, log
        assert "taking connection from reserve_pool" in log, log
        assert "closing because: query timeout" in log, log
    finally:
        p.stop()


def test_refused_logins_are_logged_with_their_reason(pgwarden_bin, pg):
    """A client refused while it logs in gets PgBouncer's "closing because:" line naming the
    database and user it asked for, and a server's refusal is logged with its severity."""
    dbs = {"postgres": f"host=127.0.0.1 port={pg.port} dbname=postgres",
           "gone": f"host=127.0.0.1 port={pg.port} dbname=no_such_pg_db"}
    p = Pooler(pgwarden_bin, pg, databases=dbs,
               settings={"server_tls_sslmode": "disable"}).start()
    try:
        with pytest.raises(psycopg.OperationalError, match="no such database: nosuchdb"):
            psycopg.connect(p.dsn("postgres", "nosuchdb"))
        with pytest.raises(psycopg.OperationalError, match='"no_such_pg_db" does not exist'):
            psycopg.connect(p.dsn("postgres", "gone"))
        log = full_log(p)
        assert re.search(r"nosuchdb/postgres: closing because: no such database: nosuchdb "
                         r"\(age=\d+s\)", log), log
        assert 'server login failed: FATAL database "no_such_pg_db" does not exist (3D000)' \
            in log, log
        assert re.search(r'gone/postgres: closing because: database "no_such_pg_db" does not '
                         r"exist", log), log
    finally:
        p.stop()


@pytest.mark.parametrize("user", ["md5_user", "app_user"])
def test_an_empty_database_password_falls_back_to_auth_file(pgwarden_bin, pg, user):
    """`password=` with nothing after it is no password: the forced user logs in to the
    server with auth_file's secret (md5 and SCRAM), not with an empty one."""
    dbs = {"forced": f"host=127.0.0.1 port={pg.port} dbname=postgres user={user} password="}
    p = Pooler(pgwarden_bin, pg, databases=dbs,
               settings={"server_tls_sslmode": "disable"}).start()
    try:
        with psycopg.connect(p.dsn("postgres", "forced"), autocommit=True) as c:
            assert c.execute("SELECT current_user").fetchone()[0] == user
    finally:
        p.stop()


def test_application_name_add_host(pgwarden_bin, pg):
    """application_name_add_host: the server sees "NAME - ADDRESS:PORT" (the client's own
    address), "app - ..." for a client that sends no name, "unix(PID@HOST):PORT" over the
    unix socket; a later SET is left alone."""
    p = Pooler(pgwarden_bin, pg, pool_mode="session",
               settings={"application_name_add_host": "1"}).start()
    try:
        with psycopg.connect(p.dsn(), application_name="billing", autocommit=True) as c:
            got = c.execute("SELECT application_name FROM pg_stat_activity "
                            "WHERE pid = pg_backend_pid()").fetchone()[0]
            with socket.socket(fileno=os.dup(c.pgconn.socket)) as own:
                port = own.getsockname()[1]
            assert got == f"billing - 127.0.0.1:{port}", got
            c.execute("SET application_name = 'renamed'")
            assert c.execute("SHOW application_name").fetchone()[0] == "renamed"
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            got = c.execute("SHOW application_name").fetchone()[0]
            assert re.fullmatch(r"app - 127\.0\.0\.1:\d+", got), got
        with psycopg.connect(host=p.dir, port=p.port, user="postgres", dbname="postgres",
                             application_name="local", autocommit=True) as c:
            got = c.execute("SHOW application_name").fetchone()[0]
            assert re.fullmatch(rf"local - unix\({os.getpid()}@[^)]+\):{p.port}", got), got
    finally:
        p.stop()


@pytest.mark.parametrize("round_robin", ["0", "1"])
def test_server_round_robin(pgwarden_bin, pg, round_robin):
    """Idle servers are handed out most recently released first (one server does all the
    work of a sequential client), or with server_round_robin oldest first (all take turns)."""
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               settings={"default_pool_size": "3", "min_pool_size": "3",
                         "server_round_robin": round_robin, **ADMIN}).start()
    try:
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            wait_for(lambda: len(servers_of(p, "postgres")) >= 3, what="three servers")
            pids = [c.execute("SELECT pg_backend_pid()").fetchone()[0] for _ in range(9)]
        assert len(set(pids)) == (3 if round_robin == "1" else 1), pids
    finally:
        p.stop()


# -- 11. per-database and per-user settings -----------------------------------------------


def test_per_database_server_lifetime(pgwarden_bin, pg):
    """test_timeouts::test_server_lifetime_per_pool: server_lifetime in a [databases] entry."""
    dbs = {"short": f"host={pg.socket_dir} port={pg.port} dbname=postgres server_lifetime=1",
           "postgres": f"host={pg.socket_dir} port={pg.port} dbname=postgres"}
    p = Pooler(pgwarden_bin, pg, databases=dbs, settings=ADMIN).start()
    try:
        for db in ("short", "postgres"):
            sleeper(p, "postgres", db, 0)()
        time.sleep(2.5)
        assert servers_of(p, "short") == []
        assert len(servers_of(p, "postgres")) == 1
    finally:
        p.stop()


def test_per_user_pool_size_reserve_and_timeouts(pgwarden_bin, pg):
    """[users] pool_size and reserve_pool_size (test_limits::test_user_reserve_pool_size), and
    query_timeout / idle_transaction_timeout per user (test_timeouts::test_user_*)."""
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               users={"app_user": "pool_size=1 reserve_pool_size=1",
                      "monitor": "query_timeout=1",
                      "nopriv": "idle_transaction_timeout=1"},
               settings={**ADMIN, "reserve_pool_timeout": "0.5"}).start()
    try:
        run_threads([sleeper(p, "app_user", "postgres", 1.2) for _ in range(3)])
        assert len([r for r in servers_of(p, "postgres") if r["user"] == "app_user"]) == 2
        with pytest.raises(psycopg.OperationalError, match="query timeout"):
            sleeper(p, "monitor", "postgres", 3)()
        sleeper(p, "trust_user", "postgres", 1.5)()  # the global query_timeout (0) applies
        with psycopg.connect(p.dsn("nopriv", password="")) as c:
            c.execute("SELECT 1")
            time.sleep(2.5)
            with pytest.raises(psycopg.OperationalError):
                c.execute("SELECT 1")
        assert "idle transaction timeout" in full_log(p)
    finally:
        p.stop()


def test_client_connection_limits(pgwarden_bin, pg):
    """test_limits::test_max_db_client_connections_* / max_user_client_connections_*:
    logins beyond a database's or a user's client limit are refused."""
    dbs = {"lim": f"host={pg.socket_dir} port={pg.port} dbname=postgres "
                  "max_db_client_connections=2",
           "postgres": f"host={pg.socket_dir} port={pg.port} dbname=postgres"}
    p = Pooler(pgwarden_bin, pg, databases=dbs,
               users={"app_user": "max_user_client_connections=1"}, settings=ADMIN).start()
    held = []
    try:
        held += [psycopg.connect(p.dsn("monitor", "lim", password="")) for _ in range(2)]
        with pytest.raises(psycopg.OperationalError, match="max_db_client_connections"):
            psycopg.connect(p.dsn("monitor", "lim", password=""))
        held.append(psycopg.connect(p.dsn("app_user", "postgres", password="")))
        with pytest.raises(psycopg.OperationalError, match="max_user_client_connections"):
            psycopg.connect(p.dsn("app_user", "postgres", password=""))
        held.pop().close()

        def logs_in():  # once the pooler has seen the close
            try:
                psycopg.connect(p.dsn("app_user", "postgres", password="")).close()
                return True
            except psycopg.OperationalError:
                return False
        wait_for(logs_in, timeout=5, what="a login once the user's client left")
    finally:
        for c in held:
            c.close()
        p.stop()

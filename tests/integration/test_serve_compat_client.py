"""The client side as PgBouncer's users expect it: startup parameters beyond the five PgBouncer
tracks (in the packet and in `options`), RESET ALL and DISCARD ALL giving the client its
startup values back, parameters whose SET PostgreSQL does not report, track_extra_parameters,
prepared statement names as PostgreSQL treats them, the trust rule of auth_file, md5 falling
back to SCRAM, and the admin console's answers.

Most tests use a pool of one server, so every client of the test shares it: a value that
leaked from one client to another would show."""
import asyncio
import os

import psycopg
import pytest
from psycopg import pq

from serve_helpers import Pooler, wait_for

USER = "app_user"
DB = "appdb"


def start(pgwarden_bin, pg, pool_size="1", pool_mode="transaction", **kw):
    settings = {"default_pool_size": pool_size, "admin_users": "postgres",
                "stats_users": "monitor"}
    settings.update(kw.pop("settings", {}))
    return Pooler(pgwarden_bin, pg, pool_mode=pool_mode, settings=settings, **kw).start()


@pytest.fixture
def pooler(pgwarden_bin, pg):
    p = start(pgwarden_bin, pg)
    yield p
    p.stop()


def connect(pooler, password=None, **kw):
    """A client of USER on DB; kw (options, application_name) quoted by psycopg."""
    return psycopg.connect(pooler.dsn(USER, DB, password=password), autocommit=True, **kw)


def show(conn, name):
    return conn.execute(f"SHOW {name}").fetchone()[0]


def admin(pooler, sql):
    """Runs one console command; returns its rows, or raises the server's error."""
    with psycopg.connect(pooler.dsn("postgres", "pgbouncer"), autocommit=True) as c:
        res = c.pgconn.exec_(sql.encode())
        if res.status == pq.ExecStatus.FATAL_ERROR:
            raise psycopg.errors.lookup(res.error_field(pq.DiagnosticField.SQLSTATE).decode())(
                res.error_message.decode())
        names = [res.fname(i).decode() for i in range(res.nfields)]
        return [{names[i]: (res.get_value(r, i) or b"").decode() for i in range(res.nfields)}
                for r in range(res.ntuples)]


# ---- startup parameters -----------------------------------------------------------------

def asyncpg_or_skip():
    return pytest.importorskip("asyncpg", reason="python3-asyncpg (scripts/setup installs it)")


def test_any_startup_parameter_is_set_on_every_server(pooler):
    """A startup parameter PostgreSQL does not report (extra_float_digits, as PgJDBC sends it)
    is accepted and set whenever the client gets a server; a client without it keeps the
    server's default on the same server."""
    asyncpg = asyncpg_or_skip()

    async def main():
        a = await asyncpg.connect(host="127.0.0.1", port=pooler.port, user=USER,
                                  password="app-pw", database=DB,
                                  server_settings={"extra_float_digits": "2",
                                                   "lock_timeout": "4s"})
        with connect(pooler) as other:
            for _ in range(3):
                assert await a.fetchval("SHOW extra_float_digits") == "2"
                assert await a.fetchval("SHOW lock_timeout") == "4s"
                assert show(other, "extra_float_digits") == "1"
                assert show(other, "lock_timeout") == "0"
        await a.close()

    asyncio.run(main())


def test_set_of_a_startup_parameter_follows_the_client(pooler):
    """PgJDBC's way: extra_float_digits=2 at startup, then SET extra_float_digits = 3 in the
    extended protocol. The client reads 3 on every server from then on; a client that shares
    its server reads the default; a SET that failed, and one rolled back, change nothing."""
    with connect(pooler, options="-c extra_float_digits=2") as jdbc, connect(pooler) as other:
        assert show(jdbc, "extra_float_digits") == "2"
        res = jdbc.pgconn.exec_params(b"SET extra_float_digits = 3", [])  # Parse, Bind, Execute
        assert res.status == pq.ExecStatus.COMMAND_OK
        for _ in range(3):
            assert show(other, "extra_float_digits") == "1"
            assert show(jdbc, "extra_float_digits") == "3"
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            jdbc.execute("SET extra_float_digits = 99")
        assert show(other, "extra_float_digits") == "1"
        assert show(jdbc, "extra_float_digits") == "3"
        with jdbc.transaction(force_rollback=True):
            jdbc.execute("SET extra_float_digits = 0")
            assert show(jdbc, "extra_float_digits") == "0"
        assert show(other, "extra_float_digits") == "1"
        assert show(jdbc, "extra_float_digits") == "3"
        # Simple protocol, several statements, one of them failing: all rolled back.
        res = jdbc.pgconn.exec_(b"SET extra_float_digits = -1; SELECT 1/0")
        assert res.error_field(pq.DiagnosticField.SQLSTATE) == b"22012"
        assert show(other, "extra_float_digits") == "1"
        assert show(jdbc, "extra_float_digits") == "3"
        res = jdbc.pgconn.exec_(b"SET extra_float_digits TO -2; SELECT 1")
        assert res.status == pq.ExecStatus.TUPLES_OK
        assert show(other, "extra_float_digits") == "1"
        assert show(jdbc, "extra_float_digits") == "-2"
        jdbc.execute("SET extra_float_digits TO DEFAULT")
        assert show(other, "extra_float_digits") == "1"
        assert show(jdbc, "extra_float_digits") == "2"  # its startup value, as PostgreSQL


def test_options_settings_and_escapes(pooler):
    """libpq's options (PGOPTIONS): -c name=value, -cname=value and --name=value, with
    backslash escapes, as PostgreSQL reads them; a '-' in a name is a '_'."""
    cases = [
        ("  -c    datestyle=German,\\ YMD", "DateStyle", "German, YMD"),
        ("-c timezone=Europe/Lisbon  -c    datestyle=German,\\ YMD", "TimeZone",
         "Europe/Lisbon"),
        ("-ctimezone=Europe/Lisbon  -cdatestyle=German,\\ YMD", "DateStyle", "German, YMD"),
        ("--timezone=Europe/Lisbon  --datestyle=German,\\ YMD", "TimeZone", "Europe/Lisbon"),
        ("-c t\\imezone=\\E\\u\\r\\o\\pe/Lisbon", "TimeZone", "Europe/Lisbon"),
        ("-c statement-timeout=7s", "statement_timeout", "7s"),
    ]
    for options, name, want in cases:
        with connect(pooler, options=options) as c, connect(pooler) as other:
            assert show(c, name) == want, options
            assert show(other, "statement_timeout") == "0"
            assert show(c, name) == want, options


def test_options_other_switches_are_refused(pooler):
    for options in ("-d", "-c timezone", "-B 100", "-c"):
        with pytest.raises(psycopg.OperationalError,
                           match="only '-c config=val' and '--config=val' are allowed"):
            connect(pooler, options=options)
    with pytest.raises(psycopg.OperationalError, match="in options: user"):
        connect(pooler, options="-c user=postgres")
    assert pooler.alive()


def test_ignore_startup_parameters(pgwarden_bin, pg):
    """Listed names are dropped silently, from options too; with options itself listed, only
    the tracked parameters of options are used."""
    p = start(pgwarden_bin, pg, settings={"ignore_startup_parameters": "extra_float_digits"})
    try:
        with connect(p, options="-c extra_float_digits=2 -c lock_timeout=3s") as c:
            assert show(c, "extra_float_digits") == "1"
            assert show(c, "lock_timeout") == "3s"
        admin(p, "SET ignore_startup_parameters = 'options'")
        with connect(p, options="-c enable_seqscan=false -c timezone=Europe/Lisbon") as c:
            assert show(c, "enable_seqscan") == "on"
            assert show(c, "TimeZone") == "Europe/Lisbon"
    finally:
        p.stop()


def test_equivalent_value_is_set_once(pgwarden_bin, pg):
    """DateStyle=ISO is reported back as "ISO, MDY": the client has that from then on, so
    the pooler sets it once, not before every transaction (PgBouncer's varcache log lines)."""
    p = start(pgwarden_bin, pg, settings={"verbose": "2"})
    try:
        with connect(p, options="-c DateStyle=ISO") as c:
            for _ in range(3):
                c.execute("SELECT 1")
        log = p.log()
        assert log.count("varcache_apply: SET DateStyle='ISO';") == 1, log
        assert "varcache_set_canonical: setting DateStyle to its canonical version " \
               "ISO -> ISO, MDY" in log
    finally:
        p.stop()


def test_track_extra_parameters(pgwarden_bin, pg):
    """IntervalStyle is tracked by default: each client's SET stays its own. Listed names are
    tracked too; they are used even when ignore_startup_parameters names them."""
    p = start(pgwarden_bin, pg)
    try:
        with connect(p) as a, connect(p) as b:
            a.execute("SET IntervalStyle TO sql_standard")
            b.execute("SET IntervalStyle TO postgres_verbose")
            for _ in range(2):
                assert show(a, "IntervalStyle") == "sql_standard"
                assert show(b, "IntervalStyle") == "postgres_verbose"
        with connect(p) as c:
            assert show(c, "IntervalStyle") == "postgres"
    finally:
        p.stop()
    p = start(pgwarden_bin, pg, settings={"track_extra_parameters": "IntervalStyle, is_superuser",
                                          "ignore_startup_parameters": "IntervalStyle"})
    try:
        with connect(p, options="-c IntervalStyle=iso_8601") as a, connect(p) as b:
            assert show(a, "IntervalStyle") == "iso_8601"
            assert show(b, "IntervalStyle") == "postgres"
        assert "track_extra_parameters' is not supported" not in p.log()
    finally:
        p.stop()


def test_reset_all_gives_back_startup_values(pooler):
    """RESET ALL and DISCARD ALL return a session to its startup values in PostgreSQL: the
    client's own (application_name, TimeZone, and extra_float_digits, which the server does
    not report), not the server connection's."""
    opts = "-c TimeZone=America/New_York -c extra_float_digits=2"
    for reset in ("RESET ALL", "DISCARD ALL", "SELECT 1; RESET ALL"):
        with connect(pooler, application_name="mine", options=opts) as c, \
                connect(pooler) as other:
            c.execute("SET TimeZone = 'Asia/Tokyo'")
            c.execute("SET application_name = 'changed'")
            c.execute("SET extra_float_digits = 3")
            c.pgconn.exec_(reset.encode())
            assert show(c, "TimeZone") == "America/New_York", reset
            assert show(c, "application_name") == "mine", reset
            assert show(c, "extra_float_digits") == "2", reset
            assert show(other, "TimeZone") != "America/New_York"
            assert show(other, "extra_float_digits") == "1"
            c.execute("RESET TimeZone")
            assert show(c, "TimeZone") == "America/New_York"


def test_reset_all_in_session_mode(pgwarden_bin, pg):
    p = start(pgwarden_bin, pg, pool_mode="session", pool_size="2")
    try:
        with connect(p, application_name="mine", options="-c extra_float_digits=2") as c:
            c.execute("SET application_name = 'changed'")
            c.execute("RESET ALL")
            assert show(c, "application_name") == "mine"
            assert show(c, "extra_float_digits") == "2"
    finally:
        p.stop()


# ---- prepared statements ----------------------------------------------------------------

def test_prepared_name_reuse_is_refused(pooler):
    """Preparing a name the client has prepared is 42P05, as on PostgreSQL; the session and
    the first statement go on."""
    with connect(pooler) as c:
        assert c.pgconn.prepare(b"test", b"SELECT 1").status == pq.ExecStatus.COMMAND_OK
        res = c.pgconn.prepare(b"test", b"SELECT 2")
        assert res.status == pq.ExecStatus.FATAL_ERROR
        assert res.error_field(pq.DiagnosticField.SQLSTATE) == b"42P05"
        assert b'"test" already exists' in res.error_message
        res = c.pgconn.exec_prepared(b"test", [])
        assert res.get_value(0, 0) == b"1"
        # A failed Parse leaves the name free, as on PostgreSQL.
        res = c.pgconn.prepare(b"later", b"SELECT * FROM no_such_table_yet")
        assert res.status == pq.ExecStatus.FATAL_ERROR
        res = c.pgconn.prepare(b"later", b"SELECT 3")
        assert res.status == pq.ExecStatus.COMMAND_OK, res.error_message
        assert c.pgconn.exec_prepared(b"later", []).get_value(0, 0) == b"3"
    assert "prepared statement 'test' was already prepared" in pooler.log()


@pytest.mark.parametrize("drop", ["DEALLOCATE ALL", "DISCARD ALL"])
def test_dropped_statements_are_gone(pooler, drop):
    """After the client's DEALLOCATE ALL or DISCARD ALL its statements are gone, as on
    PostgreSQL: executing one fails, preparing the name again works; another client's
    statement of the same query is not affected."""
    with connect(pooler) as c, connect(pooler) as other:
        assert c.pgconn.prepare(b"s1", b"SELECT 1").status == pq.ExecStatus.COMMAND_OK
        assert other.pgconn.prepare(b"o1", b"SELECT 1").status == pq.ExecStatus.COMMAND_OK
        res = c.pgconn.exec_(drop.encode())
        assert res.status == pq.ExecStatus.COMMAND_OK
        res = c.pgconn.exec_prepared(b"s1", [])
        assert res.status == pq.ExecStatus.FATAL_ERROR
        assert res.error_field(pq.DiagnosticField.SQLSTATE) == b"26000"
        assert c.pgconn.prepare(b"s1", b"SELECT 2").status == pq.ExecStatus.COMMAND_OK
        assert c.pgconn.exec_prepared(b"s1", []).get_value(0, 0) == b"2"
        assert other.pgconn.exec_prepared(b"o1", []).get_value(0, 0) == b"1"


def test_lowered_max_prepared_statements_takes_effect(pgwarden_bin, pg):
    """PgBouncer's test_evict_statement_cache: 5 statements on the server, the limit lowered
    to 2, the next new statement leaves 2."""
    p = start(pgwarden_bin, pg, settings={"max_prepared_statements": "5"})
    try:
        with connect(p) as c:
            for i in range(5):
                assert c.execute(f"SELECT '{i}'", prepare=True).fetchone()[0] == str(i)
            count = "SELECT count(*) FROM pg_prepared_statements"
            assert c.execute(count).fetchone()[0] == 5
            admin(p, "SET max_prepared_statements = 2")
            assert c.execute(count).fetchone()[0] == 5
            assert c.execute("SELECT '10'", prepare=True).fetchone()[0] == "10"
            assert c.execute(count).fetchone()[0] == 2
    finally:
        p.stop()


# ---- authentication ---------------------------------------------------------------------

def test_trust_lets_in_only_auth_file_users(pgwarden_bin, pg):
    userlist = {"app_user": "", "postgres": "postgres-pw"}
    p = start(pgwarden_bin, pg, auth_type="trust", userlist=userlist)
    try:
        with connect(p, password="whatever") as c:  # listed, empty secret: in
            assert c.execute("SELECT current_user").fetchone()[0] == USER
        with pytest.raises(psycopg.OperationalError, match='"trust" authentication failed'):
            psycopg.connect(p.dsn("md5_user", DB, password="x"))
        # The console goes by admin_users: listed there, postgres gets in.
        assert admin(p, "SHOW VERSION")
    finally:
        p.stop()


def test_md5_with_a_scram_secret_uses_scram(pgwarden_bin, pg):
    """auth_type = md5 and a SCRAM secret in auth_file: that user logs in with SCRAM."""
    with psycopg.connect(pg.dsn("postgres"), autocommit=True) as c:
        secret = c.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s",
                           (USER,)).fetchone()[0]
    assert secret.startswith("SCRAM-SHA-256$")
    userlist = {"app_user": secret, "postgres": "postgres-pw"}
    p = start(pgwarden_bin, pg, auth_type="md5", userlist=userlist)
    try:
        with connect(p, password="app-pw") as c:
            assert c.execute("SELECT 1").fetchone()[0] == 1
        with pytest.raises(psycopg.OperationalError, match="SASL authentication failed"):
            connect(p, password="wrong")
    finally:
        p.stop()


def test_scram_failure_wording(pgwarden_bin, pg):
    p = start(pgwarden_bin, pg, auth_type="scram-sha-256")
    try:
        for user in (USER, "nosuchuser"):
            with pytest.raises(psycopg.OperationalError) as e:
                psycopg.connect(p.dsn(user, DB, password="wrong"))
            assert "SASL authentication failed" in str(e.value)
            assert f'password authentication failed for user "{user}"' in str(e.value)
    finally:
        p.stop()


# ---- admin console ----------------------------------------------------------------------

def test_console_errors_as_pgbouncer(pooler):
    with pytest.raises(psycopg.errors.ProtocolViolation, match="no such database: dne"):
        admin(pooler, "KILL dne")
    with pytest.raises(psycopg.errors.ProtocolViolation, match="client not found"):
        admin(pooler, "KILL_CLIENT 100000")
    with pytest.raises(psycopg.errors.ProtocolViolation, match="invalid client pointer supplied"):
        admin(pooler, "KILL_CLIENT non_existant_client_id")
    with pytest.raises(psycopg.errors.ProtocolViolation, match="no such database: dne"):
        admin(pooler, "PAUSE dne")


def test_reload_failure_answer(pooler):
    with open(pooler.ini, "a") as f:
        f.write("server_lifetime = invalid_server_lifetime\n")
    with pytest.raises(psycopg.errors.ConfigFileError,
                       match="RELOAD failed, see logs for additional details"):
        admin(pooler, "RELOAD")
    wait_for(lambda: "server_lifetime" in pooler.log(), what="the reason in the log")
    with connect(pooler) as c:  # the old configuration stands
        assert c.execute("SELECT 1").fetchone()[0] == 1


def test_console_users_in_show_users_and_clients(pooler):
    with psycopg.connect(pooler.dsn("monitor", "pgbouncer"), autocommit=True) as stats:
        users = {r["name"]: r for r in admin(pooler, "SHOW USERS")}
        assert users["monitor"]["current_client_connections"] == "1"
        assert users["postgres"]["current_client_connections"] == "1"  # this admin()
        clients = admin(pooler, "SHOW CLIENTS")
        assert sorted(r["user"] for r in clients) == ["monitor", "postgres"], clients
        assert stats.pgconn.exec_(b"SHOW VERSION").status == pq.ExecStatus.TUPLES_OK

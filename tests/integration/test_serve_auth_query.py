"""auth_user + auth_query + auth_dbname against the real PostgreSQL: users auth_file does not
list get their secret from the database (SCRAM and md5), and then log in to the server with it;
expired, unknown and wrong-password logins fail alike; hostile answers (0 rows, 2 rows, NULL,
garbage) and a failing or unreachable auth database give clear errors without stalling
anybody else."""
import signal
import time

import psycopg
import pytest

from pgfixture import free_port
from serve_helpers import Pooler


@pytest.fixture(scope="module")
def roles(pg):
    pg.psql("DROP ROLE IF EXISTS aq_lookup; DROP ROLE IF EXISTS aq_scram; "
            "DROP ROLE IF EXISTS aq_expired;"
            "CREATE ROLE aq_lookup LOGIN SUPERUSER;"  # reads pg_authid (trusted over the socket)
            "SET password_encryption = 'scram-sha-256';"
            "CREATE ROLE aq_scram LOGIN PASSWORD 'scram-pw';"
            "CREATE ROLE aq_expired LOGIN PASSWORD 'old-pw' VALID UNTIL '2001-01-01';")
    pg.psql("CREATE OR REPLACE FUNCTION public.aq_rows(u text, n int) RETURNS TABLE(a text, b text)"
            " LANGUAGE sql AS $$ SELECT u, 'md5' || md5('x' || u) FROM generate_series(1, n) $$")
    return pg


def aq_pooler(pgwarden_bin, pg, query=None, auth_type="scram-sha-256", databases=None, **kw):
    settings = {"auth_user": "aq_lookup", "auth_dbname": "postgres"}
    if query:
        settings["auth_query"] = query
    settings.update(kw.pop("settings", {}))
    tcp = f"host=127.0.0.1 port={pg.port}"
    if databases is None:
        databases = {"postgres": f"{tcp} dbname=postgres", "appdb": f"{tcp} dbname=appdb"}
    userlist = {"aq_lookup": ""}  # auth_user's own secret (PostgreSQL trusts it on the socket)
    # auth_user connects over the unix socket, where every role is trusted
    databases["postgres"] = f"host={pg.socket_dir} port={pg.port} dbname=postgres"
    return Pooler(pgwarden_bin, pg, auth_type=auth_type, settings=settings,
                  databases=databases, userlist=userlist, **kw)


def dsn(p, user, pw, db="appdb"):
    return (f"host=127.0.0.1 port={p.port} user={user} dbname={db} password={pw} "
            "sslmode=disable connect_timeout=10")


def who(d):
    with psycopg.connect(d) as c:
        return c.execute("SELECT current_user").fetchone()[0]


def failure(d):
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(d)
    return str(e.value)


@pytest.mark.parametrize("auth_type", ["scram-sha-256", "md5"])
def test_lookup_logs_in_and_reaches_the_server(pgwarden_bin, roles, auth_type):
    """A SCRAM secret from pg_authid authenticates the client and, through pass-through, the
    server login (PostgreSQL asks aq_scram for SCRAM over TCP); an md5 secret likewise."""
    p = aq_pooler(pgwarden_bin, roles, auth_type=auth_type).start()
    try:
        assert who(dsn(p, "aq_scram", "scram-pw")) == "aq_scram"
        assert who(dsn(p, "aq_scram", "scram-pw")) == "aq_scram"  # again: pool reused
        if auth_type == "md5":  # an md5 secret cannot check a SCRAM exchange
            assert who(dsn(p, "md5_user", "md5-pw")) == "md5_user"
        # expired, unknown, wrong password, unknown database: one message
        # (under md5 a SCRAM secret's user runs SCRAM, whose failure says so: as in PgBouncer,
        # so the wrong password there is md5_user's)
        known = "aq_scram" if auth_type == "scram-sha-256" else "md5_user"
        cases = [("aq_expired", "old-pw", "appdb"), ("aq_ghost", "x", "appdb"),
                 (known, "wrong", "appdb"), ("aq_scram", "scram-pw", "nodb")]
        msgs = [failure(dsn(p, u, pw, db)).replace(u, "USER") for u, pw, db in cases]
        tails = {m.split("connection to server")[-1].split(":", 2)[-1].strip() for m in msgs}
        assert all("password authentication failed for user" in m for m in msgs), msgs
        assert len(tails) == 1, msgs
        assert p.alive()
    finally:
        p.stop()


def test_unknown_user_never_becomes_auth_user(pgwarden_bin, roles):
    """auth_user's own empty secret does not let an unknown user in."""
    p = aq_pooler(pgwarden_bin, roles, auth_type="md5").start()
    try:
        assert "password authentication failed" in failure(dsn(p, "aq_ghost", ""))
    finally:
        p.stop()


@pytest.mark.parametrize("query,why", [
    ("SELECT a, b FROM aq_rows($1, 0)", None),                        # 0 rows: no such user
    ("SELECT a, b FROM aq_rows($1, 2)", "more than one row"),
    ("SELECT $1::text, NULL::text", None),                            # NULL: expired
    ("SELECT $1::text, 'SCRAM-SHA-256$garbage'", "malformed SCRAM secret"),
    ("SELECT $1::text, 'md5nothex'", "malformed md5 secret"),
    ("SELECT 'someone_else', 'x' WHERE $1 <> ''", "one row of (user name, secret)"),
    ("SELECT $1::text", "one row of (user name, secret)"),
])
def test_hostile_answers_fail_like_a_wrong_password(pgwarden_bin, roles, query, why):
    p = aq_pooler(pgwarden_bin, roles, query=query, auth_type="md5").start()
    try:
        m = failure(dsn(p, "md5_user", "md5-pw"))
        assert "password authentication failed" in m, m
        if why:
            assert why in p.log()
        assert p.alive()
    finally:
        p.stop()


def test_query_error_is_a_clear_error(pgwarden_bin, roles):
    p = aq_pooler(pgwarden_bin, roles, query="SELECT nosuchcolumn FROM pg_class WHERE $1 = ''",
                  auth_type="md5").start()
    try:
        m = failure(dsn(p, "md5_user", "md5-pw"))
        assert "authentication lookup failed" in m and "nosuchcolumn" in m, m
    finally:
        p.stop()


def test_auth_user_login_failing(pgwarden_bin, roles):
    """auth_user connects over TCP where PostgreSQL wants a password it does not have."""
    tcp = f"host=127.0.0.1 port={roles.port}"
    p = aq_pooler(pgwarden_bin, roles, auth_type="md5",
                  settings={"auth_dbname": "authdb"},
                  databases={"appdb": f"{tcp} dbname=appdb",
                             "authdb": f"{tcp} dbname=postgres"})
    p.userlist = {"aq_lookup": "wrong-secret"}
    p.write_config()
    p.start()
    try:
        m = failure(dsn(p, "md5_user", "md5-pw"))
        assert "authentication lookup failed" in m, m
    finally:
        p.stop()


def test_auth_database_down(pgwarden_bin, roles):
    """The auth database is unreachable: the client gets a clear error quickly, and users of
    auth_file keep logging in meanwhile."""
    dead = free_port()
    tcp = f"host=127.0.0.1 port={roles.port}"
    p = aq_pooler(pgwarden_bin, roles, auth_type="md5", settings={"auth_dbname": "authdb"},
                  databases={"appdb": f"{tcp} dbname=appdb",
                             "authdb": f"host=127.0.0.1 port={dead} dbname=postgres"})
    p.userlist = {"aq_lookup": "", "app_user": "app-pw"}
    p.write_config()
    p.start()
    try:
        t0 = time.time()
        m = failure(dsn(p, "md5_user", "md5-pw"))
        assert "authentication lookup failed" in m, m
        assert time.time() - t0 < 5
        m = failure(dsn(p, "md5_user", "md5-pw"))  # during server_login_retry: at once too
        assert "authentication lookup failed" in m, m
        assert who(dsn(p, "app_user", "app-pw")) == "app_user"
        assert p.alive()
    finally:
        p.stop()


def test_reload_keeps_the_looked_up_secret(pgwarden_bin, roles):
    """After a reload, a pool whose user came from auth_query still has the secret for its
    next server login: a connected client whose server died gets a new one without logging
    in again."""
    p = aq_pooler(pgwarden_bin, roles, auth_type="md5",
                  settings={"pool_mode": "transaction"}).start()
    try:
        with psycopg.connect(dsn(p, "md5_user", "md5-pw"), autocommit=True) as c:
            first = c.execute("SELECT pg_backend_pid()").fetchone()[0]
            p.signal(signal.SIGHUP)
            time.sleep(0.5)
            roles.psql(f"SELECT pg_terminate_backend({first}, 5000)")
            time.sleep(0.6)  # the janitor's sweep or the next handout notices the close
            assert c.execute("SELECT pg_backend_pid()").fetchone()[0] != first
        assert "no usable password" not in p.log()
    finally:
        p.stop()

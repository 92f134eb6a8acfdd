"""auth_user + auth_query + auth_dbname against the real PostgreSQL: users auth_file does not
list get their secret from the database (SCRAM and md5), and then log in to the server with it;
expired, unknown and wrong-password logins fail alike; hostile answers (0 rows, 2 rows, NULL,
garbage) and a failing, hanging or unreachable auth database give clear errors without stalling
anybody else. A [databases] entry's auth_user / auth_query / auth_dbname beat the global ones;
the admin console takes lookups too, and the console itself is refused as an auth database."""
import signal
import time

import psycopg
import pytest

from pgfixture import free_port
from serve_helpers import Pooler, wait_for


@pytest.fixture(scope="module")
def roles(pg):
    pg.psql("DROP ROLE IF EXISTS aq_lookup; DROP ROLE IF EXISTS aq_scram; "
            "DROP ROLE IF EXISTS aq_expired; DROP ROLE IF EXISTS aq_nopw;"
            "CREATE ROLE aq_nopw LOGIN;"  # no password at all: trust alone lets it in
            "CREATE ROLE aq_lookup LOGIN SUPERUSER;"  # reads pg_authid (trusted over the socket)
            "SET password_encryption = 'scram-sha-256';"
            "CREATE ROLE aq_scram LOGIN PASSWORD 'scram-pw';"
            "CREATE ROLE aq_expired LOGIN PASSWORD 'old-pw' VALID UNTIL '2001-01-01';")
    pg.psql("CREATE OR REPLACE FUNCTION public.aq_rows(u text, n int) RETURNS TABLE(a text, b text)"
            " LANGUAGE sql AS $$ SELECT u, 'md5' || md5('x' || u) FROM generate_series(1, n) $$")
    # a lookup that hangs (the backend sleeps; pgwarden must not wait for it)
    pg.psql("CREATE OR REPLACE FUNCTION public.aq_slow(u text) RETURNS TABLE(a text, b text)"
            " LANGUAGE plpgsql AS $$ BEGIN IF u = 'aq_sleepy' THEN PERFORM pg_sleep(20); END IF;"
            " RETURN QUERY SELECT rolname::text, rolpassword::text FROM pg_authid"
            " WHERE rolname = u; END $$")
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


def refusal(d):
    """The login's error, or "" when it succeeds (for polling)."""
    try:
        psycopg.connect(d).close()
        return ""
    except psycopg.OperationalError as e:
        return str(e)


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


def fatal_text(m):
    """The text of the server's FATAL in libpq's message, whole."""
    assert "FATAL:" in m, m
    return m.rsplit("FATAL:", 1)[1].strip()


@pytest.mark.parametrize("query,server_words", [
    ("SELECT nosuchcolumn FROM pg_class WHERE $1 = ''",
     '42703 column "nosuchcolumn" does not exist'),
    ("SELECT usename, passwd FROM no_such_table WHERE usename = $1",
     '42P01 relation "no_such_table" does not exist'),
])
def test_query_error_tells_the_client_only_bouncer_config_error(pgwarden_bin, roles, query,
                                                                server_words):
    """A query the server refuses: the client, not authenticated yet, hears PgBouncer's bare
    "bouncer config error" and nothing of the server's answer; the log has the database, the
    user, the SQLSTATE and the server's message."""
    p = aq_pooler(pgwarden_bin, roles, query=query, auth_type="md5").start()
    try:
        m = failure(dsn(p, "md5_user", "md5-pw"))
        assert fatal_text(m) == "bouncer config error", m
        word = server_words.split('"')[1]
        assert word not in m and "does not exist" not in m, m
        assert (f"auth_query for user md5_user in postgres failed: the server answered "
                f"{server_words}") in p.log(), p.log()
        assert p.alive()
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


TCP_DB = "host=127.0.0.1 port={port} dbname={db}"


def console(p, sql):
    """The console as user pgbouncer over the unix socket (the pooler's own Unix user)."""
    with psycopg.connect(f"host={p.dir} port={p.port} user=pgbouncer dbname=pgbouncer",
                         autocommit=True) as c:
        cur = c.execute(sql)
        return cur.fetchall() if cur.description else []


def test_database_auth_query_beats_the_global_one(pgwarden_bin, roles):
    """auth_query= in a [databases] entry is the one its clients' lookups run (the global one
    is broken here, and still serves the entry without its own); a reload changes it."""
    tcp = TCP_DB.format(port=roles.port, db="appdb")
    good = "SELECT usename::text, passwd FROM pg_shadow WHERE usename = $1"
    databases = {"appdb": f"{tcp} auth_query='{good}'", "otherdb": tcp}
    p = aq_pooler(pgwarden_bin, roles, query="SELECT 1", auth_type="md5",
                  databases=databases).start()
    try:
        assert who(dsn(p, "md5_user", "md5-pw")) == "md5_user"
        m = failure(dsn(p, "md5_user", "md5-pw", db="otherdb"))  # global: takes no $1
        assert "bouncer config error" in m, m
        # reload: the entry's query now returns a cut secret, which authenticates nobody
        p.databases["appdb"] = (f"{tcp} auth_query='SELECT usename::text, "
                                "substring(passwd, 1, 3) FROM pg_shadow WHERE usename = $1'")
        p.write_config()
        p.signal(signal.SIGHUP)
        wait_for(lambda: "password authentication failed" in refusal(
            dsn(p, "md5_user", "md5-pw")), what="the reloaded auth_query")
        assert p.alive()
    finally:
        p.stop()


def test_database_auth_user_without_a_global_one(pgwarden_bin, roles):
    """auth_user= in a [databases] entry alone turns lookups on for that entry (others have
    none); SHOW POOLS lists auth_user's pool in the auth database as PgBouncer does."""
    tcp = TCP_DB.format(port=roles.port, db="appdb")
    sock = f"host={roles.socket_dir} port={roles.port} dbname=postgres"
    databases = {"appdb": f"{tcp} auth_user=aq_lookup auth_dbname=authdb", "otherdb": tcp,
                 "authdb": sock}
    p = Pooler(pgwarden_bin, roles, auth_type="md5", databases=databases,
               userlist={"aq_lookup": "", "app_user": "app-pw"}).start()
    try:
        assert who(dsn(p, "md5_user", "md5-pw")) == "md5_user"
        assert "password authentication failed" in failure(
            dsn(p, "md5_user", "md5-pw", db="otherdb"))
        pools = {(r[0], r[1]) for r in console(p, "SHOW POOLS")}
        assert ("authdb", "aq_lookup") in pools, pools
        assert p.alive()
    finally:
        p.stop()


def test_database_auth_user_under_trust(pgwarden_bin, roles):
    """auth_type = trust with an entry's auth_user: a user the query finds gets in without a
    password, even one whose password is NULL (none set: trust checks none, as in PgBouncer);
    one it does not find hears PgBouncer's "no such user"."""
    sock = f"host={roles.socket_dir} port={roles.port} dbname=postgres"
    databases = {"postgres": f"{sock} auth_user=aq_lookup"}
    p = Pooler(pgwarden_bin, roles, auth_type="trust", databases=databases,
               userlist={"app_user": "app-pw"}).start()
    try:
        assert who(dsn(p, "aq_scram", "", db="postgres")) == "aq_scram"
        assert who(dsn(p, "aq_nopw", "", db="postgres")) == "aq_nopw"
        m = failure(dsn(p, "aq_ghost", "", db="postgres"))
        assert "no such user" in m, m
        assert p.alive()
    finally:
        p.stop()


@pytest.mark.parametrize("query_timeout", ["1", "0"])
def test_hung_lookup_fails_and_frees_its_server(pgwarden_bin, roles, query_timeout):
    """A lookup query that hangs (aq_sleepy's) fails the login at query_timeout (or, without
    one, at client_login_timeout), and the server stuck in it is closed: the next lookup on
    the same one-server pool answers. Users of auth_file log in meanwhile."""
    p = aq_pooler(pgwarden_bin, roles, query="SELECT * FROM aq_slow($1)", auth_type="md5",
                  settings={"query_timeout": query_timeout, "client_login_timeout": "3",
                            "default_pool_size": "1"})
    p.userlist["app_user"] = "app-pw"
    p.write_config()
    p.start()
    try:
        t0 = time.time()
        m = failure(dsn(p, "aq_sleepy", "x").replace(
            "connect_timeout=10", "connect_timeout=15"))
        assert time.time() - t0 < 12  # well before the backend's 20 s sleep ends
        if query_timeout == "1":
            assert "authentication lookup failed" in m and "query_timeout" in m, m
        else:
            assert "client_login_timeout" in m, m
        assert who(dsn(p, "app_user", "app-pw")) == "app_user"
        assert who(dsn(p, "md5_user", "md5-pw")) == "md5_user"  # the same auth pool, size 1
        assert "auth_query ran longer than" in p.log()
        assert p.alive()
    finally:
        p.stop()


def test_console_login_through_auth_query(pgwarden_bin, roles):
    """A stats user auth_file does not list logs in to the console with the secret auth_query
    finds in the global auth_dbname ("*" settings do not reach the console)."""
    tcp = TCP_DB.format(port=roles.port, db="appdb")
    p = aq_pooler(pgwarden_bin, roles, auth_type="md5",
                  databases={"*": f"{tcp} auth_dbname=nosuchdb"},
                  settings={"stats_users": "md5_user"}).start()
    try:
        with psycopg.connect(dsn(p, "md5_user", "md5-pw", db="pgbouncer"),
                             autocommit=True) as c:
            assert c.execute("SHOW STATS").fetchall() is not None
        assert "password authentication failed" in failure(
            dsn(p, "md5_user", "wrong", db="pgbouncer"))
    finally:
        p.stop()


def test_console_as_auth_database_is_refused(pgwarden_bin, roles):
    """auth_dbname naming the console: globally, the file does not load (start fails, a
    reload keeps the old config); in an entry, or when the console would look itself up,
    the login fails with PgBouncer's "bouncer config error" and the log says why."""
    tcp = TCP_DB.format(port=roles.port, db="appdb")
    p = aq_pooler(pgwarden_bin, roles, auth_type="md5", settings={"auth_dbname": "pgbouncer"})
    try:
        with pytest.raises(RuntimeError) as e:
            p.start()
        assert 'cannot use the reserved "pgbouncer" database as an auth_dbname' in str(e.value)
    finally:
        p.stop()
    p = aq_pooler(pgwarden_bin, roles, auth_type="md5",
                  databases={"appdb": f"{tcp} auth_dbname=pgbouncer", "nodb": f"{tcp}"},
                  settings={"auth_dbname": "", "stats_users": "md5_user"}).start()
    try:
        for db in ("appdb", "pgbouncer"):  # an entry's setting; the console itself
            m = failure(dsn(p, "md5_user", "md5-pw", db=db))
            assert "bouncer config error" in m, m
        assert p.log().count('cannot use the reserved "pgbouncer" database as an '
                             'auth_dbname') == 2
        # a global auth_dbname the reload brings is refused too: the old config stays
        p.settings["auth_dbname"] = "pgbouncer"
        p.write_config()
        p.signal(signal.SIGHUP)
        wait_for(lambda: p.log().count("cannot use the reserved") >= 3,
                 what="the refused reload")
        assert p.alive()
        assert "bouncer config error" in failure(dsn(p, "md5_user", "md5-pw", db="appdb"))
    finally:
        p.stop()


def test_unconfigured_auth_database(pgwarden_bin, roles):
    """auth_dbname names no [databases] entry: PgBouncer's log line and "bouncer config
    error", not a password failure that hides the mistake."""
    tcp = TCP_DB.format(port=roles.port, db="appdb")
    p = aq_pooler(pgwarden_bin, roles, auth_type="md5", databases={"appdb": tcp},
                  settings={"auth_dbname": "nosuchdb"}).start()
    try:
        m = failure(dsn(p, "md5_user", "md5-pw"))
        assert "bouncer config error" in m, m
        assert 'authentication database "nosuchdb" is not configured' in p.log()
    finally:
        p.stop()


def test_disabled_auth_database(pgwarden_bin, roles):
    """DISABLE on the auth database stops its lookups with PgBouncer's message; ENABLE brings
    them back."""
    tcp = TCP_DB.format(port=roles.port, db="appdb")
    p = aq_pooler(pgwarden_bin, roles, auth_type="md5", databases={"appdb": tcp}).start()
    try:
        console(p, "DISABLE postgres")
        m = failure(dsn(p, "md5_user", "md5-pw"))
        assert 'authentication database "postgres" is disabled' in m, m
        console(p, "ENABLE postgres")
        assert who(dsn(p, "md5_user", "md5-pw")) == "md5_user"
    finally:
        p.stop()


def test_queued_lookup_ends_at_query_wait_timeout(pgwarden_bin, roles):
    """A lookup that waits for a server of the lookup pool (its one server is stuck in
    aq_sleepy's query) gives up at query_wait_timeout, with a message that says so."""
    import threading
    p = aq_pooler(pgwarden_bin, roles, query="SELECT * FROM aq_slow($1)", auth_type="md5",
                  settings={"query_timeout": "0", "query_wait_timeout": "1",
                            "client_login_timeout": "8", "default_pool_size": "1"}).start()
    try:
        stuck = threading.Thread(target=lambda: failure(dsn(p, "aq_sleepy", "x")))
        stuck.start()
        # the lookup pool's server runs the query (sv_tested, the 12th column)
        wait_for(lambda: any(r[:2] == ("postgres", "aq_lookup") and r[11] == 1
                             for r in console(p, "SHOW POOLS")), what="aq_sleepy's lookup")
        m = failure(dsn(p, "md5_user", "md5-pw"))
        assert "authentication lookup failed" in m and "query_wait_timeout" in m, m
        stuck.join(20)
        assert p.alive()
    finally:
        p.stop()

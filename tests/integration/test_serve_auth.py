"""Client authentication (trust, plain, md5, scram-sha-256 against auth_file) and server
login over TCP (trust, md5, SCRAM with a password or with pass-through keys)."""
import signal

import psycopg
import pytest

from serve_helpers import PASSWORDS, Pooler, wait_for


def tcp_databases(pg, **forced):
    return {
        "postgres": f"host=127.0.0.1 port={pg.port} dbname=postgres",
        "appdb": f"host=127.0.0.1 port={pg.port} dbname=appdb",
    }


@pytest.mark.parametrize("auth_type", ["plain", "md5", "scram-sha-256"])
def test_client_auth_methods(pgwarden_bin, pg, auth_type):
    p = Pooler(pgwarden_bin, pg, auth_type=auth_type).start()
    try:
        with psycopg.connect(p.dsn("app_user", "appdb")) as c:
            assert c.execute("SELECT current_user").fetchone()[0] == "app_user"
        # wrong password, unknown user, unknown db + wrong password: one identical failure
        msgs = []
        for user, db, pw in [("app_user", "appdb", "wrong"), ("ghost", "appdb", "wrong"),
                             ("app_user", "nodb", "wrong")]:
            with pytest.raises(psycopg.OperationalError) as e:
                psycopg.connect(p.dsn(user, db, password=pw))
            msgs.append(str(e.value).replace(user, "USER"))
        assert all("password authentication failed" in m for m in msgs), msgs
        assert len({m.split("connection to server")[-1].split(":", 2)[-1] for m in msgs}) == 1
        # unknown database is only revealed after a correct password
        with pytest.raises(psycopg.OperationalError) as e:
            psycopg.connect(p.dsn("app_user", "nodb"))
        assert "no such database" in str(e.value)
        assert p.alive()
    finally:
        p.stop()


@pytest.mark.parametrize("user,db", [("trust_user", "postgres"), ("md5_user", "postgres"),
                                     ("app_user", "appdb")])
def test_server_login_over_tcp(pgwarden_bin, pg, user, db):
    """PostgreSQL's hba: trust_user trust, md5_user md5, app_user scram-sha-256."""
    p = Pooler(pgwarden_bin, pg, auth_type="trust", databases=tcp_databases(pg)).start()
    try:
        with psycopg.connect(p.dsn(user, db)) as c:
            assert c.execute("SELECT current_user").fetchone()[0] == user
            assert c.execute("SELECT count(*) FROM pg_class").fetchone()[0] > 0
    finally:
        p.stop()


def test_scram_pass_through(pgwarden_bin, pg):
    """auth_file holds PostgreSQL's SCRAM secret, not the password: the pooler logs in to
    PostgreSQL with the keys recovered from the client's own SCRAM exchange."""
    secret = pg.psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'app_user'")
    assert secret.startswith("SCRAM-SHA-256$")
    p = Pooler(pgwarden_bin, pg, auth_type="scram-sha-256", databases=tcp_databases(pg),
               userlist={"app_user": secret}).start()
    try:
        with psycopg.connect(p.dsn("app_user", "appdb")) as c:
            assert c.execute("SELECT current_user").fetchone()[0] == "app_user"
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(p.dsn("app_user", "appdb", password="nope"))
    finally:
        p.stop()


def test_scram_pass_through_survives_a_password_rotation(pgwarden_bin, pg):
    """A user's password changes in PostgreSQL and its SCRAM secret in auth_file. The keys
    recovered from a client that logged in with the old password no longer open a server: they
    are dropped at the reload, and the first client that logs in with the new password brings
    keys that do, without waiting out server_login_retry for a failure the old keys caused."""
    pg.psql("DROP ROLE IF EXISTS rot_user")
    pg.psql("CREATE ROLE rot_user LOGIN PASSWORD 'first-pw'")
    secret_sql = "SELECT rolpassword FROM pg_authid WHERE rolname = 'rot_user'"
    p = Pooler(pgwarden_bin, pg, auth_type="scram-sha-256", databases=tcp_databases(pg),
               userlist={"rot_user": pg.psql(secret_sql)},
               settings={"server_login_retry": "60"}).start()
    try:
        old_client = psycopg.connect(p.dsn("rot_user", "appdb", password="first-pw"),
                                     autocommit=True)
        assert old_client.execute("SELECT 1").fetchone()[0] == 1
        pg.psql("ALTER ROLE rot_user PASSWORD 'second-pw'")
        p.userlist = {"rot_user": pg.psql(secret_sql)}
        p.write_config()
        p.signal(signal.SIGHUP)
        wait_for(lambda: p.log().count("configuration reloaded") >= 1, what="the reload")
        # PostgreSQL ends the server the pool holds: the next query needs a new login, which
        # the old password's keys cannot make.
        pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE usename = 'rot_user'")
        with pytest.raises(psycopg.Error):
            old_client.execute("SELECT 1")
        old_client.close()
        with psycopg.connect(p.dsn("rot_user", "appdb", password="second-pw")) as c:
            assert c.execute("SELECT current_user").fetchone()[0] == "rot_user"
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(p.dsn("rot_user", "appdb", password="first-pw"))
        assert p.alive()
    finally:
        p.stop()
        pg.psql("DROP ROLE IF EXISTS rot_user")


def test_forced_user_with_password(pgwarden_bin, pg):
    dbs = {"forced": f"host=127.0.0.1 port={pg.port} dbname=appdb user=app_user password=app-pw"}
    # trust still needs the client's user in auth_file (PgBouncer's rule)
    p = Pooler(pgwarden_bin, pg, auth_type="trust", databases=dbs,
               userlist={**PASSWORDS, "anyone": "x"}).start()
    try:
        with psycopg.connect(p.dsn("anyone", "forced")) as c:
            assert c.execute("SELECT current_user, current_database()").fetchone() == \
                ("app_user", "appdb")
    finally:
        p.stop()


def test_server_login_error_reaches_client(pgwarden_bin, pg):
    """A wrong server password is reported to the client, not retried forever."""
    dbs = {"bad": f"host=127.0.0.1 port={pg.port} dbname=appdb user=app_user password=wrong"}
    p = Pooler(pgwarden_bin, pg, auth_type="trust", databases=dbs,
               userlist={**PASSWORDS, "x": "x"}).start()
    try:
        with pytest.raises(psycopg.OperationalError) as e:
            psycopg.connect(p.dsn("x", "bad"))
        assert "password authentication failed" in str(e.value)
        assert p.alive()
    finally:
        p.stop()

"""PgBouncer's lifecycle limits with short values: idle clients, long queries, idle and old
servers, min_pool_size, a server that accepts TCP but never answers."""
import socket
import threading
import time

import psycopg
import pytest

from serve_helpers import Pooler


def backends(pg, user="postgres", app=None):
    q = ("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
         f"AND pid <> pg_backend_pid() AND usename = '{user}' AND datname = 'appdb'")
    return int(pg.psql(q))


def test_client_idle_timeout(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, settings={"client_idle_timeout": "1"}).start()
    try:
        c = psycopg.connect(p.dsn(), autocommit=True)
        c.execute("SELECT 1")
        time.sleep(2.5)
        with pytest.raises(psycopg.OperationalError):
            c.execute("SELECT 1")
        c.close()
        assert "client_idle_timeout" in p.log()
    finally:
        p.stop()


def test_query_timeout(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, settings={"query_timeout": "1"}).start()
    try:
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            t0 = time.time()
            with pytest.raises(psycopg.OperationalError) as e:
                c.execute("SELECT pg_sleep(20)")
            assert time.time() - t0 < 10
            assert "query_timeout" in str(e.value)
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            assert c.execute("SELECT 1").fetchone()[0] == 1
    finally:
        p.stop()


def test_server_idle_timeout_and_min_pool_size(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, settings={"server_idle_timeout": "1", "min_pool_size": "2",
                                           "default_pool_size": "5"}).start()
    try:
        conns = [psycopg.connect(p.dsn(dbname="appdb"), autocommit=False) for _ in range(4)]
        for c in conns:
            c.execute("SELECT 1")  # four transactions open: four servers
        assert backends(pg) == 4
        for c in conns[1:]:
            c.commit()
            c.close()
        conns[0].commit()
        time.sleep(3)
        # idle servers above min_pool_size were closed; min_pool_size kept
        assert backends(pg) == 2
        conns[0].close()
    finally:
        p.stop()


def test_server_lifetime(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, settings={"server_lifetime": "1", "default_pool_size": "1"}).start()
    try:
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            pid1 = c.execute("SELECT pg_backend_pid()").fetchone()[0]
            time.sleep(2)
            c.execute("SELECT 1")  # released after this: the old server retires
            time.sleep(0.7)
            pid2 = c.execute("SELECT pg_backend_pid()").fetchone()[0]
            assert pid1 != pid2
    finally:
        p.stop()


def test_server_connect_timeout(pgwarden_bin, pg):
    # A listener that never accepts: connect succeeds (backlog), the login never answers.
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(16)
    port = blackhole.getsockname()[1]
    dbs = {"postgres": f"host={pg.socket_dir} port={pg.port} dbname=postgres",
           "hole": f"host=127.0.0.1 port={port} dbname=x"}
    p = Pooler(pgwarden_bin, pg, databases=dbs,
               settings={"server_connect_timeout": "1", "query_wait_timeout": "3"}).start()
    try:
        t0 = time.time()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(p.dsn(dbname="hole"))
        assert time.time() - t0 < 15
        assert "server_connect_timeout" in p.log()
        # other databases are unaffected
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            assert c.execute("SELECT 1").fetchone()[0] == 1
    finally:
        p.stop()
        blackhole.close()


def test_server_check_before_reuse(pgwarden_bin, pg):
    """A server idle longer than server_check_delay runs server_check_query before it is
    handed out; one that fails the check is replaced (a failing query makes it visible)."""
    p = Pooler(pgwarden_bin, pg, settings={"server_check_delay": "1",
                                           "server_check_query": "SELECT 1/0",
                                           "default_pool_size": "1"}).start()
    try:
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            pid1 = c.execute("SELECT pg_backend_pid()").fetchone()[0]
            assert c.execute("SELECT pg_backend_pid()").fetchone()[0] == pid1  # no delay yet
            time.sleep(2.5)
            pid2 = c.execute("SELECT pg_backend_pid()").fetchone()[0]
            assert pid2 != pid1
    finally:
        p.stop()


def test_server_check_passes(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, settings={"server_check_delay": "1",
                                           "default_pool_size": "1"}).start()
    try:
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            pid1 = c.execute("SELECT pg_backend_pid()").fetchone()[0]
            time.sleep(2.5)
            assert c.execute("SELECT pg_backend_pid()").fetchone()[0] == pid1
    finally:
        p.stop()


def test_reserve_pool(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               settings={"default_pool_size": "1", "reserve_pool_size": "1",
                         "reserve_pool_timeout": "1"}).start()
    try:
        holder = psycopg.connect(p.dsn(dbname="appdb"), autocommit=False)
        holder.execute("SELECT 1")  # holds the only regular server
        t0 = time.time()
        with psycopg.connect(p.dsn(dbname="appdb"), autocommit=True) as waiter:
            assert waiter.execute("SELECT 2").fetchone()[0] == 2  # served by the reserve
        assert time.time() - t0 < 10
        assert backends(pg) == 2
        holder.commit()
        holder.close()
    finally:
        p.stop()


# -- transaction_timeout, query_wait_notify, server_fast_close (PgBouncer 1.25) ---------------

def admin(pooler, sql):
    with psycopg.connect(pooler.dsn(dbname="pgbouncer"), autocommit=True) as c:
        c.execute(sql)


@pytest.mark.parametrize("where", ["global", "user"])
def test_transaction_timeout(pgwarden_bin, pg, where):
    """An open transaction, idle or busy, is ended with its client once it is older than
    transaction_timeout; a [users] value overrides the global one; autocommit queries and a
    session idle between transactions are never touched."""
    settings = {"admin_users": "postgres"}
    users = {}
    if where == "global":
        settings["transaction_timeout"] = "2"
    else:
        settings["transaction_timeout"] = "30"
        users["postgres"] = "transaction_timeout=2"
    p = Pooler(pgwarden_bin, pg, pool_mode="session", settings=settings, users=users).start()
    try:
        with psycopg.connect(p.dsn(dbname="appdb"), autocommit=True) as c:
            for _ in range(3):  # outside transactions: never cut
                c.execute("SELECT 1")
                time.sleep(1.2)
        c = psycopg.connect(p.dsn(dbname="appdb"))  # psycopg opens a transaction itself
        c.execute("SELECT 1")
        time.sleep(1)
        c.execute("SELECT 2")  # 1 s old: still fine
        time.sleep(1.8)
        with pytest.raises(psycopg.OperationalError) as e:
            c.execute("SELECT 3")
        assert "transaction timeout" in str(e.value), str(e.value)
        c.close()
        assert "transaction timeout (transaction_timeout)" in p.log()
        with psycopg.connect(p.dsn(dbname="appdb"), autocommit=True) as c2:
            assert c2.execute("SELECT 1").fetchone()[0] == 1
    finally:
        p.stop()


@pytest.mark.parametrize("notify", ["1", "0"])
def test_query_wait_notify(pgwarden_bin, pg, notify):
    """A client queued for longer than query_wait_notify gets PgBouncer's notice, once per
    wait, and its query then runs; 0 turns the notice off."""
    p = Pooler(pgwarden_bin, pg, settings={"default_pool_size": "1",
                                           "query_wait_notify": notify}).start()
    notices = []
    try:
        with psycopg.connect(p.dsn(dbname="appdb"), autocommit=True) as blocker, \
                psycopg.connect(p.dsn(dbname="appdb"), autocommit=True) as waiter:
            waiter.add_notice_handler(lambda d: notices.append(d.message_primary))
            for round_ in range(2):
                t = threading.Thread(target=lambda: blocker.execute("SELECT pg_sleep(2.2)"))
                t.start()
                time.sleep(0.3)
                assert waiter.execute("SELECT 'waited'").fetchone()[0] == "waited"
                t.join()
                expected = round_ + 1 if notify != "0" else 0
                assert len(notices) == expected, notices
        if notices:
            assert set(notices) == {"No server connection available in postgres backend, "
                                    "client being queued"}
    finally:
        p.stop()


@pytest.mark.parametrize("fast", ["1", "0"])
def test_server_fast_close(pgwarden_bin, pg, fast):
    """Session pooling: after RECONNECT, server_fast_close = 1 closes the session's server, and
    its client, between transactions (not in the middle of one); with 0 the session goes on
    to its end on the old server."""
    p = Pooler(pgwarden_bin, pg, pool_mode="session",
               settings={"admin_users": "postgres", "server_fast_close": fast}).start()
    try:
        c = psycopg.connect(p.dsn(dbname="appdb"), autocommit=True)
        pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        c.execute("BEGIN")
        admin(p, "RECONNECT appdb")
        time.sleep(1.2)
        # inside a transaction: never cut
        assert c.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
        c.execute("COMMIT")
        time.sleep(1.2)
        if fast == "1":
            with pytest.raises(psycopg.OperationalError) as e:
                c.execute("SELECT 1")
            assert "database configuration changed" in str(e.value), str(e.value)
        else:
            assert c.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
        c.close()
        with psycopg.connect(p.dsn(dbname="appdb"), autocommit=True) as c2:
            assert c2.execute("SELECT pg_backend_pid()").fetchone()[0] != pid
    finally:
        p.stop()

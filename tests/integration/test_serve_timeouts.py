"""PgBouncer's lifecycle limits with short values: idle clients, long queries, idle and old
servers, min_pool_size, a server that accepts TCP but never answers."""
import socket
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

"""Configuration changes under live traffic: RELOAD and console SET while clients hold
servers, sit in transactions or run a benchmark. What the change asks for must hold once it is
made (limits, modes), and no server may carry one client's session into another's."""
import os
import signal
import subprocess
import threading
import time

import psycopg

from serve_helpers import Pooler, console_rows, wait_for


def pooler_backends(pg, db="appdb"):
    """PostgreSQL backends of database db (the tests' psql runs in postgres)."""
    return int(pg.psql("SELECT count(*) FROM pg_stat_activity "
                       f"WHERE backend_type = 'client backend' AND datname = '{db}'"))


def console_exec(p, sql):
    with psycopg.connect(p.dsn("postgres", "pgbouncer", password=""), autocommit=True) as c:
        res = c.pgconn.exec_(sql.encode())
        assert res.status == psycopg.pq.ExecStatus.COMMAND_OK, res.error_message


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

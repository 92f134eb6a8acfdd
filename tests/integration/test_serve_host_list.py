"""A [databases] host list (host=a,b,...) with load_balance_hosts, as in PgBouncer: new server
connections go round the list, or (disable) keep to one host until a connection to it fails;
cancel requests follow each server to its own host."""
import threading
import time

import psycopg
import pytest

from serve_helpers import Pooler, console_rows


def server_side_addr(conn):
    """How the server connection reached PostgreSQL: 'unix' or the pooler's TCP address."""
    addr = conn.execute("SELECT host(client_addr) FROM pg_stat_activity "
                        "WHERE pid = pg_backend_pid()").fetchone()[0]
    return addr or "unix"


def start(pgwarden_bin, pg, hosts, balance=None):
    entry = f"host={hosts} port={pg.port} dbname=appdb"
    if balance:
        entry += f" load_balance_hosts={balance}"
    return Pooler(pgwarden_bin, pg, pool_mode="session", databases={"hl": entry},
                  settings={"admin_users": "postgres", "server_login_retry": "1",
                            "default_pool_size": "4"}).start()


def test_round_robin_goes_round_the_list(pgwarden_bin, pg):
    p = start(pgwarden_bin, pg, f"127.0.0.1,{pg.socket_dir}")
    conns = []
    try:
        conns = [psycopg.connect(p.dsn(dbname="hl"), autocommit=True) for _ in range(4)]
        seen = sorted(server_side_addr(c) for c in conns)
        assert seen == ["127.0.0.1", "127.0.0.1", "unix", "unix"], seen
        row = [r for r in console_rows(p, "SHOW DATABASES") if r["name"] == "hl"][0]
        assert row["load_balance_hosts"] == "round-robin", row
        assert row["host"] == f"127.0.0.1,{pg.socket_dir}", row
        # each cancel goes to the host its server is on
        for c in conns:
            box = {}
            t = threading.Thread(target=lambda c=c, box=box: box.update(
                e=_run(c, "SELECT pg_sleep(20)")), daemon=True)
            t.start()
            time.sleep(0.3)
            c.cancel()
            t.join(10)
            assert not t.is_alive() and isinstance(box["e"], psycopg.errors.QueryCanceled), box
    finally:
        for c in conns:
            c.close()
        p.stop()


def _run(conn, sql):
    try:
        conn.execute(sql)
    except psycopg.Error as e:
        return e
    return None


def test_disable_keeps_to_the_host_that_works(pgwarden_bin, pg):
    """The first entry cannot be reached: the first login fails over to the second entry
    (after server_login_retry), and every later connection stays there."""
    p = start(pgwarden_bin, pg, "/nonexistent-pgwarden-dir,127.0.0.1", balance="disable")
    conns = []
    try:
        conns = [psycopg.connect(p.dsn(dbname="hl"), autocommit=True, connect_timeout=15)
                 for _ in range(3)]
        assert [server_side_addr(c) for c in conns] == ["127.0.0.1"] * 3
        row = [r for r in console_rows(p, "SHOW DATABASES") if r["name"] == "hl"][0]
        assert row["load_balance_hosts"] == "disable", row
        assert "server login failed" in p.log()
    finally:
        for c in conns:
            c.close()
        p.stop()


@pytest.mark.parametrize("hosts", ["a,,b", "a,", ",a", ",".join(["h"] * 17)])
def test_bad_host_list_is_refused(pgwarden_bin, pg, hosts):
    p = Pooler(pgwarden_bin, pg, databases={"hl": f"host={hosts} dbname=x"})
    with pytest.raises(RuntimeError) as e:
        p.start()
    assert "not a host or a list of up to 16 hosts" in str(e.value)
    p.stop()


def test_bad_load_balance_hosts_is_refused(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, databases={"hl": "host=a,b load_balance_hosts=random"})
    with pytest.raises(RuntimeError) as e:
        p.start()
    assert "is not round-robin or disable" in str(e.value)
    p.stop()


def test_disable_moves_past_a_name_that_does_not_resolve(pgwarden_bin, pg):
    """A host of the list that does not resolve is a failed connection like any other: the
    clients wait while the pool moves to the next host (PgBouncer's
    test_load_balance_hosts_disable_bad_first)."""
    p = start(pgwarden_bin, pg, "pgwarden-no-such-host.invalid,127.0.0.1", balance="disable")
    conns = []
    try:
        conns = [psycopg.connect(p.dsn(dbname="hl"), autocommit=True, connect_timeout=20)
                 for _ in range(2)]
        assert [server_side_addr(c) for c in conns] == ["127.0.0.1"] * 2
        assert "cannot resolve pgwarden-no-such-host.invalid" in p.log()
    finally:
        for c in conns:
            c.close()
        p.stop()

"""Several pgwarden processes on one port (so_reuseport) with peering (peer_id, [peers]): the
kernel spreads clients over the processes, and a cancel request that lands on the wrong one is
passed on to the process holding the query, as PgBouncer's peering does."""
import os
import struct
import threading
import time

import psycopg
import pytest

from serve_helpers import Pooler, console_rows, raw_connect, read_messages, startup_packet, \
    wait_for

N_CLIENTS = 16


def unix_dsn(pooler, dbname="appdb", user="postgres"):
    return f"host={pooler.dir} port={pooler.port} dbname={dbname} user={user}"


def unix_console_rows(pooler, sql):
    with psycopg.connect(unix_dsn(pooler, "pgbouncer"), autocommit=True) as c:
        res = c.pgconn.exec_(sql.encode())
        names = [res.fname(i).decode() for i in range(res.nfields)]
        return [{names[i]: (res.get_value(r, i) or b"").decode() for i in range(res.nfields)}
                for r in range(res.ntuples)]


@pytest.fixture
def group(pgwarden_bin, pg):
    """Two processes, peer_id 1 and 2, sharing one TCP port; each reaches the other through
    its unix socket."""
    a = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               settings={"so_reuseport": "1", "peer_id": "1", "admin_users": "postgres"})
    b = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               settings={"so_reuseport": "1", "peer_id": "2", "admin_users": "postgres"})
    b.port = a.port
    peers = {1: f"host={a.dir} port={a.port}", 2: f"host={b.dir} port={b.port}"}
    for p in (a, b):
        p.settings["listen_port"] = str(a.port)
        p.peers = peers
        p.write_config()
    a.start()
    b.start()
    wait_for(lambda: os.path.exists(os.path.join(b.dir, f".s.PGSQL.{b.port}")),
             what="the second process's unix socket")
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def test_cancel_reaches_the_process_holding_the_query(group):
    a, b = group
    conns = [psycopg.connect(a.dsn(dbname="appdb"), autocommit=True) for _ in range(N_CLIENTS)]
    try:
        held = [len([r for r in unix_console_rows(p, "SHOW CLIENTS") if r["database"] == "appdb"])
                for p in (a, b)]
        assert sum(held) == N_CLIENTS and min(held) > 0, \
            f"the kernel should spread {N_CLIENTS} clients over both processes: {held}"
        outcomes = []
        for c in conns:
            box = {}

            def run(c=c, box=box):
                try:
                    c.execute("SELECT pg_sleep(30)")
                    box["error"] = None
                except psycopg.Error as e:
                    box["error"] = e

            t = threading.Thread(target=run, daemon=True)
            t.start()
            time.sleep(0.2)
            c.cancel()  # a new TCP connection to the shared port: either process gets it
            t.join(timeout=10)
            assert not t.is_alive(), f"cancel lost after {outcomes}"
            outcomes.append(type(box["error"]).__name__)
        assert outcomes == ["QueryCanceled"] * N_CLIENTS, outcomes
        for c in conns:  # every session still works
            assert c.execute("SELECT 1").fetchone()[0] == 1
    finally:
        for c in conns:
            c.close()


def test_keys_carry_the_peer_id_and_ttl(group):
    """BackendKeyData: bytes 1-2 hold the peer_id (low byte first), the key's last two bits
    the forwarding TTL (3), as PgBouncer writes them."""
    a, b = group
    for p, peer_id in ((a, 1), (b, 2)):
        s = raw_connect_unix(p)
        s.sendall(startup_packet("postgres", "appdb"))
        msgs = read_messages(s, timeout=10, until=b"Z")
        s.close()
        key = [body for t, body in msgs if t == b"K"][0]
        assert key[1] + (key[2] << 8) == peer_id, key.hex()
        assert key[7] & 3 == 3, key.hex()
        assert key[0] & 0x80 == 0, key.hex()


def raw_connect_unix(pooler):
    import socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(os.path.join(pooler.dir, f".s.PGSQL.{pooler.port}"))
    return s


@pytest.mark.parametrize("case", ["unknown_peer", "ttl_spent"])
def test_bad_forward_is_dropped(group, case):
    """A key naming a peer missing from [peers], or one already forwarded three times, is
    dropped with a log line; the process goes on."""
    a, _ = group
    peer = 9 if case == "unknown_peer" else 2
    pid = (0x12 << 24) | ((peer & 0xFF) << 16) | ((peer >> 8) << 8) | 0x34
    key = 0x55667703 if case == "unknown_peer" else 0x55667700  # TTL bits: 3 hops, none
    s = raw_connect_unix(a)
    s.sendall(struct.pack("!IIII", 16, 80877102, pid, key))
    s.settimeout(5)
    assert s.recv(16) == b""
    s.close()
    want = "no such peer in [peers]" if case == "unknown_peer" else "forwarded too many times"
    wait_for(lambda: want in a.log(), timeout=5, what=want)
    with psycopg.connect(unix_dsn(a), autocommit=True) as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1


def test_show_peers(group):
    a, b = group
    rows = unix_console_rows(a, "SHOW PEERS")
    assert [(r["peer_id"], r["host"], r["port"]) for r in rows] == \
        [("2", b.dir, str(b.port))]  # its own entry is left out
    pools = unix_console_rows(a, "SHOW PEER_POOLS")
    assert [r["peer_id"] for r in pools] == ["2"]

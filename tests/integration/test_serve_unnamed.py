"""The unnamed prepared statement never crosses between clients. PostgreSQL keeps it past the
end of a transaction (until the next unnamed Parse or simple Query), so when a server passes
from client A to client B, B's Bind or Describe of "" without its own Parse must fail with
26000, as it would on B's own connection, and never run A's statement (bad-inputs trap 4.4).
A client that keeps (or gets back) its server keeps its statement, as on PostgreSQL."""
import struct
import time

import pytest

from serve_helpers import Pooler, error_fields, login_raw, query_msg

SECRET = "secret-of-A"


def msg(t, body=b""):
    return t + struct.pack("!I", len(body) + 4) + body


def parse(sql, name=""):
    return msg(b"P", name.encode() + b"\0" + sql.encode() + b"\0" + struct.pack("!H", 0))


def bind(stmt="", portal=""):
    return msg(b"B", portal.encode() + b"\0" + stmt.encode() + b"\0" +
               struct.pack("!HHH", 0, 0, 0))


def execute(portal=""):
    return msg(b"E", portal.encode() + b"\0" + struct.pack("!I", 0))


def describe_stmt(name=""):
    return msg(b"D", b"S" + name.encode() + b"\0")


SYNC = msg(b"S")
FLUSH = msg(b"H")


def exchange(sock, data, syncs=1, split=False):
    """Sends data (whole, or one byte per write) and reads the answers to `syncs` Syncs."""
    if split:
        for i in range(len(data)):
            sock.sendall(data[i:i + 1])
            time.sleep(0.001)
    else:
        sock.sendall(data)
    # read_messages drops what it read past its stop: read here until the last Sync's answer.
    sock.settimeout(10)
    buf, out = b"", []
    while sum(t == b"Z" for t, _ in out) < syncs:
        while len(buf) >= 5 and len(buf) >= 1 + struct.unpack("!I", buf[1:5])[0]:
            (ln,) = struct.unpack("!I", buf[1:5])
            out.append((buf[0:1], buf[5:1 + ln]))
            buf = buf[1 + ln:]
        if sum(t == b"Z" for t, _ in out) >= syncs:
            break
        chunk = sock.recv(65536)
        assert chunk, out
        buf += chunk
    assert not buf, (out, buf)
    return out


def codes(msgs):
    return [error_fields(b)["C"] for t, b in msgs if t == b"E"]


def rows(msgs):
    return [b for t, b in msgs if t == b"D"]


def leaked(msgs):
    return any(SECRET.encode() in b for _, b in msgs)


def a_leaves_unnamed(pooler):
    """Client A runs Parse("")/Bind/Execute/Sync, then releases its only server."""
    a = login_raw(pooler)
    got = exchange(a, parse(f"SELECT '{SECRET}'") + bind() + execute() + SYNC)
    assert any(SECRET.encode() in r for r in rows(got)), got
    assert got[-1][1] == b"I"
    return a


@pytest.fixture
def pooler(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               settings={"default_pool_size": "1"}).start()
    yield p
    p.stop()


B_REQUESTS = {
    "bind": (bind() + execute() + SYNC, 1),
    "describe": (describe_stmt() + SYNC, 1),
    "pipelined": (bind() + execute() + SYNC + describe_stmt() + SYNC + bind() + execute() + SYNC,
                  3),
    "after_flush": (FLUSH + bind() + execute() + SYNC, 1),
    # The Parse is skipped after the failed Bind: the statement before it stays, which on B's
    # own connection is none at all.
    "skipped_parse": (bind("no_such_stmt") + parse("SELECT 'b'") + SYNC + bind() + execute() +
                      SYNC, 2),
}


@pytest.mark.parametrize("split", [False, True], ids=["whole", "split"])
@pytest.mark.parametrize("case", sorted(B_REQUESTS))
def test_other_client_cannot_reach_unnamed_statement(pooler, case, split):
    a = a_leaves_unnamed(pooler)
    b = login_raw(pooler)
    data, syncs = B_REQUESTS[case]
    got = exchange(b, data, syncs=syncs, split=split)
    assert not leaked(got), (case, got, pooler.log())
    assert not rows(got), got
    assert "26000" in codes(got), got
    assert all(c == "26000" for c in codes(got)), got
    # B's own unnamed statement works, and A's server is in a sane state afterwards.
    got = exchange(b, parse("SELECT 'b'") + bind() + execute() + SYNC)
    assert [r for r in rows(got)] and b"b" in rows(got)[0], got
    got = exchange(a, query_msg("SELECT 1"))
    assert rows(got), got
    a.close()
    b.close()


def test_own_unnamed_statement_across_syncs_and_transactions(pooler):
    a = login_raw(pooler)
    # Inside one transaction: Parse, Sync, then Bind/Execute without a Parse.
    exchange(a, query_msg("BEGIN"))
    got = exchange(a, parse("SELECT 'mine'") + SYNC)
    assert not codes(got), got
    got = exchange(a, bind() + execute() + SYNC)
    assert rows(got) and b"mine" in rows(got)[0], got
    exchange(a, query_msg("COMMIT"))
    # Across transactions while nobody else used the server: it comes back with the statement.
    got = exchange(a, parse("SELECT 'again'") + SYNC)
    assert got[-1][1] == b"I"
    got = exchange(a, bind() + execute() + SYNC)
    assert rows(got) and b"again" in rows(got)[0], got
    # A simple Query drops it, as on PostgreSQL.
    exchange(a, query_msg("SELECT 1"))
    got = exchange(a, bind() + execute() + SYNC)
    assert codes(got) == ["26000"], got
    a.close()


def test_other_client_then_owner_gets_26000(pooler):
    # Once B had the server, A's statement is gone for A too: A behaves as if it had been
    # given another server, which transaction pooling may always do.
    a = a_leaves_unnamed(pooler)
    b = login_raw(pooler)
    exchange(b, query_msg("SELECT 1"))
    got = exchange(a, bind() + execute() + SYNC)
    assert codes(got) == ["26000"] and not rows(got), got
    a.close()
    b.close()


@pytest.mark.parametrize("mode", ["session", "statement"])
def test_other_pool_modes(pgwarden_bin, pg, mode):
    # Session pooling without a reset query hands the server over with the statement in it;
    # statement pooling releases it after every Sync.
    p = Pooler(pgwarden_bin, pg, pool_mode=mode,
               settings={"default_pool_size": "1", "server_reset_query": ""}).start()
    try:
        a = a_leaves_unnamed(p)
        if mode == "session":
            got = exchange(a, bind() + execute() + SYNC)  # its own: still there
            assert rows(got) and SECRET.encode() in rows(got)[0], got
            a.close()
        b = login_raw(p)
        got = exchange(b, bind() + execute() + SYNC + describe_stmt() + SYNC, syncs=2)
        assert not leaked(got), (got, p.log())
        assert codes(got) == ["26000", "26000"], got
        b.close()
        if mode != "session":
            a.close()
    finally:
        p.stop()

"""Protocol-level prepared statements in transaction mode: clients share servers, so
statements are renamed and re-prepared on whichever server a client gets."""
import threading

import psycopg
import pytest

from serve_helpers import Pooler


@pytest.fixture
def pooler(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               settings={"default_pool_size": "2"}).start()
    yield p
    p.stop()


def test_same_name_different_queries_on_shared_servers(pooler):
    # psycopg names its statements _pg3_0, _pg3_1, ... in every connection: with 4 clients
    # over 2 servers the same name means different queries on the same server.
    def work(k, out):
        with psycopg.connect(pooler.dsn(), autocommit=True, prepare_threshold=0) as c:
            vals = []
            for i in range(30):
                vals.append(c.execute(f"SELECT %s::int * {k}", (i,), prepare=True).fetchone()[0])
                vals.append(c.execute(f"SELECT %s::text || '-{k}'", (str(i),),
                                      prepare=True).fetchone()[0])
            out[k] = vals

    out = {}
    threads = [threading.Thread(target=work, args=(k, out)) for k in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for k in range(1, 5):
        expected = []
        for i in range(30):
            expected += [i * k, f"{i}-{k}"]
        assert out[k] == expected, (k, pooler.log())


def test_prepared_in_pipeline_with_error(pooler):
    with psycopg.connect(pooler.dsn(), autocommit=True, prepare_threshold=0) as c:
        with pytest.raises(psycopg.errors.DivisionByZero):
            with c.pipeline():
                c.execute("SELECT %s::int + 1", (1,), prepare=True)
                c.execute("SELECT 1 / %s::int", (0,), prepare=True)
                c.execute("SELECT %s::int + 2", (1,), prepare=True)
        # statements prepared before the error still work; the one skipped is re-prepared
        for i in range(5):
            assert c.execute("SELECT %s::int + 2", (i,), prepare=True).fetchone()[0] == i + 2
            assert c.execute("SELECT %s::int + 1", (i,), prepare=True).fetchone()[0] == i + 1


def test_deallocate_and_reprepare(pooler):
    with psycopg.connect(pooler.dsn(), autocommit=True) as c:
        pgc = c.pgconn
        r = pgc.prepare(b"s1", b"SELECT $1::int * 10")
        assert r.status == psycopg.pq.ExecStatus.COMMAND_OK
        r = pgc.exec_prepared(b"s1", [b"4"])
        assert r.get_value(0, 0) == b"40"
        r = pgc.describe_prepared(b"s1")
        assert r.status == psycopg.pq.ExecStatus.COMMAND_OK
        r = pgc.close_prepared(b"s1") if hasattr(pgc, "close_prepared") else None
        # same name, new query
        pgc.exec_(b"DEALLOCATE ALL")  # SQL-level: clears nothing the pooler tracks
        r = pgc.prepare(b"s1", b"SELECT $1::int * 100")
        assert r.status == psycopg.pq.ExecStatus.COMMAND_OK, r.error_message
        r = pgc.exec_prepared(b"s1", [b"4"])
        assert r.get_value(0, 0) == b"400", r.error_message


def test_sql_deallocate_all_then_reuse(pooler):
    with psycopg.connect(pooler.dsn(), autocommit=True) as c:
        pgc = c.pgconn
        assert pgc.prepare(b"q", b"SELECT $1::int + 5").status == psycopg.pq.ExecStatus.COMMAND_OK
        assert pgc.exec_prepared(b"q", [b"1"]).get_value(0, 0) == b"6"
        pgc.exec_(b"DEALLOCATE ALL")
        # PostgreSQL forgot everything; the client re-prepares under the same name
        assert pgc.prepare(b"q", b"SELECT $1::int + 5").status == psycopg.pq.ExecStatus.COMMAND_OK
        assert pgc.exec_prepared(b"q", [b"2"]).get_value(0, 0) == b"7"


def _msg(t, body):
    import struct
    return t + struct.pack("!I", len(body) + 4) + body


def test_prepared_messages_split_at_every_byte(pooler):
    import struct
    from serve_helpers import raw_connect, read_messages, startup_packet
    s = raw_connect(pooler.port)
    s.sendall(startup_packet("postgres", "postgres"))
    assert read_messages(s, until=b"Z")[-1][0] == b"Z"
    parse = _msg(b"P", b"stmt1\0SELECT $1::int * 3\0" + struct.pack("!HI", 1, 23))
    bind = _msg(b"B", b"\0stmt1\0" + struct.pack("!HH", 0, 1) + struct.pack("!I", 2) + b"14" +
                struct.pack("!H", 0))
    execute = _msg(b"E", b"\0" + struct.pack("!I", 0))
    sync = _msg(b"S", b"")
    for round_ in range(3):
        data = (parse if round_ == 0 else b"") + bind + execute + sync
        for b in data:
            s.sendall(bytes([b]))
        msgs = read_messages(s, until=b"Z")
        types = [t for t, _ in msgs]
        assert b"E" not in types, msgs
        rows = [body for t, body in msgs if t == b"D"]
        assert rows and rows[0].endswith(b"42"), msgs
    s.close()


def _long_query(tag, n_bytes):
    """A query of about n_bytes that returns tag: a long IN list, as ORMs build them."""
    items = ", ".join(str(i) for i in range(n_bytes // 7))
    return f"SELECT '{tag}'::text WHERE 1 IN ({items})"


@pytest.mark.parametrize("n_bytes", [9000, 40000, 300000])
def test_named_statement_longer_than_pkt_buf(pooler, n_bytes):
    """A named Parse larger than pkt_buf (8 kB) is held whole for the rewrite, in a buffer of
    its own: 4 clients prepare and run long statements over 2 servers, each gets its own
    result, pipelined and not, and the pooler's memory goes back down."""
    errors, results = [], {}

    def client(tag):
        try:
            with psycopg.connect(pooler.dsn(), autocommit=True, prepare_threshold=0) as c:
                q = _long_query(tag, n_bytes)
                for _ in range(3):
                    results.setdefault(tag, []).append(c.execute(q).fetchone()[0])
                with c.pipeline():
                    curs = [c.execute(q, prepare=True) for _ in range(3)]
                results[tag] += [cur.fetchone()[0] for cur in curs]
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"{tag}: {e!r}")

    threads = [threading.Thread(target=client, args=(f"c{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert results == {f"c{i}": [f"c{i}"] * 6 for i in range(4)}, results
    assert pooler.alive()


def test_long_statement_name_and_long_bind(pooler):
    """A 16 kB statement name (Parse, Bind, Describe, Close) and a Bind whose parameters pass
    pkt_buf: renamed and answered like short ones."""
    import struct
    from serve_helpers import raw_connect, read_messages, startup_packet
    s = raw_connect(pooler.port)
    s.sendall(startup_packet("postgres", "postgres"))
    assert read_messages(s, until=b"Z")[-1][0] == b"Z"
    name = b"n" * 16384
    value = b"v" * 20000
    parse = _msg(b"P", name + b"\0SELECT length($1::text)\0" + struct.pack("!HI", 1, 25))
    bind = _msg(b"B", b"\0" + name + b"\0" + struct.pack("!HH", 0, 1) +
                struct.pack("!I", len(value)) + value + struct.pack("!H", 0))
    describe = _msg(b"D", b"S" + name + b"\0")
    execute = _msg(b"E", b"\0" + struct.pack("!I", 0))
    close = _msg(b"C", b"S" + name + b"\0")
    sync = _msg(b"S", b"")
    s.sendall(parse + describe + bind + execute + close + sync)
    msgs = read_messages(s, timeout=20, until=b"Z")
    types = [t for t, _ in msgs]
    assert b"E" not in types, msgs
    assert types == [b"1", b"t", b"T", b"2", b"D", b"C", b"3", b"Z"], types
    assert [body for t, body in msgs if t == b"D"][0].endswith(b"20000")
    s.close()
    assert pooler.alive()


def _cpu_seconds(pid):
    """User plus system CPU time a process has used, in seconds."""
    import os
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_bind_names_arriving_slowly_are_not_rescanned(pooler):
    """A Bind whose names have not arrived yet is looked at again as its bytes come: with a
    long name sent in small pieces, looking through everything received at each piece is
    quadratic, and the one-threaded pooler would spend its time on this client alone. The
    pooler's CPU time over the upload stays a small part of the time the upload takes (a
    quadratic look keeps it busy throughout), and the Bind is answered."""
    import socket
    import struct
    import time
    from serve_helpers import login_raw, read_messages
    s = login_raw(pooler)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    n = 64 << 20
    tail = b"\0" + b"nosuchstatement\0" + struct.pack("!HHH", 0, 0, 0)
    body_len = n + len(tail)
    s.sendall(b"B" + struct.pack("!I", body_len + 4))
    pid = pooler.proc.pid
    cpu0, t0 = _cpu_seconds(pid), time.monotonic()
    piece = b"p" * 4096
    for _ in range(n // len(piece)):
        s.sendall(piece)
        time.sleep(0.0005)
    wall = time.monotonic() - t0
    s.sendall(tail + _msg(b"S", b""))
    msgs = read_messages(s, timeout=60, until=b"Z")
    cpu = _cpu_seconds(pid) - cpu0
    assert [t for t, _ in msgs] == [b"E", b"Z"], msgs
    assert b"nosuchstatement" in msgs[0][1], msgs
    s.close()
    assert pooler.alive()
    assert cpu < wall / 4, f"pooler used {cpu:.2f} s of CPU over a {wall:.2f} s upload"

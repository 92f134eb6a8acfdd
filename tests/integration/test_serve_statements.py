"""Protocol-level prepared statements in transaction pooling against a real PostgreSQL: the
pooler keeps at most max_prepared_statements per server connection (least recently used
closed first), its statement names carry a per-process secret, clients may not use those
names, and statements it believed closed or prepared stay accounted for when a pipeline
error makes PostgreSQL skip the pooler's own Close or Parse."""
import re
import struct

import psycopg
import pytest

from serve_helpers import Pooler, error_fields, login_raw, read_messages

NAME_RE = re.compile(r"^pgw_[0-9a-f]{16}_[0-9]+$")


def start_pooler(pgwarden_bin, pg, max_statements="5"):
    return Pooler(pgwarden_bin, pg, pool_mode="transaction",
                  settings={"default_pool_size": "1",
                            "max_prepared_statements": max_statements}).start()


@pytest.fixture
def pooler(pgwarden_bin, pg):
    p = start_pooler(pgwarden_bin, pg)
    yield p
    p.stop()


def server_statements(conn):
    """Names of the pooler's statements on the (single) server connection."""
    return [r[0] for r in conn.execute(
        "SELECT name FROM pg_prepared_statements WHERE NOT from_sql ORDER BY name")]


def msg(t, body=b""):
    return t + struct.pack("!I", len(body) + 4) + body


def parse(name, sql):
    return msg(b"P", name.encode() + b"\0" + sql.encode() + b"\0" + b"\0\0")


def bind_execute(name):
    return (msg(b"B", b"\0" + name.encode() + b"\0" + b"\0\0" + b"\0\0" + b"\0\0")
            + msg(b"E", b"\0" + struct.pack("!I", 0)))


SYNC = msg(b"S")


def test_server_keeps_at_most_max_prepared_statements(pooler):
    with psycopg.connect(pooler.dsn(), autocommit=True, prepare_threshold=0) as conn:
        for i in range(40):
            assert conn.execute(f"SELECT {i} AS n").fetchone()[0] == i
        names = server_statements(conn)
        assert 0 < len(names) <= 5, names
        assert all(NAME_RE.match(n) for n in names), names
        # The evicted ones are prepared again on use and still return their own results.
        for i in range(40):
            assert conn.execute(f"SELECT {i} AS n").fetchone()[0] == i
        assert len(server_statements(conn)) <= 5
    # A client that leaves does not leave more behind.
    with psycopg.connect(pooler.dsn(), autocommit=True) as conn:
        assert len(server_statements(conn)) <= 5


def test_zero_turns_statement_tracking_off(pgwarden_bin, pg):
    p = start_pooler(pgwarden_bin, pg, max_statements="0")
    try:
        with psycopg.connect(p.dsn(), autocommit=True, prepare_threshold=0) as conn:
            assert conn.execute("SELECT 7 AS n").fetchone()[0] == 7
            names = [r[0] for r in conn.execute(
                "SELECT name FROM pg_prepared_statements WHERE NOT from_sql")]
            assert names and not any(n.startswith("pgw_") for n in names), names
    finally:
        p.stop()


def test_statement_names_differ_between_pooler_processes(pgwarden_bin, pg):
    secrets = set()
    for _ in range(2):
        p = start_pooler(pgwarden_bin, pg)
        try:
            with psycopg.connect(p.dsn(), autocommit=True, prepare_threshold=0) as conn:
                conn.execute("SELECT 'secret probe'")
                names = [n for n in server_statements(conn) if NAME_RE.match(n)]
                assert names
                secrets.update(n.split("_")[1] for n in names)
        finally:
            p.stop()
    assert len(secrets) == 2, secrets


@pytest.mark.parametrize("kind", ["bind", "describe", "close"])
def test_client_may_not_use_the_poolers_statement_names(pooler, kind):
    with psycopg.connect(pooler.dsn(), autocommit=True, prepare_threshold=0) as victim:
        assert victim.execute("SELECT 'victim'::text").fetchone()[0] == "victim"
        name = server_statements(victim)[0]
        s = login_raw(pooler)
        body = {"bind": bind_execute(name),
                "describe": msg(b"D", b"S" + name.encode() + b"\0"),
                "close": msg(b"C", b"S" + name.encode() + b"\0")}[kind]
        s.sendall(body + SYNC)
        msgs = read_messages(s, timeout=10, until=b"Z")
        errors = [error_fields(b) for t, b in msgs if t == b"E"]
        assert errors and errors[0].get("C") == "42501", msgs
        assert not any(t == b"D" for t, _ in msgs)
        s.close()
        # The victim's statement is still there and still its own.
        assert name in server_statements(victim)
        assert victim.execute("SELECT 'victim'::text").fetchone()[0] == "victim"
    assert pooler.alive()


def test_skipped_eviction_keeps_statements_accounted(pgwarden_bin, pg):
    """A pipeline error makes PostgreSQL skip the pooler's eviction Close and the client's
    Parse behind it: the evicted statement is still on the server and the new one is not,
    and the pooler must know both (else the next Parse fails with 'already exists')."""
    p = start_pooler(pgwarden_bin, pg, max_statements="2")
    try:
        s = login_raw(p)
        s.sendall(parse("a", "SELECT 'a'") + parse("b", "SELECT 'b'") + SYNC)
        assert [t for t, _ in read_messages(s, timeout=10, until=b"Z")] == [b"1", b"1", b"Z"]
        # The first Parse fails; "c" would evict "a" but everything up to Sync is skipped.
        s.sendall(parse("bad", "SELEC oops") + parse("c", "SELECT 'c'") + SYNC)
        got = read_messages(s, timeout=10, until=b"Z")
        assert [t for t, _ in got] == [b"E", b"Z"], got
        for name, want in (("a", b"a"), ("c", b"c"), ("b", b"b"), ("a", b"a")):
            s.sendall(bind_execute(name) + SYNC)
            got = read_messages(s, timeout=10, until=b"Z")
            types = [t for t, _ in got]
            assert b"E" not in types, [error_fields(b) for t, b in got if t == b"E"]
            rows = [b for t, b in got if t == b"D"]
            assert len(rows) == 1 and rows[0].endswith(want), got
        s.close()
    finally:
        p.stop()


def test_replacement_hidden_in_do_block_is_not_run_for_victim(pooler):
    """A DEALLOCATE and PREPARE inside a DO block replace the pooler's statement without a
    PREPARE tag on the wire; the DO tag alone makes the pooler re-create its statements."""
    with psycopg.connect(pooler.dsn(), autocommit=True, prepare_threshold=0) as victim, \
            psycopg.connect(pooler.dsn(), autocommit=True) as attacker:
        assert victim.execute("SELECT 'mine'::text AS v").fetchone()[0] == "mine"
        names = [r[0] for r in attacker.execute(
            "SELECT name FROM pg_prepared_statements WHERE statement LIKE '%mine%'")]
        assert names
        for name in names:
            attacker.execute(
                f"DO $$BEGIN EXECUTE 'DEALLOCATE \"{name}\"'; "
                f"EXECUTE 'PREPARE \"{name}\" AS SELECT ''stolen''::text AS v'; END$$")
        for _ in range(3):
            assert victim.execute("SELECT 'mine'::text AS v").fetchone()[0] == "mine"


def test_pipelined_prepared_statements_in_a_full_buffer(pgwarden_bin, pg):
    """A pipeline fills the client's buffer; when the first message of the buffer is a Bind
    whose rewrite is longer (the pooler's statement name, an injected Parse), it must still
    go out: it once failed, the rewrite being refused for want of room in pkt_buf (the buffer
    now grows)."""
    import threading
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               settings={"default_pool_size": "1", "pkt_buf": "2048"}).start()
    failures = []

    def run():
        for _ in range(3):
            try:
                with psycopg.connect(p.dsn(), autocommit=True) as c:
                    with c.pipeline():
                        curs = [c.execute("SELECT %s::int", (i,)) for i in range(1000)]
                    total = sum(cur.fetchone()[0] for cur in curs)
                    assert total == sum(range(1000)), total
            except Exception as e:  # noqa: BLE001 - collected for the assertion below
                failures.append(repr(e))

    try:
        threads = [threading.Thread(target=run) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not failures, (failures[:3], p.log()[-2000:])
    finally:
        p.stop()

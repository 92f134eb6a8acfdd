"""Hostile clients against `pgwarden serve` in transaction pooling over a pool of one server:
pipelined COPY with Syncs inside, malformed messages that once froze the loop, clients that
pipeline without reading, and random message sequences from several clients at once. Every
client must get exactly its own results; the pooler must keep serving the others."""
import os
import random
import struct
import threading
import time

import psycopg
import pytest

from serve_helpers import (Pooler, data_row_values, error_fields, login_raw, query_msg,
                           read_messages, read_until_readies, rss_kb)


@pytest.fixture
def pooler(pgwarden_bin, pg):
    pg.psql("DROP TABLE IF EXISTS sec_copy; CREATE TABLE sec_copy (tag text, n int)")
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               settings={"default_pool_size": "1", "query_wait_timeout": "30"}).start()
    yield p
    p.stop()


def msg(t, body=b""):
    return t + struct.pack("!I", len(body) + 4) + body


def rows(msgs):
    return [data_row_values(b) for t, b in msgs if t == b"D"]


def others_query(pooler, tag, results):
    s = login_raw(pooler)
    s.sendall(query_msg(f"SELECT '{tag}'"))
    results[tag] = rows(read_until_readies(s, 1))
    s.close()


def test_pipelined_copy_then_sync_never_crosses(pooler):
    """CopyData and CopyDone in the same write as the COPY, then Sync, a stray CopyDone and
    a slow query: the Sync is answered, so the server stays with this client until its
    query's ReadyForQuery; the next clients get their own rows."""
    for _ in range(3):
        a = login_raw(pooler)
        a.sendall(query_msg("COPY sec_copy FROM STDIN") + msg(b"d", b"a\t1\n") + msg(b"c"))
        first = read_until_readies(a, 1)
        assert [t for t, _ in first][-2:] == [b"C", b"Z"], first
        a.sendall(msg(b"S") + msg(b"c") + query_msg("SELECT 'A', pg_sleep(0.3)"))
        results = {}
        threads = [threading.Thread(target=others_query, args=(pooler, tag, results))
                   for tag in ("B", "C")]
        time.sleep(0.05)
        for th in threads:
            th.start()
            time.sleep(0.05)
        second = read_until_readies(a, 2)
        for th in threads:
            th.join(30)
        assert [r[0] for r in rows(second)] == ["A"], second
        assert results == {"B": [["B"]], "C": [["C"]]}
        a.close()
    assert pooler.alive()


def test_failed_copy_with_sync_inside_never_crosses(pooler, pg):
    """A bad row with a Sync pipelined inside the copy data: whether COPY read that Sync is
    unknowable in advance; the pooler follows both possibilities until the answers tell."""
    for _ in range(3):
        a = login_raw(pooler)
        a.sendall(query_msg("COPY sec_copy FROM STDIN") + msg(b"d", b"bad row\n") + msg(b"S") +
                  msg(b"d", b"x\t2\n") + msg(b"c") + query_msg("SELECT 'A'"))
        results = {}
        threads = [threading.Thread(target=others_query, args=(pooler, tag, results))
                   for tag in ("B", "C")]
        for th in threads:
            th.start()
        got = read_until_readies(a, 3, timeout=10)
        for th in threads:
            th.join(30)
        errors = [error_fields(b) for t, b in got if t == b"E"]
        assert errors and errors[0]["C"].startswith("22"), got
        assert ["A"] in rows(got), got
        assert results == {"B": [["B"]], "C": [["C"]]}
        a.close()
    assert pooler.alive()


def test_extended_copy_failure_releases_server(pooler):
    """libpq's COPY with parameters (Sync right behind Execute) failing on a bad row: the
    pooler's probe settles whether that Sync was read, so the server goes back to the pool
    while this client stays idle."""
    with psycopg.connect(pooler.dsn(), autocommit=True) as c, \
            psycopg.connect(pooler.dsn(), autocommit=True) as other:
        pgc = c.pgconn
        pgc.send_query_params(b"COPY sec_copy FROM STDIN", None)
        assert pgc.get_result().status == psycopg.pq.ExecStatus.COPY_IN
        pgc.put_copy_data(b"not a number\n")
        pgc.put_copy_end()
        assert pgc.get_result().status == psycopg.pq.ExecStatus.FATAL_ERROR
        while pgc.get_result() is not None:
            pass
        assert other.execute("SELECT 'other'").fetchone()[0] == "other"
        assert c.execute("SELECT 'c'").fetchone()[0] == "c"


@pytest.mark.parametrize("kind", [b"P", b"D", b"C", b"B"])
def test_empty_message_ends_client_not_pooler(pooler, kind):
    """A 5-byte message with no body, then 8 KB of anything, once made the pooler spin."""
    bad = login_raw(pooler)
    bad.sendall(msg(kind) + b"x" * 9000)
    got = read_messages(bad, timeout=5)
    errors = [error_fields(b) for t, b in got if t == b"E"]
    assert errors and errors[0]["C"] == "08P01", got
    bad.close()
    start = time.time()
    with psycopg.connect(pooler.dsn(), connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1
    assert time.time() - start < 5
    assert pooler.alive()


@pytest.mark.parametrize("payload", [
    msg(b"P", b"name-without-nul"),
    msg(b"P", b"s1\0SELECT 1\0\0\1"),        # parameter count promises more than sent
    msg(b"D", b"Xname\0"),                    # neither statement nor portal
    msg(b"C", b"S"),                          # no name at all
    msg(b"B", b"portal-only"),
])
def test_malformed_rewritten_messages_end_client(pooler, payload):
    bad = login_raw(pooler)
    bad.sendall(payload + msg(b"S"))
    got = read_messages(bad, timeout=5)
    errors = [error_fields(b) for t, b in got if t == b"E"]
    assert errors and errors[0]["C"] == "08P01", got
    bad.close()
    with psycopg.connect(pooler.dsn()) as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1


@pytest.mark.skipif("ASAN_OPTIONS" in os.environ, reason="ASan's allocator hides RSS")
def test_pipelining_client_that_never_reads_stays_bounded(pooler):
    """Query/Sync/Parse pipelined by clients that never read: the owed-answer queue fills,
    the pooler stops reading them, and its memory stays flat."""
    warm = login_raw(pooler)
    warm.sendall(query_msg("SELECT 1"))
    read_until_readies(warm, 1)
    warm.close()
    before = rss_kb(pooler.proc.pid)
    chunk = (query_msg("SELECT repeat('x', 100)") + msg(b"S") +
             msg(b"P", b"\0SELECT 1\0\0\0") + msg(b"H")) * 200
    socks = [login_raw(pooler) for _ in range(3)]
    deadline = time.time() + 4
    for s in socks:
        s.setblocking(False)
    while time.time() < deadline:
        for s in socks:
            try:
                s.send(chunk)
            except BlockingIOError:
                pass
        time.sleep(0.01)
    grown = rss_kb(pooler.proc.pid) - before
    for s in socks:
        s.close()
    assert grown < 4096, f"pooler grew by {grown} KB"
    time.sleep(0.5)
    with psycopg.connect(pooler.dsn(), connect_timeout=10) as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1


def random_batch(rng, tag):
    """Messages of one random request from the client tagged `tag`, and how many
    ReadyForQuery it makes PostgreSQL send when nothing fails by chance."""
    choice = rng.randrange(7)
    sel = f"SELECT '{tag}'"
    if choice == 0:
        return query_msg(sel)
    if choice == 1:
        return query_msg(sel) * rng.randint(2, 5)
    if choice == 2:  # extended, unnamed
        return (msg(b"P", b"\0" + sel.encode() + b"\0\0\0") + msg(b"B", b"\0\0\0\0\0\0\0\0") +
                msg(b"E", b"\0\0\0\0\0") + msg(b"S"))
    if choice == 3:  # an error mid-pipeline, the rest skipped up to Sync
        return (msg(b"P", b"\0SELECT 1/0\0\0\0") + msg(b"B", b"\0\0\0\0\0\0\0\0") +
                msg(b"E", b"\0\0\0\0\0") + query_msg(sel) + msg(b"S") + query_msg(sel))
    if choice == 4:  # pipelined COPY, then Sync and a stray CopyDone
        return (query_msg("COPY sec_copy FROM STDIN") + msg(b"d", f"{tag}\t1\n".encode()) +
                msg(b"c") + msg(b"S") + msg(b"c") + query_msg(sel))
    if choice == 5:  # COPY failing on a bad row with a Sync and a Flush inside
        return (query_msg("COPY sec_copy FROM STDIN") + msg(b"d", b"oops\n") + msg(b"H") +
                msg(b"S") + msg(b"c") + query_msg(sel))
    return msg(b"S") + msg(b"H") + query_msg(sel)  # Sync with nothing open


def random_client(pooler, tag, seed, rounds, failures):
    rng = random.Random(seed)
    try:
        s = login_raw(pooler)
        for i in range(rounds):
            sentinel = f"{tag}-end-{i}"
            s.sendall(random_batch(rng, tag) + query_msg(f"SELECT '{sentinel}'"))
            seen = []
            deadline = time.time() + 20
            while time.time() < deadline:
                msgs = read_until_readies(s, 1, timeout=max(0.1, deadline - time.time()))
                if not msgs:
                    break
                seen += msgs
                if [sentinel] in rows(msgs):
                    break
            values = [r[0] for r in rows(seen)]
            if sentinel not in values:
                failures.append(f"{tag}: no sentinel in round {i}: {seen[-5:]}")
                return
            foreign = [v for v in values if not v.startswith(tag)]
            if foreign:
                failures.append(f"{tag} got {foreign} in round {i}")
                return
        s.close()
    except Exception as e:  # noqa: BLE001 - reported as a failure of this client
        failures.append(f"{tag}: {e!r}")


def test_random_sequences_from_several_clients_never_cross(pooler):
    """Property: random valid and failing message sequences (COPY, pipelines, Sync and Flush
    inside COPY, errors) from four clients over one server; each client sees only rows it
    asked for, and every request is answered."""
    failures = []
    seed = int(os.environ.get("PGWARDEN_PROPERTY_SEED", "0")) or random.randrange(1 << 30)
    threads = [threading.Thread(target=random_client,
                                args=(pooler, f"c{k}", seed + k, 25, failures))
               for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(240)
    assert not failures, f"seed {seed}: {failures}"
    assert pooler.alive()


def test_replaced_pooler_statement_never_runs_for_its_client(pooler):
    """Another client reads the pooler's statement names in pg_prepared_statements and
    replaces one with its own SQL: the victim's next execution still runs its own query."""
    with psycopg.connect(pooler.dsn(), autocommit=True) as victim, \
            psycopg.connect(pooler.dsn(), autocommit=True) as attacker:
        assert victim.execute("SELECT 'mine'::text AS v", prepare=True).fetchone()[0] == "mine"
        names = [r[0] for r in attacker.execute(
            "SELECT name FROM pg_prepared_statements WHERE statement LIKE '%mine%'")]
        assert names, "the pooler's statement should be on the shared server"
        for name in names:
            attacker.execute(f'DEALLOCATE "{name}"')
            attacker.execute(f"PREPARE \"{name}\" AS SELECT 'stolen'::text AS v")
        for _ in range(3):
            assert victim.execute("SELECT 'mine'::text AS v",
                                  prepare=True).fetchone()[0] == "mine"

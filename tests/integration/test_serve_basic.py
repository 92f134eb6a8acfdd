"""`pgwarden serve`: the basics through real clients (psql, psycopg) in both pool modes."""
import os
import subprocess
import time

import psycopg
import pytest

from serve_helpers import Pooler


@pytest.fixture(params=["transaction", "session"])
def pooler(request, pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, pool_mode=request.param).start()
    yield p
    p.stop()


def test_psycopg_simple_query(pooler):
    with psycopg.connect(pooler.dsn()) as conn:
        assert conn.execute("SELECT 1 + 1").fetchone()[0] == 2
        assert conn.execute("SELECT current_database()").fetchone()[0] == "postgres"


def test_psql(pooler, pg):
    out = subprocess.run([pg.bin("psql"), "-X", "-A", "-t", "-h", "127.0.0.1", "-p",
                          str(pooler.port), "-U", "postgres", "-d", "appdb", "-c",
                          "SELECT current_database(), 40 + 2"],
                         capture_output=True, text=True, timeout=20,
                         env={**os.environ, "PGSSLMODE": "prefer"})
    assert out.returncode == 0, out.stderr + pooler.log()
    assert out.stdout.strip() == "appdb|42"


def test_results_equal_direct(pooler, pg):
    sql = ("SELECT g, md5(g::text), g * 1.5 FROM generate_series(1, 2000) g "
           "ORDER BY g")
    with psycopg.connect(pg.dsn()) as direct, psycopg.connect(pooler.dsn()) as pooled:
        assert pooled.execute(sql).fetchall() == direct.execute(sql).fetchall()
        # extended protocol with parameters, several types
        q = "SELECT %s::int + 1, %s::text || 'x', %s::numeric"
        args = (41, "abc", "3.25")
        assert pooled.execute(q, args).fetchall() == direct.execute(q, args).fetchall()


def test_transactions_and_errors(pooler):
    with psycopg.connect(pooler.dsn(), autocommit=False) as conn:
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS t_ok (x int) ON COMMIT DROP")
        conn.execute("INSERT INTO t_ok VALUES (1), (2)")
        assert conn.execute("SELECT count(*) FROM t_ok").fetchone()[0] == 2
        conn.commit()
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        conn.rollback()
        assert conn.execute("SELECT 3").fetchone()[0] == 3
        conn.commit()


def test_pipeline_mode(pooler):
    with psycopg.connect(pooler.dsn(), autocommit=True) as conn:
        with conn.pipeline():
            curs = [conn.execute("SELECT %s::int * 2", (i,)) for i in range(50)]
        assert [c.fetchone()[0] for c in curs] == [i * 2 for i in range(50)]
        # an error inside a pipeline, then more work on the same connection
        with pytest.raises(psycopg.errors.DivisionByZero):
            with conn.pipeline():
                conn.execute("SELECT 1")
                conn.execute("SELECT 1/0")
                conn.execute("SELECT 2")
        assert conn.execute("SELECT 7").fetchone()[0] == 7


def test_copy_in_and_out(pooler):
    with psycopg.connect(pooler.dsn(), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS copy_t_" + pooler_mode_suffix(pooler))
        t = "copy_t_" + pooler_mode_suffix(pooler)
        conn.execute(f"CREATE TABLE {t} (a int, b text)")
        with conn.cursor().copy(f"COPY {t} FROM STDIN") as cp:
            for i in range(1000):
                cp.write_row((i, f"row {i}"))
        assert conn.execute(f"SELECT count(*), sum(a) FROM {t}").fetchone() == (1000, 499500)
        rows = []
        with conn.cursor().copy(f"COPY {t} TO STDOUT") as cp:
            for row in cp.rows():
                rows.append(row)
        assert len(rows) == 1000
        conn.execute(f"DROP TABLE {t}")


def pooler_mode_suffix(pooler):
    return pooler.settings["pool_mode"][0] + str(pooler.port)


def test_parameter_status_follows_client(pooler):
    with psycopg.connect(pooler.dsn(application_name="app-one")) as a, \
         psycopg.connect(pooler.dsn(application_name="app-two")) as b:
        for _ in range(5):
            assert a.execute("SHOW application_name").fetchone()[0] == "app-one"
            assert b.execute("SHOW application_name").fetchone()[0] == "app-two"
            a.commit()
            b.commit()


def test_session_mode_reset_between_clients(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, pool_mode="session",
               settings={"default_pool_size": "1"}).start()
    try:
        with psycopg.connect(p.dsn(), autocommit=True) as a:
            a.execute("SET statement_timeout = 12345")
            a.execute("PREPARE leak AS SELECT 1")
        with psycopg.connect(p.dsn(), autocommit=True) as b:
            assert b.execute("SHOW statement_timeout").fetchone()[0] == "0"
            assert b.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0] == 0
    finally:
        p.stop()


@pytest.mark.parametrize("reset_always", ["0", "1"])
def test_transaction_mode_session_state(pgwarden_bin, pg, reset_always):
    """Transaction mode shares servers between transactions: a session-level SET leaks to the
    next client (as in PgBouncer) unless server_reset_query_always = 1."""
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               settings={"default_pool_size": "1",
                         "server_reset_query_always": reset_always}).start()
    try:
        with psycopg.connect(p.dsn(), autocommit=True) as a, \
             psycopg.connect(p.dsn(), autocommit=True) as b:
            a.execute("SET statement_timeout = 12345")
            seen = b.execute("SHOW statement_timeout").fetchone()[0]
            assert seen == ("12345ms" if reset_always == "0" else "0")
    finally:
        p.stop()


def test_copy_extended_protocol(pgwarden_bin, pg):
    """libpq sends COPY through Parse/Bind/Execute/Sync when parameters are used: the Sync
    that reaches the server in copy mode gets no answer, the one after CopyDone does."""
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               settings={"default_pool_size": "1"}).start()
    try:
        pg.psql("DROP TABLE IF EXISTS copy_ext; CREATE TABLE copy_ext (a int)")
        with psycopg.connect(p.dsn(), autocommit=True) as c, \
             psycopg.connect(p.dsn(), autocommit=True) as other:
            pgc = c.pgconn
            pgc.send_query_params(b"COPY copy_ext FROM STDIN", None)
            res = pgc.get_result()
            assert res.status == psycopg.pq.ExecStatus.COPY_IN, res.error_message
            for i in range(100):
                assert pgc.put_copy_data(f"{i}\n".encode()) == 1
            assert pgc.put_copy_end() == 1
            res = pgc.get_result()
            assert res.status == psycopg.pq.ExecStatus.COMMAND_OK, res.error_message
            assert pgc.get_result() is None
            # the server was released cleanly: another client can use it
            assert other.execute("SELECT count(*) FROM copy_ext").fetchone()[0] == 100
            assert c.execute("SELECT sum(a) FROM copy_ext").fetchone()[0] == 4950
            # a failing COPY (bad data) in extended mode
            pgc.send_query_params(b"COPY copy_ext FROM STDIN", None)
            assert pgc.get_result().status == psycopg.pq.ExecStatus.COPY_IN
            pgc.put_copy_data(b"not a number\n")
            pgc.put_copy_end()
            res = pgc.get_result()
            assert res.status == psycopg.pq.ExecStatus.FATAL_ERROR
            while pgc.get_result() is not None:
                pass
            assert other.execute("SELECT 1").fetchone()[0] == 1
            assert c.execute("SELECT count(*) FROM copy_ext").fetchone()[0] == 100
    finally:
        p.stop()


def test_listen_notify_session_mode(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, pool_mode="session").start()
    try:
        with psycopg.connect(p.dsn(), autocommit=True) as listener, \
             psycopg.connect(p.dsn(), autocommit=True) as sender:
            got = []
            listener.add_notify_handler(lambda n: got.append(n.payload))
            listener.execute("LISTEN chan")
            sender.execute("NOTIFY chan, 'hello'")
            deadline = time.time() + 5
            while not got and time.time() < deadline:
                listener.execute("SELECT 1")
                time.sleep(0.05)
            assert got == ["hello"]
    finally:
        p.stop()


def test_two_listen_addresses(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, settings={"listen_addr": "127.0.0.1,localhost"})
    p.settings["listen_addr"] = "127.0.0.2, 127.0.0.1"
    p.write_config()
    p.start()
    try:
        for host in ("127.0.0.1", "127.0.0.2"):
            with psycopg.connect(p.dsn().replace("host=127.0.0.1", f"host={host}")) as c:
                assert c.execute("SELECT 1").fetchone()[0] == 1
    finally:
        p.stop()


def test_statement_mode(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, pool_mode="statement",
               settings={"default_pool_size": "1"}).start()
    try:
        with psycopg.connect(p.dsn(), autocommit=True) as a, \
             psycopg.connect(p.dsn(), autocommit=True) as b:
            for i in range(5):
                assert a.execute("SELECT %s::int", (i,)).fetchone()[0] == i
                assert b.execute("SELECT %s::int", (i,), prepare=True).fetchone()[0] == i
        c = psycopg.connect(p.dsn(), autocommit=False)
        with pytest.raises(psycopg.OperationalError) as e:
            c.execute("SELECT 1")  # psycopg opens a transaction block first
            c.execute("SELECT 2")
        assert "statement pooling" in str(e.value) + p.log()
        c.close()
        with psycopg.connect(p.dsn(), autocommit=True) as d:
            assert d.execute("SELECT 9").fetchone()[0] == 9
    finally:
        p.stop()


def test_large_copy_in_streams(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction").start()
    try:
        pg.psql("DROP TABLE IF EXISTS copy_big; CREATE TABLE copy_big (t text)")
        line = ("y" * 999 + "\n").encode()
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            with c.cursor().copy("COPY copy_big FROM STDIN") as cp:
                for _ in range(30):
                    cp.write(line * 1000)  # 1 MB per write, 30 MB in all
            assert c.execute("SELECT count(*), sum(length(t)) FROM copy_big").fetchone() == \
                (30000, 30000 * 999)
        pg.psql("DROP TABLE copy_big")
    finally:
        p.stop()

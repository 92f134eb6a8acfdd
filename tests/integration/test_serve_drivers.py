"""Client drivers through pgwarden in transaction pooling, with their default connection
settings: 12 concurrent clients over a pool of 4 servers, each running the same workload
(server-side prepared statements as the driver does them, BEGIN/COMMIT, ROLLBACK, a 2000-row
result, a numeric/timestamptz/bytea/unicode text/float8 round trip, pipelining where the driver
has it) and checking every result against values it computed itself. Client-unique values
(client * 1000 + iteration) make a result crossed between clients fail.

The non-Python clients live in tests/drivers/ (docs/DRIVERS.md). A driver whose toolchain is
not installed is skipped with the reason; scripts/setup installs them all."""
import asyncio
import datetime
import decimal
import glob
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading

import psycopg
import pytest

from pgfixture import PASSWORDS
from serve_helpers import Pooler, pgwarden_backends

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DRIVERS = os.path.join(ROOT, "tests", "drivers")

CLIENTS = 12
POOL_SIZE = 4
ITERS = 12  # PgJDBC's prepareThreshold is 5: at least 10 executions of each statement
ROWS = 2000
BATCH = 20
USER = "app_user"
DB = "appdb"
PROGRAM_TIMEOUT = 150

# pgwarden log lines that mean a client or server broke the protocol, or pgwarden thought so.
PROTOCOL_TROUBLE = re.compile(
    r"protocol violation|protocol error|invalid message|invalid frontend message|"
    r"unexpected message|malformed|out of sync|08P01|unsupported startup parameter",
    re.IGNORECASE)


def start_pooler(pgwarden_bin, pg, **extra):
    settings = {
        "default_pool_size": str(POOL_SIZE),
        "max_client_conn": "200",
        "query_wait_timeout": "60",
        "admin_users": "postgres",
    }
    settings.update(extra)
    # PGWARDEN_DRIVERS_VERBOSE=2 traces every client and server state change in the log.
    verbose = os.environ.get("PGWARDEN_DRIVERS_VERBOSE")
    if verbose:
        settings["verbose"] = verbose
    return Pooler(pgwarden_bin, pg, pool_mode="transaction", auth_type="scram-sha-256",
                  settings=settings).start()


@pytest.fixture
def pooler(pgwarden_bin, pg):
    p = start_pooler(pgwarden_bin, pg)
    yield p
    p.stop()


def make_table(pg, name):
    pg.psql(f"DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (client int NOT NULL, "
            "iter int NOT NULL, val text NOT NULL, PRIMARY KEY (client, iter))",
            user=USER, dbname=DB)


def check_table(pg, name, val_format):
    """Exactly one committed row per client and iteration; nothing rolled back survived."""
    rows = pg.psql(f"SELECT client, iter, val FROM {name} ORDER BY client, iter",
                   user=USER, dbname=DB).splitlines()
    want = [f"{k}|{i}|{val_format.format(k=k, i=i)}"
            for k in range(1, CLIENTS + 1) for i in range(ITERS)]
    assert rows == want, f"table {name}: {len(rows)} rows, want {len(want)}"


def console(pooler, command):
    """Rows of one admin console command as dicts of text values."""
    with psycopg.connect(pooler.dsn("postgres", "pgbouncer"), autocommit=True) as c:
        res = c.pgconn.exec_(command.encode())  # the console speaks the simple protocol
        assert res.status == psycopg.pq.ExecStatus.TUPLES_OK, res.error_message
        names = [res.fname(i).decode() for i in range(res.nfields)]
        return [{names[i]: (res.get_value(r, i) or b"").decode() for i in range(res.nfields)}
                for r in range(res.ntuples)]


def check_pooler_after(pooler, pg, loaded=True):
    """pgwarden logged no protocol trouble, kept to its pool size, and still serves; after
    the 12-client workload (loaded) also that clients queued for servers and that it saw
    their named prepared statements."""
    log = pooler.log()
    trouble = [line for line in log.splitlines() if PROTOCOL_TROUBLE.search(line)]
    assert not trouble, "protocol trouble in pgwarden's log:\n" + "\n".join(trouble[:20])
    assert pooler.alive(), "pgwarden exited\n" + log
    assert pgwarden_backends(pg, USER) <= POOL_SIZE
    pools = [r for r in console(pooler, "SHOW POOLS")
             if r["database"] == DB and r["user"] == USER]
    assert len(pools) == 1, pools
    assert int(pools[0]["cl_waiting"]) == 0 and int(pools[0]["sv_active"]) == 0, pools
    stats = [r for r in console(pooler, "SHOW STATS") if r["database"] == DB]
    assert len(stats) == 1, stats
    stats = stats[0]
    if loaded:
        assert int(stats["total_wait_time"]) > 0, ("no client waited for a server", stats)
        assert int(stats["total_client_parse_count"]) >= CLIENTS, stats
        assert int(stats["total_bind_count"]) > 0, stats
    with psycopg.connect(pooler.dsn(USER, DB), autocommit=True) as c:
        assert c.execute("SELECT %s::int + 1", (41,)).fetchone()[0] == 42


def driver_env(pooler, table, **extra):
    env = dict(os.environ)
    env.update({
        "PGW_HOST": "127.0.0.1", "PGW_PORT": str(pooler.port), "PGW_USER": USER,
        "PGW_PASSWORD": PASSWORDS[USER], "PGW_DB": DB, "PGW_TABLE": table,
        "PGW_CLIENTS": str(CLIENTS), "PGW_ITERS": str(ITERS),
        "PGW_ROWS": str(ROWS), "PGW_BATCH": str(BATCH),
    })
    env.update(extra)
    return env


def run_program(args, pooler, table, cwd=None, env=None, timeout=PROGRAM_TIMEOUT):
    """Runs one driver program and checks its exit code and its "OK" line; returns stdout."""
    try:
        out = subprocess.run(args, cwd=cwd, env=env or driver_env(pooler, table),
                             capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{args[0]} still running after {timeout}s\n"
                             f"stdout={e.stdout}\nstderr={e.stderr}\n{pooler.log()}")
    detail = f"exit {out.returncode}\nstdout:\n{out.stdout[-6000:]}\nstderr:\n{out.stderr[-6000:]}"
    assert out.returncode == 0, detail + "\npgwarden log:\n" + pooler.log()
    assert re.search(r"^OK ", out.stdout, re.MULTILINE), detail
    return out.stdout


def need(tool, why):
    path = shutil.which(tool)
    if not path:
        pytest.skip(f"{tool} not installed ({why}); scripts/setup installs it")
    return path


# ---- PgJDBC ------------------------------------------------------------------------------

JDBC_JAR = "/usr/share/java/postgresql.jar"


def jdbc_command():
    java = need("java", "default-jdk-headless")
    if not os.path.exists(JDBC_JAR):
        pytest.skip(f"{JDBC_JAR} missing (libpostgresql-jdbc-java); scripts/setup installs it")
    return [java, "-cp", JDBC_JAR, os.path.join(DRIVERS, "java", "DriverCheck.java")]


def float_digits_seen(out):
    """What the JDBC program's clients read as extra_float_digits, value -> times."""
    m = re.search(r"^extra_float_digits seen: \{(.*)\}$", out, re.MULTILINE)
    assert m, out
    return {k: int(v) for k, v in re.findall(r"([^=, ]+)=(\d+)", m.group(1))}


def test_pgjdbc(pooler, pg):
    """PgJDBC with no ignore_startup_parameters: every JDBC client reads its own
    extra_float_digits (3) on every server, and a psycopg client sharing the pool keeps
    the server default (1) throughout."""
    cmd = jdbc_command()
    make_table(pg, "drv_jdbc")
    stop = threading.Event()
    others_saw = []

    def other_client():
        with psycopg.connect(pooler.dsn(USER, DB), autocommit=True) as c:
            while not stop.is_set():
                others_saw.append(c.execute("SHOW extra_float_digits").fetchone()[0])
                stop.wait(0.02)

    watchers = [threading.Thread(target=other_client) for _ in range(2)]
    for t in watchers:
        t.start()
    try:
        out = run_program(cmd, pooler, "drv_jdbc")
    finally:
        stop.set()
        for t in watchers:
            t.join(timeout=30)
    assert set(float_digits_seen(out)) == {"3"}, out
    assert others_saw and set(others_saw) == {"1"}, sorted(set(others_saw))
    check_table(pg, "drv_jdbc", "jdbc {k}/{i}")
    check_pooler_after(pooler, pg)


def test_pgjdbc_ignore_startup_parameters(pgwarden_bin, pg):
    """The PgBouncer workaround (ignore_startup_parameters = extra_float_digits): the whole
    workload, named statements from the 5th execution on, and batches, come through."""
    cmd = jdbc_command()
    p = start_pooler(pgwarden_bin, pg, ignore_startup_parameters="extra_float_digits")
    try:
        make_table(pg, "drv_jdbc")
        out = run_program(cmd, p, "drv_jdbc")
        # Every float result was exact: the values PgJDBC read (1 or 3) all print
        # PostgreSQL 12+'s shortest exact form.
        assert set(float_digits_seen(out)) <= {"1", "3"}, out
        check_table(pg, "drv_jdbc", "jdbc {k}/{i}")
        check_pooler_after(p, pg)
    finally:
        p.stop()


# ---- expected values, shared by the Python clients ----------------------------------------

def unicode_text(k, i):
    return f"héllo wörld ✓ 日本語 🐘 ß€ c{k} i{i}"


def type_values(k, i):
    """(numeric, timestamptz, bytea, text, float8) for client k, iteration i."""
    num = decimal.Decimal(f"12345678901234567890.{k:02d}{i:04d}")
    ts = (datetime.datetime(2024, 2, 29, 12, 34, 56, 789012, tzinfo=datetime.timezone.utc)
          + datetime.timedelta(hours=k, seconds=i))
    data = bytes(range(256)) + bytes([k, i])
    return num, ts, data, unicode_text(k, i), k + i / 3.0


def expect(got, want, k, i, what):
    if got != want:
        raise AssertionError(f"client {k} iter {i}: {what}: got {got!r}, want {want!r}")


def run_threads(fn):
    """fn(k) for k = 1..CLIENTS in threads; fails with every client's failure."""
    errors = []

    def wrap(k):
        try:
            fn(k)
        except BaseException as e:  # noqa: B036 - reported below with its client
            errors.append(f"client {k}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=wrap, args=(k,)) for k in range(1, CLIENTS + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=PROGRAM_TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a client hung"
    assert not errors, "\n".join(errors)


# ---- psycopg 3 (libpq) -------------------------------------------------------------------

TYPES_SQL = ("SELECT {}::numeric, {}::numeric * 3, {}::timestamptz, "
             "{}::timestamptz + interval '1 day', {}::bytea, md5({}::bytea), {}::text, "
             "length({}::text), octet_length({}::text), {}::float8, {}::float8 * 2, "
             "0.1::float8 + 0.2::float8, (0.1::float8 + 0.2::float8)::text")


def types_sql(placeholder):
    """TYPES_SQL with placeholder(n) for parameter n = 1..11."""
    return TYPES_SQL.format(*[placeholder(n) for n in range(1, 12)])


def check_types(row, k, i):
    num, ts, data, text, f = type_values(k, i)
    want = (num, num * 3, ts, ts + datetime.timedelta(days=1), data,
            hashlib.md5(data).hexdigest(), text, len(text), len(text.encode()), f, f * 2,
            0.1 + 0.2, "0.30000000000000004")
    for n, (got, w) in enumerate(zip(row, want)):
        expect(got, w, k, i, f"types column {n + 1}")
    expect(len(row), len(want), k, i, "types columns")


def psycopg_client(dsn, table, k):
    # Default settings: not autocommit (psycopg opens the transaction), prepare_threshold 5.
    with psycopg.connect(dsn) as c, psycopg.connect(dsn, autocommit=True) as ac:
        for i in range(ITERS):
            v = k * 1000 + i
            # (a) prepared from the first execution, and auto-prepared after five
            expect(c.execute("SELECT %s::int * 2, %s::text || '-' || %s::text",
                             (v, f"c{k}", str(v)), prepare=True).fetchone(),
                   (2 * v, f"c{k}-{v}"), k, i, "doubled (prepare=True)")
            expect(c.execute("SELECT %s::int + 7", (v,)).fetchone(), (v + 7,), k, i,
                   "plus seven (auto-prepared)")
            c.commit()
            # (b) committed transaction
            c.execute(f"INSERT INTO {table} (client, iter, val) VALUES (%s, %s, %s)",
                      (k, i, f"psycopg {k}/{i}"))
            expect(c.execute(f"SELECT count(*) FROM {table} WHERE client = %s",
                             (k,)).fetchone(), (i + 1,), k, i, "count in transaction")
            c.commit()
            # (c) rolled back
            c.execute(f"INSERT INTO {table} (client, iter, val) VALUES (%s, %s, %s)",
                      (k, 100000 + i, "rolled back"))
            expect(c.execute(f"SELECT count(*) FROM {table} WHERE client = %s",
                             (k,)).fetchone(), (i + 2,), k, i, "count before rollback")
            c.rollback()
            expect(c.execute(f"SELECT count(*) FROM {table} WHERE client = %s",
                             (k,)).fetchone(), (i + 1,), k, i, "count after rollback")
            c.commit()
            # (d) many rows
            rows = c.execute("SELECT g, g * %s::bigint, repeat('x', g %% 50) "
                             "FROM generate_series(1, %s) g", (v, ROWS)).fetchall()
            expect(rows, [(n, n * v, "x" * (n % 50)) for n in range(1, ROWS + 1)], k, i,
                   "many rows")
            # (e) types, twice over the same parameters
            num, ts, data, text, f = type_values(k, i)
            params = (num, num, ts, ts, data, data, text, text, text, f, f)
            check_types(c.execute(types_sql(lambda n: "%s"), params).fetchone(), k, i)
            c.commit()
            # (f) libpq pipeline mode: BATCH prepared queries and an executemany, one Sync
            with c.pipeline():
                curs = []
                for j in range(BATCH):
                    cur = c.cursor()
                    cur.execute("SELECT %s::int + %s::int", (v, j), prepare=True)
                    curs.append(cur)
                c.cursor().executemany(
                    f"INSERT INTO {table} (client, iter, val) VALUES (%s, %s, %s)",
                    [(k, 200000 + i * BATCH + j, "pipelined") for j in range(BATCH)])
                total = c.execute(f"SELECT count(*) FROM {table} WHERE client = %s AND "
                                  "iter >= 200000", (k,))
            for j, cur in enumerate(curs):
                expect(cur.fetchone(), (v + j,), k, i, f"pipelined query {j}")
            expect(total.fetchone(), (BATCH,), k, i, "pipelined inserts")
            c.rollback()
            # (g) an error in a pipeline: what follows it is skipped until the Sync. On a
            # connection in autocommit mode, where the statements after the error were
            # prepared before (psycopg sends only Bind and Execute for them). Not on c: each
            # ROLLBACK there makes psycopg forget its statements (and send DEALLOCATE ALL),
            # so it would Parse again after the error, which test_psycopg_parse_after_error
            # shows pgwarden mishandles.
            if i == 0:
                ac.execute("SELECT %s::int + 2", (v,), prepare=True)
            try:
                with ac.pipeline():
                    ok = ac.execute("SELECT %s::int + 7", (v,), prepare=True)
                    ac.execute("SELECT 10 / %s::int", (0,), prepare=True)
                    ac.execute("SELECT %s::int + 2", (v,), prepare=True)
                raise AssertionError(f"client {k} iter {i}: division by zero passed")
            except psycopg.errors.DivisionByZero:
                pass
            expect(ok.fetchone(), (v + 7,), k, i, "pipelined query before the error")
            expect(ac.execute("SELECT %s::int + 2", (v,), prepare=True).fetchone(), (v + 2,),
                   k, i, "the skipped query, run again")


def test_psycopg(pooler, pg):
    make_table(pg, "drv_psycopg")
    dsn = pooler.dsn(USER, DB)
    run_threads(lambda k: psycopg_client(dsn, "drv_psycopg", k))
    check_table(pg, "drv_psycopg", "psycopg {k}/{i}")
    check_pooler_after(pooler, pg)


def test_psycopg_parse_after_error(pgwarden_bin, pg):
    """psycopg prepares a statement inside a pipeline after an error (so the server skips
    the Parse) while another client has prepared the same query on that server; both
    clients then use it. One server (pool size 1), so the sharing is certain."""
    p = start_pooler(pgwarden_bin, pg, default_pool_size="1")
    try:
        with psycopg.connect(p.dsn(USER, DB), autocommit=True) as first, \
                psycopg.connect(p.dsn(USER, DB), autocommit=True) as second:
            assert first.execute("SELECT %s::int + 2", (1,), prepare=True).fetchone() == (3,)
            with pytest.raises(psycopg.errors.DivisionByZero):
                with second.pipeline():
                    second.execute("SELECT 10 / %s::int", (0,), prepare=True)
                    second.execute("SELECT %s::int + 2", (2,), prepare=True)
            for n in range(3):
                assert second.execute("SELECT %s::int + 2", (n,),
                                      prepare=True).fetchone() == (n + 2,)
                assert first.execute("SELECT %s::int + 2", (n,),
                                     prepare=True).fetchone() == (n + 2,)
        check_pooler_after(p, pg, loaded=False)
    finally:
        p.stop()


# ---- asyncpg -----------------------------------------------------------------------------

def asyncpg_or_skip():
    return pytest.importorskip("asyncpg", reason="python3-asyncpg not installed; "
                               "scripts/setup installs it")


async def asyncpg_client(asyncpg, port, table, k):
    # Default settings: statement cache of 100 named statements (__asyncpg_stmt_N__),
    # binary transfer of every type used here.
    c = await asyncpg.connect(host="127.0.0.1", port=port, user=USER,
                              password=PASSWORDS[USER], database=DB)
    try:
        for i in range(ITERS):
            v = k * 1000 + i
            # (a) the statement cache, and an explicitly prepared statement
            expect(tuple(await c.fetchrow("SELECT $1::int * 2, $2::text || '-' || $3::text",
                                          v, f"c{k}", str(v))),
                   (2 * v, f"c{k}-{v}"), k, i, "doubled")
            stmt = await c.prepare("SELECT $1::int + 7")
            expect(await stmt.fetchval(v), v + 7, k, i, "prepared plus seven")
            # (b) committed transaction
            async with c.transaction():
                await c.execute(f"INSERT INTO {table} (client, iter, val) VALUES ($1, $2, $3)",
                                k, i, f"asyncpg {k}/{i}")
                expect(await c.fetchval(f"SELECT count(*) FROM {table} WHERE client = $1", k),
                       i + 1, k, i, "count in transaction")
            # (c) rolled back
            tr = c.transaction()
            await tr.start()
            await c.execute(f"INSERT INTO {table} (client, iter, val) VALUES ($1, $2, $3)",
                            k, 100000 + i, "rolled back")
            expect(await c.fetchval(f"SELECT count(*) FROM {table} WHERE client = $1", k),
                   i + 2, k, i, "count before rollback")
            await tr.rollback()
            expect(await c.fetchval(f"SELECT count(*) FROM {table} WHERE client = $1", k),
                   i + 1, k, i, "count after rollback")
            # (d) many rows
            rows = await c.fetch("SELECT g, g * $1::bigint, repeat('x', g % 50) "
                                 "FROM generate_series(1, $2) g", v, ROWS)
            expect([tuple(r) for r in rows],
                   [(n, n * v, "x" * (n % 50)) for n in range(1, ROWS + 1)], k, i, "many rows")
            # ... and through a cursor: Execute 100 rows at a time on a portal
            async with c.transaction():
                got = [tuple(r) async for r in c.cursor(
                    "SELECT g, g * $1::bigint FROM generate_series(1, $2) g", v, ROWS,
                    prefetch=100)]
            expect(got, [(n, n * v) for n in range(1, ROWS + 1)], k, i, "cursor rows")
            # (e) types: asyncpg infers each parameter's type from the prepared statement
            num, ts, data, text, f = type_values(k, i)
            row = await c.fetchrow(types_sql(lambda n: f"${n}"), num, num, ts, ts, data, data,
                                   text, text, text, f, f)
            check_types(tuple(row), k, i)
            # (f) executemany pipelines its Bind/Execute pairs ahead of one Sync
            tr = c.transaction()
            await tr.start()
            await c.executemany(
                f"INSERT INTO {table} (client, iter, val) VALUES ($1, $2, $3)",
                [(k, 200000 + i * BATCH + j, "pipelined") for j in range(BATCH)])
            expect(await c.fetchval(f"SELECT count(*) FROM {table} WHERE client = $1 "
                                    "AND iter >= 200000", k), BATCH, k, i, "executemany rows")
            await tr.rollback()
            # (g) an executemany that fails half way (a row that exists) rolls back whole
            try:
                await c.executemany(
                    f"INSERT INTO {table} (client, iter, val) VALUES ($1, $2, $3)",
                    [(k, i if j == BATCH // 2 else 300000 + i * BATCH + j, "duplicate")
                     for j in range(BATCH)])
                raise AssertionError(f"client {k} iter {i}: executemany with a duplicate passed")
            except asyncpg.UniqueViolationError:
                pass
            expect(await c.fetchval(f"SELECT count(*) FROM {table} WHERE client = $1", k),
                   i + 1, k, i, "count after the failed executemany")
    finally:
        await c.close()


def test_asyncpg(pooler, pg):
    asyncpg = asyncpg_or_skip()
    make_table(pg, "drv_asyncpg")

    async def main():
        await asyncio.wait_for(asyncio.gather(*[
            asyncpg_client(asyncpg, pooler.port, "drv_asyncpg", k)
            for k in range(1, CLIENTS + 1)]), PROGRAM_TIMEOUT)

    asyncio.run(main())
    check_table(pg, "drv_asyncpg", "asyncpg {k}/{i}")
    check_pooler_after(pooler, pg)


def test_asyncpg_pool(pooler, pg):
    """asyncpg's own pool, as applications use it: a connection is taken for each unit of
    work and reset on release (pg_advisory_unlock_all, CLOSE ALL, UNLISTEN *, RESET ALL as
    one simple query); its statement cache outlives the releases."""
    asyncpg = asyncpg_or_skip()
    make_table(pg, "drv_asyncpg_pool")

    async def work(pool, k):
        for i in range(ITERS):
            v = k * 1000 + i
            async with pool.acquire() as c:
                expect(await c.fetchval("SELECT $1::int * 2", v), 2 * v, k, i, "doubled")
                expect(tuple(await c.fetchrow("SELECT $1::text, $2::bytea", f"c{k}",
                                              bytes([k, i]))),
                       (f"c{k}", bytes([k, i])), k, i, "text and bytea")
            async with pool.acquire() as c:
                async with c.transaction():
                    await c.execute(
                        "INSERT INTO drv_asyncpg_pool (client, iter, val) VALUES ($1, $2, $3)",
                        k, i, f"pool {k}/{i}")
                    expect(await c.fetchval("SELECT count(*) FROM drv_asyncpg_pool "
                                            "WHERE client = $1", k), i + 1, k, i, "count")

    async def main():
        pool = await asyncpg.create_pool(host="127.0.0.1", port=pooler.port, user=USER,
                                         password=PASSWORDS[USER], database=DB,
                                         min_size=CLIENTS, max_size=CLIENTS)
        try:
            await asyncio.wait_for(asyncio.gather(*[
                work(pool, k) for k in range(1, CLIENTS + 1)]), PROGRAM_TIMEOUT)
        finally:
            await pool.close()

    asyncio.run(main())
    check_table(pg, "drv_asyncpg_pool", "pool {k}/{i}")
    check_pooler_after(pooler, pg)


def test_asyncpg_pool_reset_keeps_startup_settings(pooler, pg):
    asyncpg = asyncpg_or_skip()
    settings = {"application_name": "drivers-test", "TimeZone": "America/New_York",
                "DateStyle": "SQL, DMY"}

    async def main():
        pool = await asyncpg.create_pool(host="127.0.0.1", port=pooler.port, user=USER,
                                         password=PASSWORDS[USER], database=DB,
                                         min_size=2, max_size=2, server_settings=settings)
        try:
            for _ in range(3):
                async with pool.acquire() as c:
                    got = {k: await c.fetchval(f"SHOW {k}") for k in settings}
                    assert got == settings
        finally:
            await pool.close()

    asyncio.run(main())
    check_pooler_after(pooler, pg, loaded=False)


def test_asyncpg_timeout_cancels_only_its_query(pooler, pg):
    """asyncpg's query timeout sends a CancelRequest: it must stop the timed-out client's
    query, on whichever server runs it, and no other client's."""
    asyncpg = asyncpg_or_skip()
    cancellers = (1, 2)

    async def work(k):
        c = await asyncpg.connect(host="127.0.0.1", port=pooler.port, user=USER,
                                  password=PASSWORDS[USER], database=DB)
        try:
            for i in range(ITERS):
                v = k * 1000 + i
                if k in cancellers and i % 4 == 1:
                    try:
                        await c.fetchval("SELECT pg_sleep(30)", timeout=0.5)
                        raise AssertionError(f"client {k} iter {i}: pg_sleep(30) returned")
                    except asyncio.TimeoutError:
                        pass
                    loop = asyncio.get_running_loop()
                    began = loop.time()
                    expect(await c.fetchval("SELECT $1::int * 2", v), 2 * v, k, i,
                           "after the timeout")
                    assert loop.time() - began < 10, f"client {k}: the cancel did not stop pg_sleep"
                else:
                    expect(await c.fetchval("SELECT $1::int * 2 FROM pg_sleep(0.02)", v), 2 * v,
                           k, i, "doubled while others cancel")
        finally:
            await c.close()

    async def main():
        await asyncio.wait_for(asyncio.gather(*[work(k) for k in range(1, CLIENTS + 1)]),
                               PROGRAM_TIMEOUT)

    asyncio.run(main())
    sleeping = pg.psql("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' "
                       "AND state = 'active'")
    assert sleeping == "0"
    check_pooler_after(pooler, pg)


# ---- programs built or installed once per run --------------------------------------------

@pytest.fixture(scope="module")
def build_dir():
    path = tempfile.mkdtemp(prefix="pgwarden-drivers-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def build(args, what, cwd=None, env=None, timeout=240):
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"building {what} failed:\n{out.stdout}\n{out.stderr}"


# ---- node-postgres -----------------------------------------------------------------------

NODE_DIR = os.path.join(DRIVERS, "node")


def node_modules_ready():
    """tests/drivers/node/node_modules as package-lock.json pins it (npm ci when missing)."""
    node = need("node", "nodejs")
    npm = need("npm", "npm")
    installed = os.path.join(NODE_DIR, "node_modules", "pg", "package.json")
    marker = os.path.join(NODE_DIR, "node_modules", ".package-lock.json")
    lock = os.path.join(NODE_DIR, "package-lock.json")
    if not (os.path.exists(installed) and os.path.exists(marker)
            and os.path.getmtime(marker) >= os.path.getmtime(lock)):
        out = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                             cwd=NODE_DIR, capture_output=True, text=True, timeout=240)
        if out.returncode != 0:
            pytest.skip(f"npm ci could not install node-postgres (no registry?): "
                        f"{out.stderr.strip()[-500:]}")
    return node


def test_node_postgres(pooler, pg):
    node = node_modules_ready()
    make_table(pg, "drv_node")
    run_program([node, os.path.join(NODE_DIR, "check.js")], pooler, "drv_node", cwd=NODE_DIR)
    check_table(pg, "drv_node", "node {k}/{i}")
    check_pooler_after(pooler, pg)


# ---- pgx (Go) ----------------------------------------------------------------------------

GOPATH_DEBIAN = "/usr/share/gocode"


def test_pgx(pooler, pg, build_dir):
    go = need("go", "golang-go")
    if not os.path.isdir(os.path.join(GOPATH_DEBIAN, "src", "github.com", "jackc", "pgx", "v4")):
        pytest.skip("pgx v4 source missing (golang-github-jackc-pgx-v4-dev); scripts/setup "
                    "installs it")
    env = dict(os.environ, GO111MODULE="off", GOPATH=GOPATH_DEBIAN, GOFLAGS="")
    if "GOCACHE" not in env and not env.get("HOME"):
        env["GOCACHE"] = os.path.join(tempfile.gettempdir(), "pgwarden-go-cache")
    binary = os.path.join(build_dir, "pgxcheck")
    build([go, "build", "-o", binary, "main.go"], "the pgx program",
          cwd=os.path.join(DRIVERS, "go", "pgxcheck"), env=env)
    make_table(pg, "drv_pgx")
    run_program([binary], pooler, "drv_pgx")
    check_table(pg, "drv_pgx", "pgx {k}/{i}")
    check_pooler_after(pooler, pg)


# ---- libpq pipeline mode (C) -------------------------------------------------------------

def test_libpq_pipeline(pooler, pg, build_dir):
    cc = need("cc", "build-essential")
    pg_config = need("pg_config", "libpq-dev")
    includedir = subprocess.run([pg_config, "--includedir"], capture_output=True, text=True,
                                check=True).stdout.strip()
    binary = os.path.join(build_dir, "pipeline")
    build([cc, "-O2", "-Wall", "-Wextra", "-o", binary,
           os.path.join(DRIVERS, "libpq", "pipeline.c"), f"-I{includedir}", "-lpq", "-lpthread"],
          "the libpq pipeline program")
    make_table(pg, "drv_libpq")
    run_program([binary], pooler, "drv_libpq")
    check_table(pg, "drv_libpq", "libpq {k}/{i}")
    check_pooler_after(pooler, pg)


# ---- Npgsql (.NET) -----------------------------------------------------------------------

def test_npgsql():
    # Npgsql needs the .NET SDK and the Npgsql package from NuGet: Debian 12 packages neither
    # and NuGet is not among the registries this project's machines and CI reach.
    if not shutil.which("dotnet"):
        pytest.skip("no .NET SDK (dotnet): Debian 12 has no package for it and NuGet, where "
                    "Npgsql comes from, is not reachable here")
    if not glob.glob(os.path.expanduser("~/.nuget/packages/npgsql/*")):
        pytest.skip("the Npgsql package is not in the local NuGet cache and NuGet is not "
                    "reachable here")
    pytest.skip("dotnet and Npgsql are installed but no Npgsql client is written yet "
                "(tests/drivers/ has one program per driver)")

"""`pgwarden serve` HTTP interface: /healthz, /readyz, /metrics (checked with the real
Prometheus text-format parser), the bearer token, and hostile HTTP clients that must change
nothing for pooled clients."""
import http.client
import os
import re
import signal
import socket
import threading
import time

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pgfixture import free_port
from serve_helpers import Pooler, console_rows, rss_kb

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TOKEN = "s3cret-token-for-tests"


def http_get(port, path, token=None, headers=None, method="GET"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        conn.request(method, path, headers=h)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read().decode()
    finally:
        conn.close()


def scrape(port, token=None):
    """/metrics as {family name: family} plus the raw text."""
    status, headers, body = http_get(port, "/metrics", token)
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(body)}, body


def sample(families, family, name=None, **labels):
    """Value of the one sample of family (sample name defaults to the family's) matching
    labels."""
    name = name or family
    found = [s.value for s in families[family].samples
             if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (family, name, labels, families[family].samples[:5])
    return found[0]


def pool_value(port, family, name=None, db="postgres", user="postgres"):
    fams, _ = scrape(port)
    return sample(fams, family, name, database=db, user=user)


def start_http_pooler(pgwarden_bin, pg, settings=None, **kw):
    http_port = free_port()
    s = {"http_listen": str(http_port)}
    s.update(settings or {})
    p = Pooler(pgwarden_bin, pg, settings=s, **kw).start()
    p.http_port = http_port
    # The HTTP listener opens before the pooler's own; both are up once start() returns.
    return p


@pytest.fixture
def pooler(pgwarden_bin, pg):
    p = start_http_pooler(pgwarden_bin, pg, pool_mode="transaction",
                          settings={"default_pool_size": "2"})
    yield p
    p.stop()


def test_healthz_readyz_and_listen_log(pooler):
    status, _, body = http_get(pooler.http_port, "/healthz")
    assert (status, body) == (200, "ok\n")
    with psycopg.connect(pooler.dsn()) as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1
    status, _, body = http_get(pooler.http_port, "/readyz")
    assert status == 200, body
    # HEAD works, other methods are refused, unknown paths are 404.
    assert http_get(pooler.http_port, "/healthz", method="HEAD")[0] == 200
    assert http_get(pooler.http_port, "/healthz", method="POST")[0] in (405, 501)
    assert http_get(pooler.http_port, "/nope")[0] == 404
    assert re.search(rf"HTTP listening on 127\.0\.0\.1:{pooler.http_port}\b", pooler.log())


def test_metrics_parse_and_follow_the_clients(pooler):
    with psycopg.connect(pooler.dsn(), autocommit=True) as conn:
        conn.execute("SELECT 1")
        fams, text = scrape(pooler.http_port)
        # Every family has its HELP and TYPE (a missing or malformed one parses as untyped).
        for f in fams.values():
            assert f.type in ("gauge", "counter", "histogram"), f.name
            assert f.documentation, f.name
        q0 = sample(fams, "pgwarden_pool_queries", "pgwarden_pool_queries_total",
                    database="postgres", user="postgres")
        x0 = sample(fams, "pgwarden_pool_transactions", "pgwarden_pool_transactions_total",
                    database="postgres", user="postgres")
        h0 = sample(fams, "pgwarden_pool_transaction_duration_seconds",
                    "pgwarden_pool_transaction_duration_seconds_count",
                    database="postgres", user="postgres")
        n = 25
        for i in range(n):
            assert conn.execute("SELECT %s::int + 1", (i,)).fetchone()[0] == i + 1
        fams, _ = scrape(pooler.http_port)
        lab = {"database": "postgres", "user": "postgres"}
        assert sample(fams, "pgwarden_pool_queries", "pgwarden_pool_queries_total", **lab) >= q0 + n
        assert sample(fams, "pgwarden_pool_transactions", "pgwarden_pool_transactions_total",
                      **lab) >= x0 + n
        hist_count = sample(fams, "pgwarden_pool_transaction_duration_seconds",
                            "pgwarden_pool_transaction_duration_seconds_count", **lab)
        assert hist_count >= h0 + n
        # Buckets are cumulative and end at +Inf == _count; the sum matches the counter.
        buckets = [(s.labels["le"], s.value) for s in
                   fams["pgwarden_pool_transaction_duration_seconds"].samples
                   if s.name.endswith("_bucket") and s.labels["database"] == "postgres"
                   and s.labels["user"] == "postgres"]
        assert buckets[-1] == ("+Inf", hist_count)
        assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:]))
        hsum = sample(fams, "pgwarden_pool_transaction_duration_seconds",
                      "pgwarden_pool_transaction_duration_seconds_sum", **lab)
        total = sample(fams, "pgwarden_pool_transaction_seconds",
                       "pgwarden_pool_transaction_seconds_total", **lab)
        assert abs(hsum - total) < 1e-3
        assert sample(fams, "pgwarden_pool_clients_active", **lab) + \
            sample(fams, "pgwarden_pool_clients_idle", **lab) >= 1
        assert sample(fams, "pgwarden_pool_size_max", **lab) == 2
        assert sample(fams, "pgwarden_ready") == 1
        assert sample(fams, "pgwarden_pools") >= 1
        assert sample(fams, "pgwarden_pool_received_bytes",
                      "pgwarden_pool_received_bytes_total", **lab) > 0


def test_metrics_are_documented(pooler):
    with psycopg.connect(pooler.dsn()) as conn:
        conn.execute("SELECT 1")
    _, text = scrape(pooler.http_port)
    names = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    with open(os.path.join(ROOT, "docs", "METRICS.md")) as f:
        doc = f.read()
    missing = [n for n in sorted(names) if f"`{n}`" not in doc]
    assert not missing, f"docs/METRICS.md lacks {missing}"


def test_waiting_client_shows_in_gauge(pgwarden_bin, pg):
    p = start_http_pooler(pgwarden_bin, pg, pool_mode="transaction",
                          settings={"default_pool_size": "1"})
    try:
        holder = psycopg.connect(p.dsn())
        holder.execute("SELECT 1")  # inside a transaction: holds the only server
        result = {}

        def waiter():
            with psycopg.connect(p.dsn(), autocommit=True) as c:
                result["v"] = c.execute("SELECT 41 + 1").fetchone()[0]

        t = threading.Thread(target=waiter)
        t.start()
        deadline = time.time() + 10
        waiting = 0
        while time.time() < deadline:
            waiting = pool_value(p.http_port, "pgwarden_pool_clients_waiting")
            if waiting >= 1:
                break
            time.sleep(0.05)
        assert waiting >= 1
        time.sleep(0.2)
        assert pool_value(p.http_port, "pgwarden_pool_max_wait_seconds") > 0.1
        assert pool_value(p.http_port, "pgwarden_pool_servers_active") == 1
        holder.commit()
        t.join(timeout=10)
        assert result.get("v") == 42
        holder.close()
        fams, _ = scrape(p.http_port)
        lab = {"database": "postgres", "user": "postgres"}
        assert sample(fams, "pgwarden_pool_clients_waiting", **lab) == 0
        assert sample(fams, "pgwarden_pool_waits", "pgwarden_pool_waits_total", **lab) >= 1
        assert sample(fams, "pgwarden_pool_wait_duration_seconds",
                      "pgwarden_pool_wait_duration_seconds_count", **lab) >= 1
        # The wait took at least 0.2 s: the buckets below 0.2 s do not hold it all.
        below = [s.value for s in fams["pgwarden_pool_wait_duration_seconds"].samples
                 if s.name.endswith("_bucket") and s.labels["le"] == "0.1"
                 and s.labels["database"] == "postgres"]
        assert below[0] < sample(fams, "pgwarden_pool_wait_duration_seconds",
                                 "pgwarden_pool_wait_duration_seconds_count", **lab)
    finally:
        p.stop()


def test_readyz_503_when_the_database_is_down(pgwarden_bin, pg):
    closed = free_port()
    p = start_http_pooler(pgwarden_bin, pg, databases={
        "down": f"host=127.0.0.1 port={closed} dbname=postgres"})
    try:
        assert http_get(p.http_port, "/readyz")[0] == 200  # nothing tried yet
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(p.dsn(dbname="down"))
        status, _, body = http_get(p.http_port, "/readyz")
        assert status == 503
        assert '"down"' in body and "failing" in body
        assert http_get(p.http_port, "/healthz")[0] == 200
        fams, _ = scrape(p.http_port)
        assert sample(fams, "pgwarden_ready") == 0
        assert sample(fams, "pgwarden_pool_login_failing", database="down",
                      user="postgres") == 1
        assert sample(fams, "pgwarden_pool_server_login_failures",
                      "pgwarden_pool_server_login_failures_total",
                      database="down", user="postgres") >= 1
    finally:
        p.stop()


def test_bearer_token(pgwarden_bin, pg):
    p = start_http_pooler(pgwarden_bin, pg, settings={"http_auth_token": TOKEN,
                                                      "admin_users": "postgres"})
    try:
        assert http_get(p.http_port, "/healthz")[0] == 200  # liveness needs no secret
        for path in ("/readyz", "/metrics", "/nope"):
            status, headers, _ = http_get(p.http_port, path)
            assert status == 401, path
            assert headers.get("WWW-Authenticate", "").startswith("Bearer")
            assert http_get(p.http_port, path, token="wrong")[0] == 401
            assert http_get(p.http_port, path, token=TOKEN + "x")[0] == 401
            assert http_get(p.http_port, path,
                            headers={"Authorization": f"Basic {TOKEN}"})[0] == 401
        assert http_get(p.http_port, "/readyz", token=TOKEN)[0] == 200
        assert http_get(p.http_port, "/metrics", token=TOKEN)[0] == 200
        assert http_get(p.http_port, "/nope", token=TOKEN)[0] == 404
        assert "bearer token required" in p.log()
        # SHOW CONFIG says a token is set without showing it.
        rows = {r["key"]: r for r in console_rows(p, "SHOW CONFIG")}
        assert rows["http_auth_token"]["value"] == "********"
        assert TOKEN not in p.log()
    finally:
        p.stop()


def test_readyz_ignores_a_database_a_client_made_up(pgwarden_bin, pg):
    """With a "*" entry any client that may log in names the database. One that names a
    database the server does not have (3D000) made every pool of the pooler look unready
    until autodb_idle_timeout (an hour by default) freed that pool: a typo, or anyone with a
    login, took every replica out of its load balancer. The pool still shows as failing in
    /metrics, and a database whose server is down still makes the pooler unready."""
    closed = free_port()
    p = start_http_pooler(pgwarden_bin, pg, databases={
        "*": f"host={pg.socket_dir} port={pg.port}",
        "down": f"host=127.0.0.1 port={closed} dbname=postgres"})
    try:
        with pytest.raises(psycopg.OperationalError, match="does not exist"):
            psycopg.connect(p.dsn(dbname="no_such_database"))
        status, _, body = http_get(p.http_port, "/readyz")
        assert status == 200, body
        fams, _ = scrape(p.http_port)
        assert sample(fams, "pgwarden_ready") == 1
        assert sample(fams, "pgwarden_pool_login_failing", database="no_such_database",
                      user="postgres") == 1
        with psycopg.connect(p.dsn(dbname="postgres")) as c:
            assert c.execute("SELECT 1").fetchone()[0] == 1
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(p.dsn(dbname="down"))
        status, _, body = http_get(p.http_port, "/readyz")
        assert status == 503 and '"down"' in body, body
    finally:
        p.stop()


def test_token_file_and_reload(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, settings={"http_listen": f"127.0.0.1:{free_port()}",
                                            "http_auth_token_file": "token.txt"})
    p.http_port = int(p.settings["http_listen"].split(":")[1])
    with open(os.path.join(p.dir, "token.txt"), "w") as f:
        f.write("first-token\n")
    p.start()
    try:
        assert http_get(p.http_port, "/metrics")[0] == 401
        assert http_get(p.http_port, "/metrics", token="first-token")[0] == 200
        with open(os.path.join(p.dir, "token.txt"), "w") as f:
            f.write("second-token\n")
        p.signal(signal.SIGHUP)
        deadline = time.time() + 5
        while time.time() < deadline and \
                http_get(p.http_port, "/metrics", token="second-token")[0] != 200:
            time.sleep(0.05)
        assert http_get(p.http_port, "/metrics", token="second-token")[0] == 200
        assert http_get(p.http_port, "/metrics", token="first-token")[0] == 401
    finally:
        p.stop()


def test_bind_failure_is_a_startup_error(pgwarden_bin, pg):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        p = Pooler(pgwarden_bin, pg,
                   settings={"http_listen": f"127.0.0.1:{busy.getsockname()[1]}"})
        try:
            with pytest.raises(RuntimeError) as e:
                p.start()
            assert "exited 3" in str(e.value)
            assert "http_listen" in str(e.value) and "in use" in str(e.value)
        finally:
            p.stop()
        p = Pooler(pgwarden_bin, pg, settings={"http_listen": "localhost:notaport"})
        try:
            with pytest.raises(RuntimeError) as e:
                p.start()
            assert "http_listen" in str(e.value)
        finally:
            p.stop()
    finally:
        busy.close()


# ---- hostile HTTP clients ----

class PooledLoad:
    """psycopg clients running checked queries through the pooler until stopped."""

    def __init__(self, pooler, workers=4):
        self.pooler = pooler
        self.stop_flag = threading.Event()
        self.ok = 0
        self.errors = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(w,)) for w in range(workers)]

    def run(self, w):
        try:
            with psycopg.connect(self.pooler.dsn(), autocommit=True) as conn:
                i = 0
                while not self.stop_flag.is_set():
                    v = conn.execute("SELECT %s::int * 2", (w * 100000 + i,)).fetchone()[0]
                    if v != (w * 100000 + i) * 2:
                        raise AssertionError(f"wrong result {v}")
                    i += 1
                    with self.lock:
                        self.ok += 1
        except Exception as e:  # noqa: BLE001 - reported by check()
            self.errors.append(repr(e))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout=30)

    def progress_during(self, seconds):
        before = self.ok
        time.sleep(seconds)
        return self.ok - before


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_hostile_http_clients_change_nothing_for_pooled_clients(pgwarden_bin, pg):
    p = start_http_pooler(pgwarden_bin, pg, pool_mode="transaction")
    try:
        pid = p.proc.pid
        with psycopg.connect(p.dsn()) as conn:
            conn.execute("SELECT 1")
        for _ in range(50):
            http_get(p.http_port, "/metrics")
        rss0, fds0 = rss_kb(pid), fd_count(pid)
        with PooledLoad(p) as load:
            assert load.progress_during(0.5) > 0

            # Slowloris: many sockets trickling header bytes. Beyond the connection cap they
            # wait in the backlog; none of them costs the pooler more than one descriptor.
            slow = []
            for _ in range(150):
                s = socket.socket()
                s.setblocking(False)
                try:
                    s.connect(("127.0.0.1", p.http_port))
                except BlockingIOError:
                    pass
                slow.append(s)
            header = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
            end = time.time() + 4
            pos = 0
            while time.time() < end:
                for s in slow:
                    try:
                        s.send(header[pos % len(header):pos % len(header) + 1])
                    except OSError:
                        pass
                pos += 1
                time.sleep(0.05)
            assert load.progress_during(0.5) > 0
            assert fd_count(pid) <= fds0 + 64 + 16, "HTTP connections beyond the cap"
            assert p.alive()
            for s in slow:
                s.close()

            # The cap lifts once they are gone (the sweep runs every second).
            deadline = time.time() + 10
            while True:
                try:
                    if http_get(p.http_port, "/healthz")[0] == 200:
                        break
                except OSError:
                    pass
                assert time.time() < deadline, "HTTP did not recover after slowloris"
                time.sleep(0.2)

            # 1 MB headers: refused after 8 kB, connection closed.
            big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * (1 << 20) + b"\r\n\r\n"
            for _ in range(20):
                s = socket.create_connection(("127.0.0.1", p.http_port), timeout=5)
                try:
                    s.sendall(big)
                except OSError:
                    pass  # reset: the server stopped reading
                try:
                    reply = s.recv(4096)
                except OSError:
                    reply = b""
                assert not reply.startswith(b"HTTP/1.1 200"), reply[:100]
                s.close()
            assert load.progress_during(0.3) > 0

            # 10,000 requests in a loop: keep-alive connections, reconnecting now and then.
            done = 0
            conn = None
            while done < 10000:
                if conn is None or done % 500 == 0:
                    if conn:
                        conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", p.http_port, timeout=10)
                conn.request("GET", "/healthz" if done % 10 else "/readyz")
                resp = conn.getresponse()
                resp.read()
                assert resp.status == 200
                done += 1
            conn.close()
            assert load.progress_during(0.3) > 0
        assert not load.errors, load.errors
        assert load.ok > 100
        assert p.alive(), p.log()
        time.sleep(1.5)  # let the sweep forget closed HTTP connections
        rss1, fds1 = rss_kb(pid), fd_count(pid)
        print(f"RSS {rss0} kB -> {rss1} kB, descriptors {fds0} -> {fds1}")
        # AddressSanitizer keeps freed memory in quarantine (up to 256 MB), so its builds
        # only get the loose bound.
        with open(f"/proc/{pid}/maps") as f:
            sanitized = "libasan" in f.read()
        limit_kb = (300 if sanitized else 16) * 1024
        assert rss1 - rss0 < limit_kb, f"RSS grew from {rss0} kB to {rss1} kB"
        assert fds1 <= fds0 + 8, f"descriptors grew from {fds0} to {fds1}"
        status, _, _ = http_get(p.http_port, "/metrics")
        assert status == 200
        with psycopg.connect(p.dsn()) as conn:
            assert conn.execute("SELECT 7").fetchone()[0] == 7
    finally:
        p.stop()


def start_many_pools_pooler(pgwarden_bin, pg, n):
    """A pooler with n auto-database pools db0..db{n-1} (their server is down, so each login
    just makes the pool), besides the working postgres database."""
    import struct as _struct
    dead = free_port()
    p = start_http_pooler(pgwarden_bin, pg,
                          settings={"server_login_retry": "3600", "max_client_conn": "1000"},
                          databases={"*": f"host=127.0.0.1 port={dead}",
                                     "postgres": f"host={pg.socket_dir} port={pg.port} "
                                                 "dbname=postgres"})
    try:
        for i in range(n):
            with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
                body = _struct.pack("!I", 196608) + b"user\0postgres\0database\0" + \
                    f"db{i}".encode() + b"\0\0"
                s.sendall(_struct.pack("!I", len(body) + 4) + body)
                s.settimeout(5)
                try:  # the pool exists once the login is answered (the client then waits)
                    s.recv(4096)
                except OSError:
                    pass
    except BaseException:
        p.stop()
        raise
    return p


def test_large_metrics_stream_in_slices_and_parse(pgwarden_bin, pg):
    """With hundreds of pools /metrics is several MB: it goes out in slices (chunked), and the
    whole still parses, with every pool's samples."""
    p = start_many_pools_pooler(pgwarden_bin, pg, 300)
    try:
        status, headers, text = http_get(p.http_port, "/metrics")
        assert status == 200
        assert headers.get("Transfer-Encoding") == "chunked", headers
        assert len(text) > 1_000_000
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        dbs = {s.labels["database"] for s in fams["pgwarden_pool_clients_waiting"].samples}
        assert {f"db{i}" for i in range(300)} <= dbs
        # A scraper that leaves in the middle of the stream costs nothing (ASan: no leak).
        quitter = socket.create_connection(("127.0.0.1", p.http_port), timeout=5)
        quitter.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        quitter.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert quitter.recv(1024).startswith(b"HTTP/1.1 200")
        quitter.close()
        time.sleep(1)
        # Still serving while and after it streams.
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            assert c.execute("SELECT 1").fetchone()[0] == 1
    finally:
        p.stop()


def test_peer_sending_while_its_reply_streams_is_not_buffered(pgwarden_bin, pg):
    """evhttp keeps reading a connection while it writes the reply (to notice a close) with
    nothing consuming what arrives. A peer that opened an event stream (or a large /metrics)
    and then sent without pause grew the pooler's input buffer by about 200 MB a second, up to
    the connection's 30 s lifetime. The read side now stops at a bound, so the peer's sends
    block in the kernel."""
    p = start_http_pooler(pgwarden_bin, pg)
    try:
        pid = p.proc.pid
        rss0 = rss_kb(pid)
        s = socket.create_connection(("127.0.0.1", p.http_port), timeout=5)
        s.sendall(b"GET /api/v1/events?follow HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(200).startswith(b"HTTP/1.1 200")
        s.settimeout(3)
        junk = b"x" * (1 << 20)
        sent = 0
        try:
            while sent < (256 << 20):
                s.sendall(junk)
                sent += len(junk)
        except OSError:
            pass  # blocked: the pooler stopped reading
        rss1 = rss_kb(pid)
        s.close()
        print(f"sent {sent >> 20} MB; RSS {rss0} -> {rss1} kB")
        assert sent < (64 << 20), f"the pooler read {sent >> 20} MB it had no use for"
        with open(f"/proc/{pid}/maps") as f:
            sanitized = "libasan" in f.read()
        if not sanitized:
            assert rss1 - rss0 < 32 * 1024, f"RSS grew from {rss0} kB to {rss1} kB"
        assert p.alive(), p.log()
        assert http_get(p.http_port, "/healthz")[0] == 200
        # The bound is above the largest request: a body at the limit still reads whole,
        # also behind a pipelined request on the same connection.
        body = ('{"pad": "' + "x" * 65000 + '"}').encode()
        post = (b"POST /api/v1/kill-idle HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        s = socket.create_connection(("127.0.0.1", p.http_port), timeout=10)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + post +
                  b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        replies = b""
        while True:
            got = s.recv(65536)
            if not got:
                break
            replies += got
        s.close()
        assert replies.count(b"HTTP/1.1 200 OK") == 3, replies[:2000]
        assert b'"action":"kill-idle"' in replies
    finally:
        p.stop()


def test_scrapers_that_do_not_read_hold_one_slice_each(pgwarden_bin, pg):
    """A large /metrics is rendered a slice at a time, and the next slice only once the last
    one is out: before, every slice was rendered in the next loop turn whether or not the
    peer read, so each scraper that never reads held the whole exposition (about 9 MB with
    1,000 pools; 15 of them took 105 MB) until its connection timed out. (15: one address
    may keep 16 HTTP connections open.) Scrapes that overlap also share one copy of the pools'
    values: each took its own (about 1.1 MB with 1,000 pools; 15 stalled scrapers grew RSS by
    24 MB, now by about 7)."""
    p = start_many_pools_pooler(pgwarden_bin, pg, 1000)
    try:
        pid = p.proc.pid
        status, _, text = http_get(p.http_port, "/metrics")
        assert status == 200 and len(text) > 5_000_000, len(text)
        rss0 = rss_kb(pid)
        stalled = []
        for _ in range(15):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", p.http_port))
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            stalled.append(s)
        time.sleep(3)
        rss1 = rss_kb(pid)
        print(f"RSS {rss0} -> {rss1} kB")
        with open(f"/proc/{pid}/maps") as f:
            sanitized = "libasan" in f.read()
        if not sanitized:  # ASan keeps freed memory in quarantine
            assert rss1 - rss0 < 15 * 1024, f"RSS grew from {rss0} kB to {rss1} kB"
        # A paced scrape still completes, whole, for a peer that reads; HEAD ends too.
        status, _, again = http_get(p.http_port, "/metrics")
        assert status == 200 and len(again) > 5_000_000
        fams = {f.name: f for f in text_string_to_metric_families(again)}
        assert len(fams["pgwarden_pool_clients_waiting"].samples) >= 1000
        status, _, empty = http_get(p.http_port, "/metrics", method="HEAD")
        assert status == 200 and empty == ""
        for s in stalled:
            s.close()
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            assert c.execute("SELECT 1").fetchone()[0] == 1
    finally:
        p.stop()


def test_names_that_are_not_utf8_keep_metrics_and_api_readable(pgwarden_bin, pg):
    """A client picks its database name (through "*") and its application_name, as bytes.
    One invalid UTF-8 byte in either went out as is: /metrics then failed Prometheus' parser
    (one invalid label value fails the whole scrape), and /api/v1/monitor, kill-idle,
    full-analysis and events (which keeps it for its 1,000 events) failed every JSON parser,
    as did JSON log lines quoting it. Such bytes now go out as U+FFFD; an application_name
    is cleaned at login as PostgreSQL cleans it (\\xNN for each byte outside printable
    ASCII), so it reaches the API and the logs in that form."""
    import json
    import struct as _struct
    p = start_http_pooler(pgwarden_bin, pg, settings={"log_format": "json"},
                          databases={"*": f"host={pg.socket_dir} port={pg.port}"},
                          manager={"idle_timeout": "1s", "max_kill_percentage": "100%"})
    socks = []
    try:
        for db, app in ((b"postgres", b"app\xff\xfe"), (b"no\xc3such\xe2\x82db", b"other")):
            s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
            body = (_struct.pack("!I", 196608) + b"user\0postgres\0database\0" + db +
                    b"\0application_name\0" + app + b"\0\0")
            s.sendall(_struct.pack("!I", len(body) + 4) + body)
            s.recv(4096)
            socks.append(s)
        time.sleep(2.5)  # the manager's runs see the idle client
        conn = http.client.HTTPConnection("127.0.0.1", p.http_port, timeout=10)
        conn.request("GET", "/metrics")
        raw = conn.getresponse().read()
        fams = {f.name: f for f in text_string_to_metric_families(raw.decode("utf-8"))}
        dbs = {s.labels["database"] for s in fams["pgwarden_pool_clients_waiting"].samples}
        assert "no\ufffdsuch\ufffd\ufffddb" in dbs, dbs
        for path in ("/api/v1/monitor", "/api/v1/kill-idle", "/api/v1/full-analysis",
                     "/api/v1/events"):
            conn.request("GET", path)
            resp = conn.getresponse()
            raw = resp.read()
            doc = json.loads(raw)  # strict UTF-8
            assert resp.status == 200, doc
            assert "app\\\\xff\\\\xfe" in raw.decode("utf-8"), (path, doc)
        conn.close()
        # The event stream too (the kill-idle dry run above recorded one for the client).
        s = socket.create_connection(("127.0.0.1", p.http_port), timeout=5)
        s.sendall(b"GET /api/v1/events?follow HTTP/1.1\r\nHost: x\r\n\r\n")
        stream = b""
        while b"app" not in stream:
            stream += s.recv(65536)
        s.close()
        stream.decode("utf-8")
        # JSON log lines quote the name too (kill_idle_planned names the application).
        with open(p.logfile, "rb") as f:
            lines = [json.loads(line) for line in f.read().splitlines()]
        assert any("app\\xff\\xfe" in line["msg"] for line in lines)
    finally:
        for s in socks:
            s.close()
        p.stop()


def test_one_address_cannot_take_every_http_connection(pgwarden_bin, pg):
    """The 64-connection cap kept HTTP from starving the pooler of descriptors, but one peer
    could hold all 64 slots (each for the 30 s lifetime, then reconnect): /healthz, which needs
    no token and is what a liveness probe calls, then went unanswered and the orchestrator
    restarted a healthy pooler. One address now keeps at most 16 connections open; more from
    it are closed at once, so other addresses still get in."""
    p = start_http_pooler(pgwarden_bin, pg)
    hogs = []
    try:
        for _ in range(100):
            s = socket.socket()
            s.bind(("127.0.0.2", 0))
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", p.http_port))
            hogs.append(s)
        time.sleep(1)
        for s in hogs:  # a first header byte: a request under way on each
            try:
                s.send(b"G")
            except OSError:
                pass
        time.sleep(0.5)
        status, _, body = http_get(p.http_port, "/healthz")
        assert status == 200, body
        open_hogs = 0
        for s in hogs:
            try:
                open_hogs += 0 if s.recv(1) == b"" else 1  # b"": closed by the pooler
            except BlockingIOError:
                open_hogs += 1  # still open, nothing to read
            except OSError:
                pass
        assert open_hogs <= 16, open_hogs
        assert p.alive()
    finally:
        for s in hogs:
            s.close()
        p.stop()

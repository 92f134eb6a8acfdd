"""TLS through `pgwarden serve` on both sides: clients (psql, psycopg, pgbench, raw sockets,
Python's ssl for PostgreSQL 17's direct TLS) against each client_tls_sslmode, pgwarden against
a PostgreSQL with ssl = on (the pg_tls fixture) for each server_tls_sslmode, certificates that
must fail verify-full, hostile or plain servers, and reloads that change certificates."""
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import time

import psycopg
import pytest

from serve_helpers import (FakeServer, Pooler, be_msg, error_fields, raw_connect, read_messages,
                           rss_kb, startup_packet, wait_for)

SSL_REQUEST = struct.pack("!II", 8, 80877103)


def tls_pooler(pgwarden_bin, pg, client_mode="require", server_mode="verify-full",
               host="localhost", settings=None, databases=None, **kw):
    """A pooler with TLS for clients (pg's server.crt, which names localhost and 127.0.0.1)
    and to pg over TCP (verified against pg's CA); not started."""
    conf = {"client_tls_sslmode": client_mode,
            "client_tls_key_file": pg.cert("server.key"),
            "client_tls_cert_file": pg.cert("server.crt"),
            "client_tls_ca_file": pg.cert("ca.crt"),
            "server_tls_sslmode": server_mode,
            "server_tls_ca_file": pg.cert("ca.crt")}
    conf.update(settings or {})
    if databases is None:
        databases = {"postgres": f"host={host} port={pg.port} dbname=postgres",
                     "appdb": f"host={host} port={pg.port} dbname=appdb"}
    return Pooler(pgwarden_bin, pg, settings=conf, databases=databases, **kw)


def client_dsn(p, pg, sslmode="verify-full", dbname="postgres", user="postgres", **extra):
    """A libpq connection string to the pooler over TCP with the given sslmode, trusting pg's
    CA."""
    parts = [f"host=localhost port={p.port} user={user} dbname={dbname}",
             f"sslmode={sslmode}", f"sslrootcert={pg.cert('ca.crt')}", "connect_timeout=10"]
    parts += [f"{k}={v}" for k, v in extra.items()]
    return " ".join(parts)


def console(p, sql):
    """Rows of an admin console command, over the pooler's unix socket (peer admin)."""
    with psycopg.connect(host=p.dir, port=p.port, user="pgbouncer", dbname="pgbouncer",
                         autocommit=True) as c:
        res = c.pgconn.exec_(sql.encode())
        assert res.status in (psycopg.pq.ExecStatus.TUPLES_OK,
                              psycopg.pq.ExecStatus.COMMAND_OK), res.error_message
        names = [res.fname(i).decode() for i in range(res.nfields)]
        return [{names[i]: (res.get_value(r, i) or b"").decode() for i in range(res.nfields)}
                for r in range(res.ntuples)]


def ssl_of_pooler_backends(pg):
    """(with TLS, without) among PostgreSQL's client backends connected over TCP."""
    out = pg.psql("SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) "
                  "FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
                  "WHERE a.backend_type = 'client backend' AND a.client_addr IS NOT NULL")
    with_tls, without = out.split("|")
    return int(with_tls), int(without)


def make_server_cert(pg, name, cn):
    """A server certificate for the DNS name cn only, signed by pg's CA, in pg's certs dir
    (readable by the server); returns (crt, key)."""
    crt, key = pg.cert(f"{name}.crt"), pg.cert(f"{name}.key")
    if os.path.exists(crt):
        return crt, key
    work = tempfile.mkdtemp(prefix="pgwarden-cert-")
    try:
        ext = os.path.join(work, "ext")
        with open(ext, "w") as f:
            f.write("basicConstraints = critical, CA:FALSE\n"
                    "keyUsage = critical, digitalSignature, keyEncipherment\n"
                    f"extendedKeyUsage = serverAuth\nsubjectAltName = DNS:{cn}\n")
        run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
        run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-out", key)
        run("openssl", "req", "-new", "-key", key, "-subj", f"/CN={cn}",
            "-out", os.path.join(work, "csr"))
        run("openssl", "x509", "-req", "-in", os.path.join(work, "csr"), "-CA", pg.cert("ca.crt"),
            "-CAkey", pg.cert("ca.key"), "-CAserial", os.path.join(work, "srl"),
            "-CAcreateserial", "-days", "30", "-sha256", "-extfile", ext, "-out", crt)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    os.chmod(key, 0o600)
    if pg.run_as:
        import pwd
        pw = pwd.getpwnam(pg.run_as)
        for path in (crt, key):
            os.chown(path, pw.pw_uid, pw.pw_gid)
    return crt, key


def serves_tls(dsn):
    """True when a client connects with dsn over TLS and gets a query answered."""
    with psycopg.connect(dsn) as c:
        return c.pgconn.ssl_in_use and c.execute("SELECT 1").fetchone()[0] == 1


def connect_error(dsn):
    """The error message of a connection attempt that must fail."""
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(dsn).close()
    return str(e.value)


def raw_recv_all(s, timeout=5.0):
    """Everything the peer sends until it closes (or the timeout)."""
    s.settimeout(timeout)
    data = b""
    end = time.time() + timeout
    while time.time() < end:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        except (ConnectionResetError, ssl.SSLError, OSError):
            break
        if not chunk:
            return data
        data += chunk
    return data


# ---- 1. the usual clients, TLS on both sides ----

def test_psql_and_psycopg_tls_on_both_sides(pgwarden_bin, pg_tls):
    p = tls_pooler(pgwarden_bin, pg_tls).start()
    try:
        env = dict(os.environ, PGSSLMODE="verify-full", PGSSLROOTCERT=pg_tls.cert("ca.crt"))
        out = subprocess.run([pg_tls.bin("psql"), "-X", "-A", "-t", "-h", "localhost",
                              "-p", str(p.port), "-U", "postgres", "-d", "postgres", "-c",
                              "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"],
                             env=env, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "t", out.stdout  # pgwarden's backend uses TLS
        with psycopg.connect(client_dsn(p, pg_tls), autocommit=True) as c:
            assert c.pgconn.ssl_in_use
            assert c.execute("SELECT sum(g) FROM generate_series(1, 1000) g").fetchone()[0] \
                == 500500
            # A result larger than pkt_buf and than one TLS record, both ways.
            big = "x" * 200000
            assert c.execute("SELECT length(%s::text)", (big,)).fetchone()[0] == 200000
            rows = c.execute("SELECT repeat('y', 1000) FROM generate_series(1, 500)").fetchall()
            assert len(rows) == 500 and rows[0][0] == "y" * 1000
            clients = [r for r in console(p, "SHOW CLIENTS") if r["database"] == "postgres"]
            assert clients and all(r["tls"].startswith("TLSv1.3/") for r in clients), clients
            servers = console(p, "SHOW SERVERS")
            assert servers and all(r["tls"].startswith("TLSv1.3/") for r in servers), servers
        # The login line names the TLS version and cipher, as PgBouncer's does.
        assert re.search(r"login db=postgres user=postgres tls=TLSv1\.3/TLS_\w+", p.log()), \
            p.log()
        with_tls, without = ssl_of_pooler_backends(pg_tls)
        assert with_tls >= 1 and without == 0, (with_tls, without)
        # The console's own connection (unix socket) is plain: its tls column is empty.
        me = [r for r in console(p, "SHOW CLIENTS") if r["database"] == "pgbouncer"]
        assert me and all(r["tls"] == "" for r in me), me
    finally:
        p.stop()


def test_pgbench_through_tls_on_both_sides(pgwarden_bin, pg_tls):
    pg = pg_tls.pgbench_init()
    p = tls_pooler(pgwarden_bin, pg, settings={"default_pool_size": "4"}).start()
    try:
        env = {"PATH": "/usr/bin:/bin", "PGSSLMODE": "verify-full",
               "PGSSLROOTCERT": pg.cert("ca.crt")}
        out = subprocess.run([pg.bin("pgbench"), "-n", "-c", "8", "-j", "2", "-t", "200",
                              "-h", "localhost", "-p", str(p.port), "-U", "postgres",
                              "postgres"], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "number of transactions actually processed: 1600/1600" in out.stdout, out.stdout
        # Every transaction's effects are there, once: the balances add up.
        check = pg.psql("SELECT (SELECT count(*) FROM pgbench_history), "
                        "(SELECT sum(abalance) FROM pgbench_accounts) = "
                        "(SELECT sum(delta) FROM pgbench_history), "
                        "(SELECT sum(tbalance) FROM pgbench_tellers) = "
                        "(SELECT sum(delta) FROM pgbench_history)")
        assert check == "1600|t|t", check
        servers = console(p, "SHOW SERVERS")
        assert servers and all(r["tls"] for r in servers), servers
        assert ssl_of_pooler_backends(pg)[1] == 0
    finally:
        p.stop()


# ---- 2. each client sslmode against each client_tls_sslmode ----

# libpq sslmode -> "tls", "plain" or "fail", per client_tls_sslmode.
CLIENT_MODES = {
    "disable": {"disable": "plain", "allow": "plain", "prefer": "plain", "require": "fail",
                "verify-ca": "fail", "verify-full": "fail"},
    "prefer": {"disable": "plain", "allow": "plain", "prefer": "tls", "require": "tls",
               "verify-ca": "tls", "verify-full": "tls"},
    # libpq's allow tries plain first and TLS after "SSL required".
    "require": {"disable": "fail", "allow": "tls", "prefer": "tls", "require": "tls",
                "verify-ca": "tls", "verify-full": "tls"},
}


@pytest.mark.parametrize("pooler_mode", list(CLIENT_MODES))
def test_client_sslmodes(pgwarden_bin, pg_tls, pooler_mode):
    p = tls_pooler(pgwarden_bin, pg_tls, client_mode=pooler_mode).start()
    try:
        for client_mode, want in CLIENT_MODES[pooler_mode].items():
            dsn = client_dsn(p, pg_tls, client_mode)
            if want == "fail":
                msg = connect_error(dsn)
                expected = "SSL required" if client_mode == "disable" else "does not support SSL"
                assert expected in msg, (client_mode, msg)
                continue
            with psycopg.connect(dsn) as c:
                assert c.execute("SELECT 1").fetchone()[0] == 1
                assert c.pgconn.ssl_in_use == (want == "tls"), (pooler_mode, client_mode)
        if pooler_mode == "require":
            assert "SSL required" in p.log()
            # Unix socket clients need no TLS, and an SSLRequest there is answered N.
            with psycopg.connect(host=p.dir, port=p.port, user="postgres",
                                 dbname="postgres") as c:
                assert c.execute("SELECT 1").fetchone()[0] == 1
            u = socket.socket(socket.AF_UNIX)
            u.connect(os.path.join(p.dir, f".s.PGSQL.{p.port}"))
            u.sendall(SSL_REQUEST)
            assert u.recv(1) == b"N"
            u.close()
    finally:
        p.stop()


@pytest.mark.parametrize("pooler_mode", ["verify-ca", "verify-full"])
def test_client_certificate_required(pgwarden_bin, pg_tls, pooler_mode):
    p = tls_pooler(pgwarden_bin, pg_tls, client_mode=pooler_mode).start()
    try:
        assert serves_tls(client_dsn(p, pg_tls, "verify-full", sslcert=pg_tls.cert("client.crt"),
                                     sslkey=pg_tls.cert("client.key")))
        connect_error(client_dsn(p, pg_tls, "require"))
        wait_for(lambda: "TLS handshake failed" in p.log(), what="the refusal logged")
        # The failure with its cause, then the "closing because" line.
        lines = [ln for ln in p.log().splitlines() if "TLS handshake failed" in ln]
        assert any("127.0.0.1:" in ln and "certificate" in ln for ln in lines), lines
    finally:
        p.stop()


# ---- 3. pgwarden to PostgreSQL ----

def test_server_sslmodes_against_a_tls_server(pgwarden_bin, pg_tls):
    """prefer and require use TLS (certificate not checked: any CA file is fine); disable
    stays plain; verify-ca accepts the right CA."""
    for mode, ca, want in [("disable", "", False), ("prefer", "", True),
                           ("require", "", True), ("verify-ca", pg_tls.cert("ca.crt"), True)]:
        p = tls_pooler(pgwarden_bin, pg_tls, client_mode="disable", server_mode=mode,
                       settings={"server_tls_ca_file": ca}).start()
        try:
            with psycopg.connect(p.dsn(), autocommit=True) as c:
                assert c.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                                 ).fetchone()[0] is want, mode
            servers = console(p, "SHOW SERVERS")
            assert servers and all(bool(r["tls"]) == want for r in servers), (mode, servers)
        finally:
            p.stop()


@pytest.mark.parametrize("case", ["wrong-host-name", "untrusted", "expired"])
def test_server_verify_full_failures(pgwarden_bin, pg_tls, case):
    pg = pg_tls
    if case == "wrong-host-name":
        crt, key = make_server_cert(pg, "otherhost", "db.example.invalid")
        reason = "host name mismatch"
    elif case == "untrusted":
        crt, key = pg.cert("untrusted.crt"), pg.cert("untrusted.key")
        reason = "self-signed certificate"
    else:
        crt, key = pg.cert("expired.crt"), pg.cert("expired.key")
        reason = "certificate has expired"
    dbs = {"postgres": f"host=localhost port={pg.port} dbname=postgres",
           "other": f"host={pg.socket_dir} port={pg.port} dbname=postgres"}
    p = tls_pooler(pgwarden_bin, pg, client_mode="disable", databases=dbs).start()
    pg.use_certificate(crt, key)
    try:
        msg = connect_error(p.dsn())
        assert "TLS handshake with the server failed" in msg and reason in msg, msg
        log = p.log()
        assert "server login failed" in log and reason in log, log
        # Other pools are unaffected.
        with psycopg.connect(p.dsn(dbname="other")) as c:
            assert c.execute("SELECT 1").fetchone()[0] == 1
    finally:
        pg.use_certificate(pg.cert("server.crt"), pg.cert("server.key"))
        p.stop()


class SslAnswerServer(FakeServer):
    """Answers the pooler's first packet (an SSLRequest) with fixed bytes, then records what
    the pooler sends next (b"" when it hangs up)."""

    def __init__(self, answer):
        self.answer = answer
        self.first = []
        self.after = []
        super().__init__()

    def serve(self, conn):
        conn.settimeout(5)
        self.first.append(self.read_exact(conn, 8))
        conn.sendall(self.answer)
        try:
            self.after.append(conn.recv(65536))
        except socket.timeout:
            self.after.append(b"<silence>")


@pytest.mark.parametrize("case", ["S-then-bytes", "error-response", "N-under-require"])
def test_hostile_answers_to_ssl_request(pgwarden_bin, pg_tls, case):
    """Whatever the server answers besides a clean 'S' (or 'N' where plain is allowed) ends
    the login: no ClientHello after injected bytes, no StartupMessage in the clear, and none
    of the server's bytes reach the client."""
    answers = {
        # A man in the middle's bytes queued behind the 'S' (CVE-2021-23222 class).
        "S-then-bytes": b"S" + be_msg(b"R", struct.pack("!I", 0)),
        "error-response": be_msg(b"E", b"SFATAL\0C28000\0MEVIL-SECRET-TEXT\0\0"),
        "N-under-require": b"N",
    }
    expected = {"S-then-bytes": "unencrypted data after",
                "error-response": "unexpected answer to the SSL request",
                "N-under-require": "server does not accept TLS (server_tls_sslmode = require)"}
    evil = SslAnswerServer(answers[case])
    dbs = {"evil": f"host=127.0.0.1 port={evil.port} dbname=x",
           "good": f"host=localhost port={pg_tls.port} dbname=postgres"}
    mode = "require" if case == "N-under-require" else "prefer"
    p = tls_pooler(pgwarden_bin, pg_tls, client_mode="disable", server_mode=mode,
                   databases=dbs, settings={"server_tls_ca_file": ""}).start()
    try:
        msg = connect_error(p.dsn(dbname="evil"))
        assert expected[case] in msg, msg
        assert "EVIL" not in msg and "EVIL" not in p.log(), msg
        wait_for(lambda: evil.after, what="the fake server's connection to end")
        assert evil.first[0] == SSL_REQUEST, evil.first
        assert evil.after == [b""], evil.after  # hung up: nothing sent after the answer
        with psycopg.connect(p.dsn(dbname="good")) as c:
            assert c.execute("SELECT 1").fetchone()[0] == 1
    finally:
        p.stop()
        evil.stop()


def test_server_require_against_a_plain_server(pgwarden_bin, pg):
    """The plain PostgreSQL fixture answers N: require fails with a message, prefer goes on in
    the clear."""
    from pgfixture import free_port
    dbs = {"postgres": f"host=127.0.0.1 port={pg.port} dbname=postgres"}
    http = free_port()
    p = Pooler(pgwarden_bin, pg, databases=dbs,
               settings={"server_tls_sslmode": "require", "http_listen": str(http)}).start()
    try:
        msg = connect_error(p.dsn())
        assert "server does not accept TLS" in msg, msg
        assert "server does not accept TLS" in p.log()
        # Counted on the server side as a protocol failure, nothing else.
        counts = tls_counts(http)
        assert counts[(FAIL, "server", "protocol")] >= 1, counts
        assert not any(v for k, v in counts.items() if k != (FAIL, "server", "protocol")), counts
    finally:
        p.stop()
    p = Pooler(pgwarden_bin, pg, databases=dbs, settings={"server_tls_sslmode": "prefer"}).start()
    try:
        with psycopg.connect(p.dsn()) as c:
            assert c.execute("SELECT 1").fetchone()[0] == 1
    finally:
        p.stop()


# ---- 4. hostile clients ----

def test_bytes_after_ssl_request_close_the_connection(pgwarden_bin, pg_tls):
    p = tls_pooler(pgwarden_bin, pg_tls).start()
    try:
        s = raw_connect(p.port)
        s.sendall(SSL_REQUEST + startup_packet("postgres", "postgres"))
        data = raw_recv_all(s)
        s.close()
        assert not data.startswith(b"S"), data  # no TLS for injected bytes
        msgs = read_messages_from(data)
        assert msgs and msgs[0][0] == b"E", data
        assert "unexpected data after encryption request" in error_fields(msgs[0][1])["M"]
        # The same request alone is answered 'S'.
        s = raw_connect(p.port)
        s.sendall(SSL_REQUEST)
        assert s.recv(1) == b"S"
        s.close()
        assert serves_tls(client_dsn(p, pg_tls))
    finally:
        p.stop()


def read_messages_from(data):
    msgs = []
    while len(data) >= 5:
        (ln,) = struct.unpack("!I", data[1:5])
        msgs.append((data[0:1], data[5:1 + ln]))
        data = data[1 + ln:]
    return msgs


@pytest.mark.parametrize("how", ["direct", "after-S"])
def test_malformed_client_hello_closes_cleanly(pgwarden_bin, pg_tls, how):
    p = tls_pooler(pgwarden_bin, pg_tls).start()
    try:
        s = raw_connect(p.port)
        if how == "after-S":
            s.sendall(SSL_REQUEST)
            assert s.recv(1) == b"S"
        # A handshake record whose body is no ClientHello.
        s.sendall(b"\x16\x03\x01\x00\x08" + b"\x01\x00\x00\x04junk")
        data = raw_recv_all(s)
        s.close()
        # At most a TLS alert record, never a plaintext ErrorResponse.
        assert not data or data[0] == 0x15, data
        wait_for(lambda: "TLS handshake failed" in p.log(), what="the failure logged")
        assert p.alive()
        assert serves_tls(client_dsn(p, pg_tls))
    finally:
        p.stop()


def test_client_login_timeout_covers_the_handshake(pgwarden_bin, pg_tls):
    p = tls_pooler(pgwarden_bin, pg_tls, settings={"client_login_timeout": "1"}).start()
    try:
        s = raw_connect(p.port)
        s.sendall(SSL_REQUEST)
        assert s.recv(1) == b"S"
        t0 = time.time()
        data = raw_recv_all(s, timeout=10)  # no ClientHello: the handshake never ends
        s.close()
        assert data == b"", data  # closed, and nothing sent in the clear
        assert time.time() - t0 < 5
    finally:
        p.stop()


def direct_tls_socket(p, pg, alpn):
    ctx = ssl.create_default_context(cafile=pg.cert("ca.crt"))
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx.wrap_socket(raw_connect(p.port), server_hostname="localhost")


def test_direct_tls_needs_alpn(pgwarden_bin, pg_tls):
    """PostgreSQL 17's sslnegotiation=direct: a ClientHello instead of an SSLRequest."""
    p = tls_pooler(pgwarden_bin, pg_tls).start()
    try:
        s = direct_tls_socket(p, pg_tls, ["postgresql"])
        assert s.selected_alpn_protocol() == "postgresql"
        s.sendall(startup_packet("postgres", "postgres"))
        msgs = read_messages(s, timeout=10, until=b"Z")
        assert msgs and msgs[-1][0] == b"Z", msgs
        s.close()
        # Without ALPN the connection is closed after the handshake, unanswered.
        try:
            s = direct_tls_socket(p, pg_tls, None)
            s.sendall(startup_packet("postgres", "postgres"))
            assert read_messages(s, timeout=5) == []
            s.close()
        except (ssl.SSLError, OSError):
            pass
        wait_for(lambda: "direct TLS refused" in p.log(), what="the refusal logged")
    finally:
        p.stop()


# ---- 5. reloads ----

def reload_with(p, how="RELOAD", **settings):
    """Writes settings into p's file and reloads (the console's RELOAD, or SIGHUP)."""
    p.settings.update(settings)
    p.write_config()
    if how == "SIGHUP":
        p.signal(signal.SIGHUP)
    else:
        console(p, "RELOAD")

def console_set(p, sql):
    """Runs a SET on the console; returns the NOTICE messages it answered with (a refused SET
    raises)."""
    notices = []
    with psycopg.connect(host=p.dir, port=p.port, user="pgbouncer", dbname="pgbouncer",
                         autocommit=True) as c:
        c.add_notice_handler(lambda d: notices.append(f"{d.message_primary}: {d.message_detail}"))
        res = c.pgconn.exec_(sql.encode())
        assert res.status == psycopg.pq.ExecStatus.COMMAND_OK, res.error_message
    return notices


def test_set_rotates_a_certificate_one_key_at_a_time(pgwarden_bin, pg_tls):
    """As in PgBouncer, a TLS key takes its value even when its side's settings do not build
    yet (a new key does not match the old certificate): the SET answers with a NOTICE, TLS goes
    on with the old context, and the SET that completes the pair applies both."""
    p = tls_pooler(pgwarden_bin, pg_tls).start()
    try:
        notices = console_set(p, f"SET client_tls_key_file = '{pg_tls.cert('untrusted.key')}'")
        assert len(notices) == 1 and notices[0].startswith(
            "TLS settings could not be applied, still using old configuration: "
            "client_tls_key_file "), notices
        rows = {r["key"]: r["value"] for r in console(p, "SHOW CONFIG")}
        assert rows["client_tls_key_file"] == pg_tls.cert("untrusted.key")
        assert serves_tls(client_dsn(p, pg_tls))  # still the CA-signed certificate
        assert console_set(p, f"SET client_tls_cert_file = '{pg_tls.cert('untrusted.crt')}'") \
            == []
        msg = connect_error(client_dsn(p, pg_tls))
        assert "certificate verify failed" in msg, msg
        assert serves_tls(client_dsn(p, pg_tls, sslrootcert=pg_tls.cert("untrusted.crt")))
        # A value that is no setting at all is still refused, and nothing changes.
        with psycopg.connect(host=p.dir, port=p.port, user="pgbouncer", dbname="pgbouncer",
                             autocommit=True) as c:
            res = c.pgconn.exec_(b"SET client_tls_sslmode = 'sometimes'")
            assert res.status == psycopg.pq.ExecStatus.FATAL_ERROR
        assert {r["key"]: r["value"] for r in console(p, "SHOW CONFIG")}[
            "client_tls_sslmode"] == "require"
    finally:
        p.stop()


def test_server_tls_change_forgets_a_cached_login_failure(pgwarden_bin, pg_tls):
    """A server login that failed under the old server_tls_* settings does not fast-fail the
    clients that come after the settings changed: the next one tries the new settings at once,
    not after server_login_retry."""
    # PostgreSQL lets tls_only_user in over TLS alone.
    p = tls_pooler(pgwarden_bin, pg_tls, client_mode="disable", server_mode="require",
                   settings={"server_login_retry": "60"},
                   databases={"postgres": f"host=localhost port={pg_tls.port} dbname=postgres "
                                          "user=tls_only_user"}).start()
    try:
        with psycopg.connect(p.dsn()) as c:
            c.execute("SELECT 1")
        console_set(p, "SET server_tls_sslmode = disable")

        def query_error():
            with pytest.raises(psycopg.OperationalError) as e:
                with psycopg.connect(p.dsn()) as c:
                    c.execute("SELECT 1")
            return str(e.value)
        msg = query_error()
        assert "no encryption" in msg, msg
        msg = query_error()
        assert "server login has been failing" in msg, msg
        console_set(p, "SET server_tls_sslmode = require")
        with psycopg.connect(p.dsn()) as c:
            assert c.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                             ).fetchone()[0] is True
    finally:
        p.stop()


def test_reload_with_a_broken_cert_keeps_the_old_context(pgwarden_bin, pg_tls):
    p = tls_pooler(pgwarden_bin, pg_tls).start()
    try:
        # A SET whose file does not build keeps the value, says why, and TLS goes on.
        notices = console_set(p, "SET client_tls_key_file = '/nonexistent/x.key'")
        assert len(notices) == 1 and "client_tls_key_file /nonexistent/x.key" in notices[0], \
            notices
        assert serves_tls(client_dsn(p, pg_tls))
        console_set(p, f"SET client_tls_key_file = '{pg_tls.cert('server.key')}'")
        old = psycopg.connect(client_dsn(p, pg_tls), autocommit=True)
        broken = os.path.join(p.dir, "broken.crt")
        with open(broken, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
        reload_with(p, client_tls_cert_file=broken, max_client_conn="77")  # the rest applies
        log = p.log()
        assert "client_tls_* settings not applied" in log and broken in log, log
        rows = {r["key"]: r["value"] for r in console(p, "SHOW CONFIG")}
        assert rows["max_client_conn"] == "77"
        # New clients still get the old certificate; the old client goes on.
        assert serves_tls(client_dsn(p, pg_tls))
        assert old.execute("SELECT 2").fetchone()[0] == 2
        old.close()
    finally:
        p.stop()


def test_reload_with_a_new_cert_serves_new_clients(pgwarden_bin, pg_tls):
    p = tls_pooler(pgwarden_bin, pg_tls).start()
    try:
        old = psycopg.connect(client_dsn(p, pg_tls), autocommit=True)
        reload_with(p, "SIGHUP", client_tls_cert_file=pg_tls.cert("untrusted.crt"),
                    client_tls_key_file=pg_tls.cert("untrusted.key"))
        wait_for(lambda: "client TLS: require from now on" in p.log(), what="the new context")
        # New clients see the new (self-signed) certificate: the old CA no longer vouches.
        msg = connect_error(client_dsn(p, pg_tls))
        assert "certificate verify failed" in msg, msg
        assert serves_tls(client_dsn(p, pg_tls, sslrootcert=pg_tls.cert("untrusted.crt")))
        # The client connected before the reload stays, on its old session.
        assert old.execute("SELECT 3").fetchone()[0] == 3
        old.close()
    finally:
        p.stop()


def test_reload_of_server_tls_replaces_server_connections(pgwarden_bin, pg_tls):
    p = tls_pooler(pgwarden_bin, pg_tls, client_mode="disable", server_mode="require",
                   settings={"server_tls_ca_file": ""}).start()
    try:
        with psycopg.connect(p.dsn()) as c:
            assert c.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                             ).fetchone()[0] is True
        reload_with(p, server_tls_sslmode="disable")
        assert "server connections are replaced" in p.log()
        with psycopg.connect(p.dsn()) as c:
            assert c.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                             ).fetchone()[0] is False
        servers = console(p, "SHOW SERVERS")
        assert servers and all(r["tls"] == "" for r in servers), servers
    finally:
        p.stop()


def test_bad_tls_file_stops_startup(pgwarden_bin, pg_tls):
    p = tls_pooler(pgwarden_bin, pg_tls,
                   settings={"client_tls_key_file": "/nonexistent/pgwarden.key"})
    try:
        out = subprocess.run([pgwarden_bin, "serve", "-c", p.ini], capture_output=True,
                             text=True, timeout=20)
        assert out.returncode == 3, out
        assert "client_tls_key_file" in out.stderr and "/nonexistent/pgwarden.key" in out.stderr, \
            out.stderr
    finally:
        p.stop()


# ---- 6. /metrics: handshakes and failures by side and reason ----

def tls_counts(http_port):
    """{(metric, side, reason): value} of the pgwarden_tls_* families, from a real parser."""
    from prometheus_client.parser import text_string_to_metric_families
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as r:
        body = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(body):
        for s in fam.samples:
            if s.name.startswith("pgwarden_tls_"):
                out[(s.name, s.labels["side"], s.labels.get("reason", ""))] = s.value
    return out


def tls_delta(before, after):
    """Only the counters that moved, as {(metric, side, reason): increase}."""
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


HS, FAIL = "pgwarden_tls_handshakes_total", "pgwarden_tls_handshake_failures_total"


def test_metrics_count_handshakes_and_failures(pgwarden_bin, pg_tls):
    from pgfixture import free_port
    http = free_port()
    p = tls_pooler(pgwarden_bin, pg_tls, settings={"http_listen": str(http)}).start()
    try:
        c0 = tls_counts(http)
        # Every side and reason is there from the start, at zero.
        assert len(c0) == 2 + 2 * 5 and not any(c0.values()), c0

        def step(action, want):
            before = tls_counts(http)
            action()
            wait_for(lambda: tls_delta(before, tls_counts(http)) == want,
                     what=f"counters {want}, got {tls_delta(before, tls_counts(http))}")

        # A good client: one client handshake; its server login one server handshake.
        step(lambda: serves_tls(client_dsn(p, pg_tls)),
             {(HS, "client", ""): 1, (HS, "server", ""): 1})
        # The client does not trust our certificate: it sends unknown_ca.
        step(lambda: connect_error(client_dsn(p, pg_tls,
                                              sslrootcert=pg_tls.cert("untrusted.crt"))),
             {(FAIL, "client", "certificate"): 1})
        # A plain client where client_tls_sslmode = require.
        step(lambda: connect_error(client_dsn(p, pg_tls, "disable")),
             {(FAIL, "client", "protocol"): 1})

        def garbage_hello():
            s = raw_connect(p.port)
            s.sendall(SSL_REQUEST)
            assert s.recv(1) == b"S"
            s.sendall(b"\x16\x03\x01\x00\x08" + b"\x01\x00\x00\x04junk")
            raw_recv_all(s)
            s.close()
        step(garbage_hello, {(FAIL, "client", "protocol"): 1})

        def hang_up():
            s = raw_connect(p.port)
            s.sendall(SSL_REQUEST)
            assert s.recv(1) == b"S"
            s.close()
        step(hang_up, {(FAIL, "client", "closed"): 1})
        # The JSON API's monitor carries the same numbers (once the manager has run).
        import json
        import urllib.error
        import urllib.request

        def monitor():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http}/api/v1/monitor",
                                            timeout=10) as r:
                    return json.load(r)["data"]["tls"]
            except urllib.error.HTTPError:
                return None  # 503 until the manager's first look
        tls = wait_for(monitor, what="/api/v1/monitor")
        assert tls["client"] == {"handshakes": 1, "failures": {
            "protocol": 2, "certificate": 1, "cipher": 0, "closed": 1, "other": 0}}, tls
        assert tls["server"]["handshakes"] == 1, tls
        # SHOW CLIENTS' tls column as PgBouncer's: version/cipher[/key exchange].
        with psycopg.connect(client_dsn(p, pg_tls)) as c:
            c.execute("SELECT 1")
            rows = [r for r in console(p, "SHOW CLIENTS") if r["tls"]]
            assert rows and all(
                re.fullmatch(r"TLSv1\.[23]/[A-Z0-9_-]+(/ECDH=[A-Za-z0-9_-]+)?", r["tls"])
                for r in rows), rows
    finally:
        p.stop()

    # The server side: PostgreSQL's certificate is not signed by the CA we trust.
    http = free_port()
    p = tls_pooler(pgwarden_bin, pg_tls, client_mode="disable",
                   settings={"http_listen": str(http),
                             "server_tls_ca_file": pg_tls.cert("untrusted.crt")}).start()
    try:
        before = tls_counts(http)
        connect_error(p.dsn())
        wait_for(lambda: tls_delta(before, tls_counts(http)).get((FAIL, "server", "certificate"),
                                                                 0) >= 1,
                 what="a server certificate failure counted")
        assert not tls_delta(before, tls_counts(http)).get((HS, "server", ""))
    finally:
        p.stop()


@pytest.mark.parametrize("groups, want", [("ffdhe2048", "/DH=2048"), ("prime256v1", "/ECDH=prime256v1")])
def test_tls_column_names_the_key_exchange_as_pgbouncer(pgwarden_bin, pg_tls, groups, want):
    """SHOW CLIENTS' tls column ends with the key exchange in PgBouncer's form: a curve by
    name, finite-field Diffie-Hellman by its size in bits."""
    p = tls_pooler(pgwarden_bin, pg_tls, settings={"client_tls_ecdhcurve": groups}).start()
    try:
        with psycopg.connect(client_dsn(p, pg_tls)) as c:
            c.execute("SELECT 1")
            rows = [r for r in console(p, "SHOW CLIENTS") if r["tls"]]
            assert rows and all(r["tls"].endswith(want) for r in rows), rows
    finally:
        p.stop()
# Bytes of RSS per idle TLS client with the live manager on (after its runs): OpenSSL's
# connection state (the SSL object 7.6 kB, two cipher contexts, the session: some 12 kB of
# the 15), the pooler's own client, and the manager's two ~144-byte records (15.7 kB
# measured). Before the manager's records were made compact and the scaler stopped copying
# them, and before the janitor returned the holes the handshakes leave in the heap, it was
# 16.9 kB with 1,000 clients opened one by one (18 kB with 2,000 opened 100 at a time).
IDLE_TLS_BUDGET = 16.4 * 1024


def test_idle_tls_clients_memory(pgwarden_bin, pg_tls):
    if "ASAN_OPTIONS" in os.environ:
        pytest.skip("RSS is meaningless under AddressSanitizer")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    n = 1000
    if hard < 2 * n + 100:
        n = max(100, (hard - 200) // 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4 * n + 200), hard))
    p = tls_pooler(pgwarden_bin, pg_tls, server_mode="require", pool_mode="transaction",
                   settings={"max_client_conn": str(n + 50), "log_connections": "0",
                             "log_disconnections": "0"}).start()
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE

    def login():
        s = raw_connect(p.port)
        s.sendall(SSL_REQUEST)
        assert s.recv(1) == b"S"
        t = ctx.wrap_socket(s)
        t.sendall(startup_packet("postgres", "postgres"))
        assert read_messages(t, until=b"Z")[-1][0] == b"Z"
        return t

    socks = []
    try:
        warm = [login() for _ in range(20)]
        # Every measurement comes after the manager's run (every second) and the janitor's
        # (every half second), so their share is counted whole.
        time.sleep(2.5)
        before = rss_kb(p.proc.pid)
        for _ in range(n):
            socks.append(login())
        time.sleep(2.5)
        after = rss_kb(p.proc.pid)
        per_client = (after - before) * 1024 / n
        for s in socks:
            s.close()
        socks = []
        time.sleep(2.5)
        closed = rss_kb(p.proc.pid)
        print(f"RSS {before} kB -> {after} kB with {n} idle TLS clients "
              f"({per_client:.0f} B/client), {closed} kB once they left")
        assert per_client < IDLE_TLS_BUDGET, per_client
        # What the clients freed goes back to the kernel (the janitor's heap trim), not only
        # to malloc's free lists: most of the growth is gone.
        assert closed - before < 0.5 * (after - before), (before, after, closed)
        assert p.alive()
        for s in warm:
            s.close()
    finally:
        for s in socks:
            s.close()
        p.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

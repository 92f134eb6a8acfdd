"""SCRAM derivation caches seen from outside: a plaintext auth_file user keeps one salt (so a
repeated login runs no PBKDF2) and its server-first looks like an unknown user's; a cleartext
password (auth_type = plain) checked against a SCRAM secret runs PBKDF2 once, not at every
login, and a wrong or outdated password still fails; a hostile server asking for too many
iterations gets a clear refusal instead of stalling the pooler."""
import base64
import hashlib
import hmac
import http.client
import os
import re
import signal
import struct

import psycopg
import pytest

from pgfixture import free_port
from serve_helpers import (FakeServer, PASSWORDS, Pooler, raw_connect, read_messages,
                           startup_packet, wait_for)

AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11


def auth_code(body):
    return struct.unpack("!I", body[:4])[0]


def server_first_for(port, user):
    """Starts a SCRAM exchange as user and returns the server-first message's attributes."""
    s = raw_connect(port)
    try:
        s.sendall(startup_packet(user, "appdb"))
        msgs = read_messages(s, until=b"R")
        assert msgs and msgs[-1][0] == b"R" and auth_code(msgs[-1][1]) == AUTH_SASL, msgs
        client_first = b"n,,n=,r=fyko+d2lbbFgONRv9qkxdawL"
        body = b"SCRAM-SHA-256\0" + struct.pack("!i", len(client_first)) + client_first
        s.sendall(b"p" + struct.pack("!I", len(body) + 4) + body)
        msgs = read_messages(s, until=b"R")
        assert msgs and msgs[-1][0] == b"R", msgs
        body = msgs[-1][1]
        assert auth_code(body) == AUTH_SASL_CONTINUE, msgs
        return dict(part.split("=", 1) for part in body[4:].decode().split(","))
    finally:
        s.close()


def test_plaintext_salt_stable_and_like_unknown_user(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, auth_type="scram-sha-256").start()
    try:
        seen = {}
        for user in ("app_user", "ghost"):
            firsts = [server_first_for(p.port, user) for _ in range(3)]
            # One salt per plaintext password, as PostgreSQL keeps one per role: a salt that
            # changed between attempts would mean a fresh PBKDF2 per login.
            assert len({f["s"] for f in firsts}) == 1, (user, firsts)
            seen[user] = firsts[0]
        for user, f in seen.items():
            assert len(base64.b64decode(f["s"])) == 16, (user, f)
            assert f["i"] == "4096", (user, f)
            assert sorted(f) == ["i", "r", "s"], (user, f)
        assert len(seen["app_user"]["r"]) == len(seen["ghost"]["r"])
        assert seen["app_user"]["s"] != seen["ghost"]["s"]
        # The cached secret still checks the password.
        with psycopg.connect(p.dsn("app_user", "appdb")) as c:
            assert c.execute("SELECT current_user").fetchone()[0] == "app_user"
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(p.dsn("app_user", "appdb", password="wrong"))
        with psycopg.connect(p.dsn("app_user", "appdb")) as c:
            assert c.execute("SELECT 1").fetchone()[0] == 1
        assert p.alive()
    finally:
        p.stop()


def scram_secret(password, iterations=4096):
    """A stored SCRAM-SHA-256 secret for password, with a new random salt (as PostgreSQL
    makes them)."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return (f"SCRAM-SHA-256${iterations}:{b64(salt)}$"
            f"{b64(hashlib.sha256(client_key).digest())}:{b64(server_key)}")


def pbkdf2_runs(http_port):
    conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        body = conn.getresponse().read().decode()
    finally:
        conn.close()
    m = re.search(r"^pgwarden_scram_pbkdf2_total (\d+)$", body, re.M)
    assert m, body[:2000]
    return int(m.group(1))


def logs_in(p, password):
    try:
        with psycopg.connect(p.dsn("app_user", "appdb", password=password)) as c:
            assert c.execute("SELECT current_user").fetchone()[0] == "app_user"
        return True
    except psycopg.OperationalError as e:
        assert "password authentication failed" in str(e), e
        return False


def test_plain_against_scram_secret_runs_pbkdf2_once(pgwarden_bin, pg):
    """auth_type = plain with a SCRAM secret in auth_file: the first login runs PBKDF2, a
    repeat with the same password none (the pooler's server login goes over the unix socket,
    where PostgreSQL trusts it, so every run counted is the client check). A wrong password
    after a good one fails and pays the full check; after a reload brings a new secret, the
    old password fails and the new one logs in, once with PBKDF2 and then without."""
    http_port = free_port()
    p = Pooler(pgwarden_bin, pg, auth_type="plain",
               userlist={"app_user": scram_secret("first-pw")},
               settings={"http_listen": f"127.0.0.1:{http_port}"}).start()
    try:
        runs = pbkdf2_runs(http_port)
        steps = [("first-pw", True, 1), ("first-pw", True, 0), ("first-pw", True, 0),
                 ("wrong-pw", False, 1), ("first-pw", True, 0)]
        for password, ok, cost in steps:
            assert logs_in(p, password) == ok, password
            now = pbkdf2_runs(http_port)
            assert now - runs == cost, (password, now - runs)
            runs = now
        # The secret changes on reload: what verified before proves nothing now.
        p.userlist["app_user"] = scram_secret("second-pw")
        p.write_config()
        p.signal(signal.SIGHUP)
        wait_for(lambda: not logs_in(p, "first-pw"), what="the reloaded auth_file")
        runs = pbkdf2_runs(http_port)
        for password, ok, cost in [("second-pw", True, 1), ("second-pw", True, 0),
                                   ("first-pw", False, 1), ("second-pw", True, 0)]:
            assert logs_in(p, password) == ok, password
            now = pbkdf2_runs(http_port)
            assert now - runs == cost, (password, now - runs)
            runs = now
        assert p.alive()
    finally:
        p.stop()


class HostileServer(FakeServer):
    """Speaks just enough of the PostgreSQL protocol to ask for SCRAM with a given iteration
    count and a new salt on every login."""

    def __init__(self, iterations):
        self.iterations = iterations
        self.logins = 0
        super().__init__()

    def serve(self, conn):
        conn.settimeout(5)
        self.read_startup(conn)
        mech = struct.pack("!I", AUTH_SASL) + b"SCRAM-SHA-256\0\0"
        conn.sendall(b"R" + struct.pack("!I", len(mech) + 4) + mech)
        assert self.read_exact(conn, 1) == b"p"
        (ln,) = struct.unpack("!I", self.read_exact(conn, 4))
        body = self.read_exact(conn, ln - 4)
        client_first = body[body.index(b"\0") + 5:].decode()
        cnonce = client_first.split("r=", 1)[1]
        self.logins += 1
        salt = base64.b64encode(struct.pack("!16xI", self.logins)[-16:]).decode()
        sf = f"r={cnonce}hostile,s={salt},i={self.iterations}".encode()
        msg = struct.pack("!I", AUTH_SASL_CONTINUE) + sf
        conn.sendall(b"R" + struct.pack("!I", len(msg) + 4) + msg)
        # Wait for the pooler to give up (it closes) or answer (it should not).
        conn.settimeout(5)
        conn.recv(4096)


@pytest.mark.parametrize("iterations", [100001, 1000000])
def test_hostile_iteration_count_refused(pgwarden_bin, pg, iterations):
    evil = HostileServer(iterations)
    dbs = {"evil": f"host=127.0.0.1 port={evil.port} dbname=x user=app_user password=app-pw",
           "appdb": f"host={pg.socket_dir} port={pg.port} dbname=appdb"}
    p = Pooler(pgwarden_bin, pg, auth_type="trust", databases=dbs,
               userlist={**PASSWORDS, "x": "x"}).start()
    try:
        with pytest.raises(psycopg.OperationalError) as e:
            psycopg.connect(p.dsn("x", "evil"))
        assert f"{iterations} SCRAM iterations" in str(e.value), str(e.value)
        assert "100000" in str(e.value)
        assert evil.logins >= 1
        # The pooler is still serving others.
        with psycopg.connect(p.dsn("app_user", "appdb")) as c:
            assert c.execute("SELECT 1").fetchone()[0] == 1
    finally:
        p.stop()
        evil.stop()

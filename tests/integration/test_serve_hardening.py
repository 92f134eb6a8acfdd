"""Hardening of configuration and logs: an empty auth_file secret never logs anybody in
(clients under md5 and SCRAM, nor the pooler's own server login), auth_file line endings,
config files that are FIFOs (a reload must not hang), and log lines a client cannot forge."""
import base64
import hashlib
import hmac
import json
import os
import secrets
import signal
import struct
import subprocess
import time

import psycopg
import pytest

from pgfixture import PASSWORDS
from serve_helpers import Pooler, error_fields, raw_connect, startup_packet

AUTH_OK, AUTH_MD5, AUTH_SASL, AUTH_SASL_CONTINUE, AUTH_SASL_FINAL = 0, 5, 10, 11, 12


def _password_msg(payload):
    return b"p" + struct.pack("!I", len(payload) + 4) + payload


class _Reader:
    """Backend messages off a socket, keeping what arrived beyond the message asked for (the
    pooler sends SASLFinal and AuthenticationOk in one write)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def next_auth(self):
        """("R", code, data) for an authentication request, ("E", fields) for an error, None
        when the pooler closed the connection."""
        self.sock.settimeout(10)
        while True:
            if len(self.buf) >= 5:
                t = self.buf[:1]
                (ln,) = struct.unpack("!I", self.buf[1:5])
                if len(self.buf) >= 1 + ln:
                    body, self.buf = self.buf[5:1 + ln], self.buf[1 + ln:]
                    if t == b"E":
                        return ("E", error_fields(body))
                    if t == b"R":
                        return ("R", struct.unpack("!I", body[:4])[0], body[4:])
                    continue
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk


def raw_login(port, user, password, database="postgres"):
    """Logs in like libpq would, except that an empty password is sent too (libpq refuses to
    send one, which is why this test speaks the protocol itself). Returns (outcome, steps):
    outcome "ok" or the error fields; steps the authentication codes the pooler sent."""
    steps = []
    s = raw_connect(port)
    reader = _Reader(s)
    try:
        s.sendall(startup_packet(user, database))
        m = reader.next_auth()
        if m is None or m[0] == "E":
            return (m[1] if m else "closed"), steps
        code, data = m[1], m[2]
        steps.append(code)
        if code == AUTH_MD5:
            inner = hashlib.md5((password + user).encode()).hexdigest()
            resp = "md5" + hashlib.md5(inner.encode() + data[:4]).hexdigest()
            s.sendall(_password_msg(resp.encode() + b"\0"))
        elif code == AUTH_SASL:
            assert b"SCRAM-SHA-256\0" in data
            nonce = base64.b64encode(secrets.token_bytes(18)).decode()
            first_bare = f"n=,r={nonce}"
            first = ("n,," + first_bare).encode()
            s.sendall(_password_msg(b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first))
            m = reader.next_auth()
            if m is None or m[0] == "E":
                return (m[1] if m else "closed"), steps
            steps.append(m[1])
            assert m[1] == AUTH_SASL_CONTINUE
            server_first = m[2].decode()
            attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
            assert attrs["r"].startswith(nonce)
            salted = hashlib.pbkdf2_hmac("sha256", password.encode(),
                                         base64.b64decode(attrs["s"]), int(attrs["i"]))
            client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
            stored_key = hashlib.sha256(client_key).digest()
            final_bare = f"c=biws,r={attrs['r']}"
            auth_message = f"{first_bare},{server_first},{final_bare}".encode()
            signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
            proof = bytes(a ^ b for a, b in zip(client_key, signature))
            s.sendall(_password_msg(
                f"{final_bare},p={base64.b64encode(proof).decode()}".encode()))
        else:
            raise AssertionError(f"unexpected authentication request {code}")
        while True:
            m = reader.next_auth()
            if m is None:
                return "closed", steps
            if m[0] == "E":
                return m[1], steps
            steps.append(m[1])
            if m[1] == AUTH_OK:
                return "ok", steps
    finally:
        s.close()


def test_unknown_sasl_mechanism_is_a_protocol_violation(pgwarden_bin, pg):
    """A SASLInitialResponse naming a mechanism that was not offered (SCRAM-SHA-256-PLUS
    without TLS, or made up) gets PostgreSQL's answer: 08P01 "client selected an invalid SASL
    authentication mechanism", not an authentication failure."""
    p = Pooler(pgwarden_bin, pg, auth_type="scram-sha-256").start()
    try:
        for mech in (b"SCRAM-SHA-256-PLUS", b"NOPE"):
            s = raw_connect(p.port)
            reader = _Reader(s)
            try:
                s.sendall(startup_packet("app_user", "appdb"))
                m = reader.next_auth()
                assert m[0] == "R" and m[1] == AUTH_SASL, m
                first = b"p=tls-server-end-point,,n=,r=abcdefghijklmnop"
                s.sendall(_password_msg(mech + b"\0" + struct.pack("!I", len(first)) + first))
                m = reader.next_auth()
                assert m[0] == "E", m
                assert m[1]["C"] == "08P01", m
                assert m[1]["M"] == "client selected an invalid SASL authentication mechanism", m
            finally:
                s.close()
        assert p.alive()
    finally:
        p.stop()


@pytest.mark.parametrize("auth_type", ["md5", "scram-sha-256"])
def test_empty_secret_never_logs_in(pgwarden_bin, pg, auth_type):
    """`"user" ""` in auth_file: an empty password is refused exactly like a wrong one (same
    error, same exchange), also when it overrides an earlier secret of the same user."""
    userlist = dict(PASSWORDS)
    userlist["trust_user"] = ""  # a role PostgreSQL lets in over the socket
    p = Pooler(pgwarden_bin, pg, auth_type=auth_type, userlist=userlist)
    with open(os.path.join(p.dir, "userlist.txt"), "a") as f:
        f.write('"monitor" ""\n')  # the last entry wins: monitor now has no secret
    p.start()
    try:
        # The raw client itself works: the right password logs in.
        outcome, good_steps = raw_login(p.port, "app_user", "app-pw", "appdb")
        assert outcome == "ok", outcome
        wrong, wrong_steps = raw_login(p.port, "app_user", "wrong", "appdb")
        assert wrong["C"] == "28P01", wrong
        for user in ("trust_user", "monitor"):
            for password in ("", "wrong"):
                outcome, steps = raw_login(p.port, user, password)
                assert outcome != "ok", f"{user} logged in with {password!r}"
                assert outcome["C"] == "28P01", outcome
                assert outcome["M"] == wrong["M"].replace("app_user", user)
                assert steps == wrong_steps  # SCRAM: the doomed exchange runs to its end
        # libpq refuses to send an empty password; a real one fails too.
        with pytest.raises(psycopg.OperationalError) as e:
            psycopg.connect(p.dsn("trust_user", password="anything"))
        assert "password authentication failed" in str(e.value)
        assert p.alive()
    finally:
        p.stop()


def test_empty_secret_is_no_server_password(pgwarden_bin, pg):
    """The auth_file secret of the server user is also the password of the pooler's server
    login: an empty one is no password, so nothing is sent to an md5 server."""
    dbs = {"postgres": f"host=127.0.0.1 port={pg.port} dbname=postgres"}
    userlist = dict(PASSWORDS)
    userlist["md5_user"] = ""
    p = Pooler(pgwarden_bin, pg, auth_type="trust", databases=dbs, userlist=userlist).start()
    try:
        with pytest.raises(psycopg.OperationalError) as e:
            psycopg.connect(p.dsn("md5_user", password="x"))
        assert "none is usable" in str(e.value), str(e.value)
        # The same pooler still logs in with a usable password.
        with psycopg.connect(p.dsn("trust_user", password="x")) as c:
            assert c.execute("SELECT current_user").fetchone()[0] == "trust_user"
    finally:
        p.stop()


@pytest.mark.parametrize("newline", ["\r", "\r\n", "\n"], ids=["cr", "crlf", "lf"])
def test_auth_file_line_endings(pgwarden_bin, pg, newline):
    users = {u: pw for u, pw in PASSWORDS.items() if pw}
    p = Pooler(pgwarden_bin, pg, auth_type="md5")
    with open(os.path.join(p.dir, "userlist.txt"), "w", newline="") as f:
        f.write(newline.join(["; written with " + repr(newline)]
                             + [f'"{u}" "{pw}"' for u, pw in users.items()]) + newline)
    p.start()
    try:
        for user, password in users.items():
            with psycopg.connect(p.dsn(user, password=password)) as c:
                assert c.execute("SELECT current_user").fetchone()[0] == user
    finally:
        p.stop()


def _psql_console(p, pg, sql, timeout=10):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    started = time.time()
    out = subprocess.run([pg.bin("psql"), "-X", "-A", "-t", "-h", "127.0.0.1", "-p", str(p.port),
                          "-U", "postgres", "-d", "pgbouncer", "-c", sql],
                         capture_output=True, text=True, timeout=timeout, env=env)
    return out, time.time() - started


def _assert_serves(p):
    with psycopg.connect(p.dsn(), autocommit=True) as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1


def test_reload_refuses_fifo_config_files(pgwarden_bin, pg):
    """open() of a FIFO waits for a writer: a reload naming one (as auth_file or in an
    %include) used to hang the pooler for good. It must fail at once and keep the old
    configuration."""
    p = Pooler(pgwarden_bin, pg, settings={"admin_users": "postgres"}).start()
    try:
        fifo = os.path.join(p.dir, "userlist.fifo")
        os.mkfifo(fifo)
        p.settings["auth_file"] = fifo
        p.settings["max_client_conn"] = "7"
        p.write_config()
        try:
            out, took = _psql_console(p, pg, "RELOAD")
        except subprocess.TimeoutExpired:
            pytest.fail("RELOAD with a FIFO auth_file hung")
        assert out.returncode != 0
        assert "not a regular file" in out.stderr and fifo in out.stderr, out.stderr
        assert took < 5
        _assert_serves(p)
        out, _ = _psql_console(p, pg, "SHOW CONFIG")
        assert "max_client_conn|100|" in out.stdout  # the old configuration is kept

        # An %include of a FIFO, by SIGHUP.
        p.settings["auth_file"] = os.path.join(p.dir, "userlist.txt")
        p.write_config()
        inc = os.path.join(p.dir, "include.fifo")
        os.mkfifo(inc)
        with open(p.ini, "a") as f:
            f.write(f"%include {inc}\n")
        p.signal(signal.SIGHUP)
        deadline = time.time() + 5
        while "include.fifo: not a regular file" not in p.log() and time.time() < deadline:
            time.sleep(0.05)
        assert "reload failed" in p.log() and "include.fifo: not a regular file (a FIFO)" \
            in p.log(), p.log()
        _assert_serves(p)
        out, _ = _psql_console(p, pg, "SHOW CONFIG")
        assert out.returncode == 0 and "max_client_conn|100|" in out.stdout
        assert p.alive()
    finally:
        p.stop()


def test_fifo_logfile_and_pidfile_never_block(pgwarden_bin, pg):
    """A FIFO named as logfile or pidfile (nobody reading it) used to hang startup in open():
    pgwarden must start at once, log to stderr instead and say why."""
    p = Pooler(pgwarden_bin, pg)
    log_fifo = os.path.join(p.dir, "log.fifo")
    pid_fifo = os.path.join(p.dir, "pid.fifo")
    os.mkfifo(log_fifo)
    os.mkfifo(pid_fifo)
    p.settings["logfile"] = log_fifo
    p.settings["pidfile"] = pid_fifo
    p.write_config()
    started = time.time()
    try:
        p.start()  # raises when it does not listen within 10 s
        assert time.time() - started < 5
        _assert_serves(p)
        p.signal(signal.SIGHUP)  # a reload opens the logfile again: no hang either
        time.sleep(0.5)
        _assert_serves(p)
    finally:
        p.stop()
    err = p.stderr_text
    assert "cannot open logfile" in err and "not a regular file" in err, err
    assert "cannot write pidfile" in err, err


FORGED = "2099-01-01T00:00:00.000Z error serve: FORGED"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_user_name_cannot_forge_log_lines(pgwarden_bin, pg, log_format):
    """A user name is logged (the failed login) before anybody is authenticated: a newline in
    it must not start a line of its own, nor may other control bytes reach the file raw."""
    p = Pooler(pgwarden_bin, pg, auth_type="md5", settings={"log_format": log_format}).start()
    try:
        user = "x\n" + FORGED + "\r\x1b[2K\x7f"
        outcome, _ = raw_login(p.port, user, "wrong")
        assert outcome["C"] == "28P01"
        _assert_serves(p)
        log = b""
        deadline = time.time() + 5
        while b"FORGED" not in log and time.time() < deadline:
            time.sleep(0.05)
            with open(p.logfile, "rb") as f:  # bytes: text mode would turn \r into \n
                log = f.read()
        lines = log.split(b"\n")
        assert lines[-1] == b""
        # The name is in the refusal and in the "closing because" line: each escaped.
        forged = [ln for ln in lines if b"FORGED" in ln]
        assert len(forged) == 2, log
        assert not any(ln.startswith(b"2099") or ln.startswith(b"FORGED") for ln in lines), log
        assert not any(c < 0x20 or c == 0x7f for c in log.replace(b"\n", b"")), log
        if log_format == "text":
            assert b'"x\\n' + FORGED.encode() + b'\\r\\x1b[2K\\x7f"' in forged[0], forged[0]
            assert b'x\\n' + FORGED.encode() + b'\\r\\x1b[2K\\x7f' in forged[1], forged[1]
        else:
            for ln in lines[:-1]:
                json.loads(ln)  # every line is one JSON object
            assert all(user in json.loads(ln)["msg"] for ln in forged)
    finally:
        p.stop()

"""Helpers for `pgwarden serve` integration tests: write a pgbouncer.ini + userlist into a
temp dir, start the pooler, wait for its port, and always stop it (by pid) at teardown."""
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import weakref

from pgfixture import PASSWORDS, free_port


class Pooler:
    def __init__(self, binary, pg, pool_mode="transaction", auth_type="trust",
                 databases=None, settings=None, users=None, server_via="socket",
                 userlist=None, manager=None, peers=None):
        self.binary = binary
        self.pg = pg
        self.dir = tempfile.mkdtemp(prefix="pgwarden-serve-")
        self.port = free_port()
        self.proc = None
        self.logfile = os.path.join(self.dir, "pgwarden.log")
        self.ini = os.path.join(self.dir, "pgwarden.ini")
        host = pg.socket_dir if server_via == "socket" else pg.host
        if databases is None:
            databases = {
                "postgres": f"host={host} port={pg.port} dbname=postgres",
                "appdb": f"host={host} port={pg.port} dbname=appdb",
            }
        self.databases = databases
        self.settings = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(self.port),
            "unix_socket_dir": self.dir,
            "auth_type": auth_type,
            "auth_file": os.path.join(self.dir, "userlist.txt"),
            "pool_mode": pool_mode,
            "default_pool_size": "5",
            "server_login_retry": "1",
            "query_wait_timeout": "15",
            "logfile": self.logfile,
        }
        self.settings.update(settings or {})
        self.users = users or {}
        self.manager = manager or {}  # [manager] keys: the live manager's settings
        self.peers = peers or {}  # [peers]: peer_id -> connection string
        if userlist is None:
            userlist = {u: p for u, p in PASSWORDS.items()}
        self.userlist = userlist
        self.write_config()

    def write_config(self):
        with open(os.path.join(self.dir, "userlist.txt"), "w") as f:
            for user, secret in self.userlist.items():
                f.write(f'"{user}" "{secret}"\n')
        with open(self.ini, "w") as f:
            f.write("[databases]\n")
            for name, conn in self.databases.items():
                f.write(f"{name} = {conn}\n")
            if self.users:
                f.write("[users]\n")
                for name, conn in self.users.items():
                    f.write(f"{name} = {conn}\n")
            f.write("[pgbouncer]\n")
            for k, v in self.settings.items():
                f.write(f"{k} = {v}\n")
            if self.peers:
                f.write("[peers]\n")
                for peer_id, conn in self.peers.items():
                    f.write(f"{peer_id} = {conn}\n")
            if self.manager:
                f.write("[manager]\n")
                for k, v in self.manager.items():
                    f.write(f"{k} = {v}\n")

    def start(self, extra_args=(), preexec_fn=None):
        self.proc = subprocess.Popen([self.binary, "serve", "-c", self.ini, *extra_args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     preexec_fn=preexec_fn)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgwarden exited {self.proc.returncode}: "
                                   f"{self.proc.stderr.read().decode()}\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("pgwarden did not start listening\n" + self.log())

    def log(self):
        try:
            with open(self.logfile) as f:
                return f.read()[-8000:]
        except OSError:
            return ""

    def dsn(self, user="postgres", dbname="postgres", password=None, **extra):
        if password is None:
            password = PASSWORDS.get(user, "")
        parts = [f"host=127.0.0.1 port={self.port} user={user} dbname={dbname}",
                 "sslmode=disable", "connect_timeout=10"]
        if password:
            parts.append(f"password={password}")
        parts += [f"{k}={v}" for k, v in extra.items()]
        return " ".join(parts)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        stderr = ""
        if self.proc and self.proc.stderr:
            try:
                stderr = self.proc.stderr.read().decode(errors="replace")
            except (OSError, ValueError):
                pass
            self.proc.stderr.close()
        self.stderr_text = stderr  # what pgwarden wrote to stderr, for tests to read
        shutil.rmtree(self.dir, ignore_errors=True)
        # Sanitizer builds (make check-sanitize) report memory errors and leaks on stderr.
        if "Sanitizer" in stderr or "runtime error:" in stderr:
            raise AssertionError("pgwarden sanitizer report:\n" + stderr[-6000:])


def raw_connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return s


def startup_packet(user, database, extra=None, version=196608):
    body = struct.pack("!I", version)
    params = {"user": user, "database": database}
    params.update(extra or {})
    for k, v in params.items():
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


# Bytes read past the message a read_messages call stopped at, per socket: the next call
# starts with them (two pipelined Syncs' answers often arrive in one recv).
_unread = weakref.WeakKeyDictionary()


def read_messages(sock, timeout=5.0, until=None):
    """Reads backend messages until `until` type byte is seen or the peer closes.
    Returns a list of (type, body)."""
    sock.settimeout(timeout)
    buf = _unread.pop(sock, b"")
    msgs = []
    end = time.time() + timeout
    while time.time() < end:
        while len(buf) >= 5:
            t = buf[0:1]
            (ln,) = struct.unpack("!I", buf[1:5])
            if len(buf) < 1 + ln:
                break
            msgs.append((t, buf[5:1 + ln]))
            buf = buf[1 + ln:]
            if until is not None and t == until:
                if buf:
                    _unread[sock] = buf
                return msgs
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            break
        if not chunk:
            break
        buf += chunk
    return msgs


def read_until_readies(sock, n, timeout=20.0):
    """Reads messages until n ReadyForQuery arrived (or the peer closed, or `timeout` passed
    with nothing new); returns them all. What came after the n-th is kept for the next read."""
    out = []
    for _ in range(n):
        got = read_messages(sock, timeout, until=b"Z")
        out += got
        if not got or got[-1][0] != b"Z":
            break
    return out


def error_fields(body):
    out = {}
    for part in body.split(b"\0"):
        if part:
            out[chr(part[0])] = part[1:].decode(errors="replace")
    return out


def pgwarden_backends(pg, user=None):
    """Number of PostgreSQL backends opened by the pooler (application_name not psql)."""
    where = "backend_type = 'client backend' AND pid <> pg_backend_pid()"
    if user:
        where += f" AND usename = '{user}'"
    return int(pg.psql(f"SELECT count(*) FROM pg_stat_activity WHERE {where}"))


def run_workers(fn, n, what, timeout=120):
    """Runs fn(0..n-1) in n threads and fails when one of them is still running after timeout."""
    threads = [threading.Thread(target=fn, args=(w,)) for w in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    assert not any(t.is_alive() for t in threads), f"a {what} hung"


def query_msg(sql):
    """A simple-protocol Query message."""
    body = sql.encode() + b"\0"
    return b"Q" + struct.pack("!I", len(body) + 4) + body


def login_raw(pooler, user="postgres", db="postgres"):
    """A raw socket logged in through the pooler (trust auth), past its ReadyForQuery."""
    s = raw_connect(pooler.port)
    s.sendall(startup_packet(user, db))
    msgs = read_messages(s, timeout=10, until=b"Z")
    assert msgs and msgs[-1][0] == b"Z", msgs
    return s


def data_row_values(body):
    """Column values of a DataRow body (text format, None for NULL)."""
    (n,) = struct.unpack("!H", body[:2])
    pos, out = 2, []
    for _ in range(n):
        (ln,) = struct.unpack("!i", body[pos:pos + 4])
        pos += 4
        if ln < 0:
            out.append(None)
        else:
            out.append(body[pos:pos + ln].decode())
            pos += ln
    return out


def rss_kb(pid):
    """Resident set size of a process, in KB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def console_rows(pooler, sql, user="postgres"):
    """Runs one admin console command and returns its rows as dicts of text values."""
    import psycopg
    with psycopg.connect(pooler.dsn(user, "pgbouncer", password=""), autocommit=True) as c:
        res = c.pgconn.exec_(sql.encode())
        assert res.status == psycopg.pq.ExecStatus.TUPLES_OK, res.error_message
        names = [res.fname(i).decode() for i in range(res.nfields)]
        return [{names[i]: (res.get_value(r, i) or b"").decode() for i in range(res.nfields)}
                for r in range(res.ntuples)]


def wait_for(fn, timeout=15, what="condition"):
    """Polls fn every 0.2 s until it returns something true (returned), or fails."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


SSL_REQUEST_CODE = 80877103
CANCEL_REQUEST_CODE = 80877102


def be_msg(t, body):
    """A backend message: type byte, length, body."""
    return t + struct.pack("!I", len(body) + 4) + body


class FakeServer:
    """A listening socket on loopback that plays a PostgreSQL server: each accepted connection
    is handed to serve(conn), one after another in the accepting thread, or each in a thread
    of its own when the subclass sets concurrent; subclasses speak the protocol."""

    concurrent = False

    def __init__(self):
        from pgfixture import free_port
        self.port = free_port()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if self.concurrent:
                threading.Thread(target=self._serve_one, args=(conn,), daemon=True).start()
            else:
                self._serve_one(conn)

    def _serve_one(self, conn):
        with conn:
            try:
                self.serve(conn)
            except OSError:
                pass

    def serve(self, conn):
        raise NotImplementedError

    @staticmethod
    def read_exact(conn, n):
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                raise OSError("closed")
            buf += chunk
        return buf

    def read_msg(self, conn):
        """One frontend message: (type byte, body)."""
        t = self.read_exact(conn, 1)
        (ln,) = struct.unpack("!I", self.read_exact(conn, 4))
        return t, self.read_exact(conn, ln - 4)

    @staticmethod
    def send_login_ok(conn, pid=4242):
        """What a server without a password says after the StartupMessage: AuthenticationOk,
        two ParameterStatus, BackendKeyData and ReadyForQuery."""
        conn.sendall(be_msg(b"R", struct.pack("!I", 0)) +
                     be_msg(b"S", b"server_version\x0016.0\0") +
                     be_msg(b"S", b"client_encoding\0UTF8\0") +
                     be_msg(b"K", struct.pack("!II", pid, 1)) + be_msg(b"Z", b"I"))

    def queries(self, conn):
        """The body of each simple Query the pooler sends, until it says Terminate or the
        server stops; other messages are read and ignored."""
        while not self.stopping:
            t, body = self.read_msg(conn)
            if t == b"X":
                return
            if t == b"Q":
                yield body

    def read_startup(self, conn):
        """Reads the pooler's StartupMessage and returns its body, answering an SSLRequest
        first with 'N' as a server without TLS does."""
        while True:
            (ln,) = struct.unpack("!I", self.read_exact(conn, 4))
            body = self.read_exact(conn, ln - 4)
            if struct.unpack("!I", body[:4])[0] != SSL_REQUEST_CODE:
                return body
            conn.sendall(b"N")

    def stop(self):
        self.stopping = True
        self.sock.close()
        self.thread.join(timeout=10)


class CancelHoldingProxy:
    """TCP between the pooler and PostgreSQL: sessions pass as they are; a CancelRequest is
    held `hold_s` seconds before it is passed on (a slow network or a busy postmaster), so the
    pooler has a cancel in flight for that long."""

    def __init__(self, pg, hold_s):
        self.pg, self.hold_s = pg, hold_s
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.delivered = []  # times a held cancel reached PostgreSQL
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection((self.pg.host, self.pg.port))
            threading.Thread(target=self._link, args=(down, up), daemon=True).start()

    def _link(self, down, up):
        first = down.recv(8, socket.MSG_WAITALL)  # length and code of the first packet
        if len(first) == 8 and struct.unpack("!II", first) == (16, CANCEL_REQUEST_CODE):
            first += down.recv(8, socket.MSG_WAITALL)
            time.sleep(self.hold_s)
            up.sendall(first)
            up.recv(1)  # PostgreSQL closes once the signal is sent
            self.delivered.append(time.time())
            down.close()
            up.close()
            return
        up.sendall(first)

        def pump(src, dst):
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            for s in (src, dst):
                try:
                    s.shutdown(2)
                except OSError:
                    pass

        threading.Thread(target=pump, args=(up, down), daemon=True).start()
        pump(down, up)

    def close(self):
        self.listener.close()

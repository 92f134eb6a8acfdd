"""A throwaway PostgreSQL server for tests and the demo.

initdb into a temp dir, fsync off, a free loopback port below 32768, a unix socket dir of its
own; run as the `postgres` user when we are root (initdb refuses root). Roles created:
  postgres     superuser, password "postgres-pw" (TCP needs scram-sha-256)
  app_user     ordinary role, password "app-pw"
  md5_user     ordinary role authenticated with md5, password "md5-pw"
  trust_user   ordinary role, trusted over TCP (no password)
  monitor      pg_read_all_stats + pg_signal_backend, password "monitor-pw"
  nopriv       ordinary role without monitoring privileges, password "nopriv-pw"
Every role may connect over the unix socket without a password. wal_level = logical, and
pg_hba.conf lets replication connections in (unix socket: trust; TCP: scram-sha-256).

PgServer(ssl=True) also turns TLS on over TCP (plain TCP stays allowed): certificates from
scripts/make-test-certs in <base>/certs (ca, server for localhost/127.0.0.1, client, expired,
untrusted), server.crt as the server's certificate and ca.crt for client certificates;
use_certificate() switches the server's certificate with a reload.
"""
import glob
import os
import pwd
import random
import shutil
import socket
import subprocess
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

PASSWORDS = {
    "postgres": "postgres-pw",
    "app_user": "app-pw",
    "md5_user": "md5-pw",
    "monitor": "monitor-pw",
    "nopriv": "nopriv-pw",
    "trust_user": "",
}


def find_bindir():
    override = os.environ.get("PG_BINDIR")
    if override:
        return override
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(p.split("/")[4]))
    if candidates:
        return os.path.dirname(candidates[-1])
    initdb = shutil.which("initdb")
    if initdb:
        return os.path.dirname(initdb)
    raise RuntimeError("PostgreSQL server binaries not found; run scripts/setup")


def port_is_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# Seeded from os.urandom once, and ports already handed out are not handed out again, so two
# calls in the same millisecond (or two processes started together) do not collide.
_port_rng = random.Random()
_ports_given = set()


def free_port(low=20000, high=32000):
    """A free loopback port below 32768 (outside Linux's ephemeral range)."""
    for _ in range(200):
        port = _port_rng.randint(low, high)
        if port not in _ports_given and port_is_free(port):
            _ports_given.add(port)
            return port
    raise RuntimeError("no free port found below 32768")


class PgServer:
    def __init__(self, bindir=None, ssl=False):
        self.bindir = bindir or find_bindir()
        self.ssl = ssl
        self.certs = None  # with ssl: the directory of make-test-certs' files
        self.host = "127.0.0.1"
        self.port = None
        self.base = None
        self.datadir = None
        self.socket_dir = None
        self.logfile = None
        self.run_as = None
        if os.geteuid() == 0:
            self.run_as = "postgres"

    # -- helpers ---------------------------------------------------------------------------
    def _cmd(self, args, **kw):
        if self.run_as:
            args = ["runuser", "-u", self.run_as, "--"] + args
        return subprocess.run(args, check=True, capture_output=True, text=True, **kw)

    def bin(self, name):
        return os.path.join(self.bindir, name)

    def dsn(self, user="postgres", dbname="postgres", password=None, **extra):
        """key=value connection string over TCP; password defaults to the role's own."""
        if password is None:
            password = PASSWORDS.get(user, "")
        parts = [f"host={self.host}", f"port={self.port}", f"user={user}", f"dbname={dbname}"]
        if password:
            parts.append(f"password={password}")
        parts += [f"{k}={v}" for k, v in extra.items()]
        return " ".join(parts)

    def uri(self, user="postgres", dbname="postgres", password=None):
        if password is None:
            password = PASSWORDS.get(user, "")
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@{self.host}:{self.port}/{dbname}"

    def socket_dsn(self, user="postgres", dbname="postgres"):
        return f"host={self.socket_dir} port={self.port} user={user} dbname={dbname}"

    # -- lifecycle -------------------------------------------------------------------------
    def start(self):
        try:
            return self._start()
        except BaseException:
            self.cleanup()
            raise

    def _start(self):
        self.base = tempfile.mkdtemp(prefix="pgwarden-pg-")
        self.datadir = os.path.join(self.base, "data")
        self.socket_dir = os.path.join(self.base, "sock")
        self.logfile = os.path.join(self.base, "postgres.log")
        os.mkdir(self.socket_dir)
        if self.run_as:
            pw = pwd.getpwnam(self.run_as)
            for path in (self.base, self.socket_dir):
                os.chown(path, pw.pw_uid, pw.pw_gid)
            os.chmod(self.base, 0o755)
        pwfile = os.path.join(self.base, "pwfile")
        with open(pwfile, "w") as f:
            f.write(PASSWORDS["postgres"] + "\n")
        if self.run_as:
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        self._cmd([self.bin("initdb"), "-D", self.datadir, "-U", "postgres", "--pwfile", pwfile,
                   "-A", "scram-sha-256", "--auth-local", "trust", "-E", "UTF8",
                   "--locale", "C.UTF-8" if os.path.exists("/usr/lib/locale/C.utf8") else "C"])
        with open(os.path.join(self.datadir, "pg_hba.conf"), "w") as f:
            f.write(
                "local all all trust\n"
                # tls_only_user (ssl=True only) may log in over TLS alone
                "hostnossl all tls_only_user 127.0.0.1/32 reject\n"
                "hostssl all tls_only_user 127.0.0.1/32 trust\n"
                "host all trust_user 127.0.0.1/32 trust\n"
                "host all md5_user 127.0.0.1/32 md5\n"
                "host all all 127.0.0.1/32 scram-sha-256\n"
                # "all" does not cover physical replication (test_serve_replication.py)
                "local replication all trust\n"
                "host replication all 127.0.0.1/32 scram-sha-256\n"
            )
        self.port = free_port()
        if self.ssl:
            self._make_certs()
        self._write_conf()
        self._start_postgres()
        self._create_roles()
        return self

    def _make_certs(self):
        self.certs = os.path.join(self.base, "certs")
        subprocess.run([os.path.join(ROOT, "scripts", "make-test-certs"), self.certs],
                       check=True, capture_output=True, text=True)
        os.chmod(self.certs, 0o755)
        if self.run_as:
            pw = pwd.getpwnam(self.run_as)
            for name in os.listdir(self.certs):
                os.chown(os.path.join(self.certs, name), pw.pw_uid, pw.pw_gid)

    def cert(self, name):
        """Path of one of make-test-certs' files (ssl=True only), e.g. cert("ca.crt")."""
        return os.path.join(self.certs, name)

    def _write_conf(self):
        with open(os.path.join(self.datadir, "postgresql.auto.conf"), "a") as f:
            f.write(
                f"listen_addresses = '127.0.0.1'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 120\n"
                "shared_buffers = 64MB\n"
                "log_min_messages = warning\n"
                # Logical decoding and walsenders for test_serve_replication.py
                "wal_level = logical\nmax_wal_senders = 10\nmax_replication_slots = 10\n"
            )
            if self.ssl:
                f.write(
                    "ssl = on\n"
                    f"ssl_cert_file = '{self.cert('server.crt')}'\n"
                    f"ssl_key_file = '{self.cert('server.key')}'\n"
                    f"ssl_ca_file = '{self.cert('ca.crt')}'\n"
                )

    def pgbench_init(self, dbname="postgres"):
        """pgbench's tables (scale 1) in dbname, over the unix socket."""
        subprocess.run([self.bin("pgbench"), "-i", "-q", "-s", "1", "-h", self.socket_dir, "-p",
                        str(self.port), "-U", "postgres", dbname],
                       check=True, capture_output=True, text=True, timeout=120)
        return self

    def use_certificate(self, crt, key):
        """Makes the server present crt/key (paths readable by the server) to new TLS
        connections; returns once a new connection sees the setting."""
        self.psql(f"ALTER SYSTEM SET ssl_cert_file = '{crt}'")
        self.psql(f"ALTER SYSTEM SET ssl_key_file = '{key}'")
        self.psql("SELECT pg_reload_conf()")
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.psql("SHOW ssl_cert_file") == crt:
                return
            time.sleep(0.05)
        raise RuntimeError(f"PostgreSQL did not take ssl_cert_file = {crt}\n{self.read_log()}")

    def _start_postgres(self):
        last_error = None
        for _attempt in range(3):
            try:
                self._cmd([self.bin("pg_ctl"), "-D", self.datadir, "-l", self.logfile, "-w",
                           "-t", "60", "start"])
                return
            except subprocess.CalledProcessError as e:
                last_error = e
                # The port may have been taken between the check and the start.
                self.port = free_port()
                with open(os.path.join(self.datadir, "postgresql.auto.conf"), "a") as f:
                    f.write(f"port = {self.port}\n")
        raise RuntimeError(f"PostgreSQL did not start: {last_error.stderr}\n{self.read_log()}")

    def read_log(self):
        try:
            with open(self.logfile) as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def psql(self, sql, user="postgres", dbname="postgres"):
        """Runs SQL over the unix socket as a superuser; returns stdout (tuples only)."""
        out = subprocess.run([self.bin("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                              "-h", self.socket_dir, "-p", str(self.port), "-U", user,
                              "-d", dbname, "-c", sql],
                             check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def _create_roles(self):
        self.psql(
            "SET password_encryption = 'scram-sha-256';"
            "CREATE ROLE app_user LOGIN PASSWORD 'app-pw';"
            "CREATE ROLE trust_user LOGIN;"
            "CREATE ROLE monitor LOGIN PASSWORD 'monitor-pw';"
            "GRANT pg_read_all_stats, pg_signal_backend TO monitor;"
            "CREATE ROLE nopriv LOGIN PASSWORD 'nopriv-pw';"
            "SET password_encryption = 'md5';"
            "CREATE ROLE md5_user LOGIN PASSWORD 'md5-pw';"
        )
        if self.ssl:
            self.psql("CREATE ROLE tls_only_user LOGIN")
        # CREATE DATABASE cannot share psql -c's implicit transaction.
        self.psql("CREATE DATABASE appdb OWNER app_user")

    def stop(self, mode="fast"):
        if self.datadir and os.path.exists(os.path.join(self.datadir, "postmaster.pid")):
            try:
                self._cmd([self.bin("pg_ctl"), "-D", self.datadir, "-m", mode, "-w", "stop"])
            except subprocess.CalledProcessError:
                pass

    def restart(self):
        self.stop()
        self._start_postgres()

    def cleanup(self):
        self.stop("immediate")
        if self.base:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None

"""PgBouncer 1.25 drop-in: security-relevant keys pgwarden does not implement stop a start
and a reload, config warnings reach the logfile, PgBouncer's command line (FILE.ini, -d, -q,
-v, -u, -V, -h, -R), the pidfile and the user key, and listen_addr = * on IPv4 and IPv6."""
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import psycopg
import pytest

from serve_helpers import Pooler, console_rows, wait_for

# (section, key, value): each asks for a protection pgwarden cannot give. (TLS is implemented:
# test_serve_tls.py; only a value that is no sslmode is refused here.)
REFUSED = [("pgbouncer", "auth_type", method) for method in ("hba", "cert", "pam", "ldap")]
REFUSED += [
    ("pgbouncer", "server_tls_sslmode", "requre"),  # a typo is no sslmode
    ("pgbouncer", "client_tls_sslmode", "on"),
    # auth_user, auth_query (global and per database), auth_hba_file and auth_ident_file are
    # implemented; the console is no auth database
    ("pgbouncer", "auth_dbname", "pgbouncer"),
]


def _refused_id(case):
    return f"{case[0]}-{case[1]}={case[2]}".replace(" ", "_")


def _set(p, section, key, value):
    if section == "databases":
        p.databases["postgres"] += f" {key}={value}"
    else:
        p.settings[key] = value
    p.write_config()


def _no_sanitizer_report(stderr):
    # Sanitizer builds (make check-sanitize) report memory errors and leaks on stderr.
    assert "Sanitizer" not in stderr and "runtime error:" not in stderr, stderr[-6000:]


def _run(args, timeout=10, **kw):
    out = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)
    _no_sanitizer_report(out.stderr)
    return out


def _listening(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _serves(p, host="127.0.0.1"):
    dsn = p.dsn().replace("host=127.0.0.1", f"host={host}")
    with psycopg.connect(dsn) as c:
        return c.execute("SELECT 1").fetchone()[0] == 1


def _running(pid):
    """A process that exists and is not a zombie (a daemon's parent, init here, may never
    reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pid, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not _running(pid):
            return True
        time.sleep(0.05)
    return False


def _read_pid(path):
    with open(path) as f:
        return int(f.read().strip())


def _with_pidfile(p, content=None):
    """Sets p's pidfile (in its directory, optionally written beforehand) and returns it."""
    pidfile = os.path.join(p.dir, "pgwarden.pid")
    if content is not None:
        with open(pidfile, "w") as f:
            f.write(content)
    p.settings["pidfile"] = pidfile
    p.write_config()
    return pidfile


def _stop_pid(pid):
    if _running(pid):
        os.kill(pid, signal.SIGQUIT)
        if not _wait_gone(pid, 5):
            os.kill(pid, signal.SIGKILL)


# ---- 1. security-relevant keys that pgwarden does not implement ----

@pytest.mark.parametrize("case", REFUSED, ids=_refused_id)
def test_security_key_refused_at_startup(pgwarden_bin, pg, case):
    section, key, value = case
    p = Pooler(pgwarden_bin, pg)
    try:
        _set(p, section, key, value)
        try:
            out = _run([pgwarden_bin, "serve", "-c", p.ini])
        except subprocess.TimeoutExpired:
            pytest.fail(f"{key} = {value} was accepted: pgwarden started")
        assert out.returncode != 0, out
        assert key in out.stderr and value in out.stderr, out.stderr
        assert not _listening(p.port)
    finally:
        p.stop()


@pytest.mark.parametrize("key,value", [("server_tls_sslmode", "requre"),
                                       ("client_tls_protocols", "tlsv1.0,tlsv1.2"),
                                       ("auth_type", "pam")])
def test_security_key_refused_on_reload(pgwarden_bin, pg, key, value):
    p = Pooler(pgwarden_bin, pg, settings={"admin_users": "postgres"}).start()
    try:
        p.settings[key] = value
        p.settings["max_client_conn"] = "7"
        p.write_config()
        # RELOAD on the console answers an error that names the key ...
        with psycopg.connect(p.dsn("postgres", "pgbouncer", password=""), autocommit=True) as c:
            res = c.pgconn.exec_(b"RELOAD")
            assert res.status == psycopg.pq.ExecStatus.FATAL_ERROR
            assert key in res.error_message.decode(), res.error_message
        # ... and so does the log of a SIGHUP.
        p.signal(signal.SIGHUP)
        wait_for(lambda: p.log().count("reload failed") >= 2, what="the refused reload logged")
        line = [ln for ln in p.log().splitlines() if "reload failed" in ln][-1]
        assert key in line and value in line, line
        assert p.alive() and _serves(p)
        rows = console_rows(p, "SHOW CONFIG")
        assert {r["key"]: r["value"] for r in rows}["max_client_conn"] == "100"
    finally:
        p.stop()


@pytest.mark.parametrize("value", ["prefer", "allow"])
def test_optional_server_tls_starts_without_warning(pgwarden_bin, pg, value):
    p = Pooler(pgwarden_bin, pg, settings={"server_tls_sslmode": value}).start()
    try:
        assert _serves(p)
        warnings = [ln for ln in p.log().splitlines() if "warning" in ln and "tls" in ln]
        assert not warnings, p.log()
    finally:
        p.stop()


@pytest.mark.parametrize("value", ["prefer", "allow"])
def test_client_tls_without_key_file_stops_startup(pgwarden_bin, pg, value):
    # As PgBouncer: TLS for clients needs client_tls_key_file and client_tls_cert_file.
    p = Pooler(pgwarden_bin, pg, settings={"client_tls_sslmode": value})
    try:
        out = _run([pgwarden_bin, "serve", "-c", p.ini])
        assert out.returncode == 3, out
        assert "client_tls_key_file" in out.stderr, out.stderr
        assert not _listening(p.port)
    finally:
        p.stop()


def test_disable_is_silent_with_tls_files(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, settings={"client_tls_sslmode": "disable",
                                           "server_tls_sslmode": "disable",
                                           "client_tls_key_file": "/etc/ssl/pgb.key",
                                           "server_tls_protocols": ""}).start()
    try:
        assert _serves(p)
        assert "tls" not in p.log(), p.log()  # files unused under disable: nothing to say
    finally:
        p.stop()


# ---- 2. config warnings reach the logfile ----

def test_config_warnings_reach_logfile(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, settings={"some_future_key": "1",
                                           "syslog_facility": "local9"})
    p.users = {"postgres": "pool_size=3 some_future_setting=5"}
    p.write_config()
    p.start()
    try:
        log = p.log()
        assert "unknown key 'some_future_key'" in log, log
        assert "syslog_facility 'local9' is unknown; daemon is used" in log, log
        assert "unknown setting 'some_future_setting'" in log, log
        # A reload's warnings go to the logfile as well.
        p.settings["another_future_key"] = "2"
        p.write_config()
        p.signal(signal.SIGHUP)
        wait_for(lambda: "another_future_key" in p.log(), what="the reload's warning")
    finally:
        p.stop()
    assert "some_future_key" not in p.stderr_text, p.stderr_text


# ---- 3. PgBouncer's command line ----

def _popen(args, **kw):
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            **kw)


def _wait_listening(proc, port, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode}: {proc.stderr.read()}")
        if _listening(port):
            return
        time.sleep(0.05)
    raise AssertionError("not listening")


def _finish(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    proc.stderr.close()
    _no_sanitizer_report(err)
    return err


def test_pgbouncer_command_line_serves(pgwarden_bin, pg):
    """`pgwarden FILE.ini` (no subcommand) runs the pooler, like `pgbouncer FILE.ini`."""
    p = Pooler(pgwarden_bin, pg)
    proc = _popen([pgwarden_bin, p.ini])
    try:
        _wait_listening(proc, p.port)
        assert _serves(p)
    finally:
        _finish(proc)
        p.stop()


def test_config_file_found_by_name(pgwarden_bin, pg):
    """A first argument that names an existing file is a configuration file even without a
    .ini ending; an unknown word that is no file stays an unknown action."""
    p = Pooler(pgwarden_bin, pg)
    conf = os.path.join(p.dir, "pgbouncer.conf")
    shutil.copy(p.ini, conf)
    proc = _popen([pgwarden_bin, "pgbouncer.conf"], cwd=p.dir)
    try:
        _wait_listening(proc, p.port)
    finally:
        _finish(proc)
        p.stop()
    out = _run([pgwarden_bin, "monitr"])
    assert out.returncode == 3 and "unknown action 'monitr'" in out.stderr, out


def test_quiet_and_verbose(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg)
    del p.settings["logfile"]
    p.write_config()
    proc = _popen([pgwarden_bin, "-q", p.ini])
    try:
        _wait_listening(proc, p.port)
        assert _serves(p)
    finally:
        err = _finish(proc)
    assert "listening" not in err and " info " not in err, err

    p.settings["logfile"] = p.logfile
    p.write_config()
    proc = _popen([pgwarden_bin, "-v", "-v", p.ini])
    try:
        _wait_listening(proc, p.port)
        assert _serves(p)
    finally:
        _finish(proc)
    assert " debug " in p.log(), p.log()
    p.stop()


def test_version_help_and_reboot(pgwarden_bin, pg):
    for args in (["-V"], ["--version"], ["serve", "-V"]):
        out = _run([pgwarden_bin, *args])
        assert out.returncode == 0 and out.stdout.startswith("pgwarden "), (args, out)
    out = _run([pgwarden_bin, "--help"])
    assert out.returncode == 0 and "FILE.ini" in out.stdout, out.stdout
    out = _run([pgwarden_bin, "serve", "--help"])
    for flag in ("--daemon", "--quiet", "--verbose", "--user", "--version", "--reboot"):
        assert flag in out.stdout, (flag, out.stdout)
    p = Pooler(pgwarden_bin, pg)
    try:
        for flag in ("-R", "--reboot"):
            out = _run([pgwarden_bin, flag, p.ini])
            assert out.returncode == 3, out
            assert "not supported" in out.stderr and "-R" in out.stderr, out.stderr
            assert not _listening(p.port)
    finally:
        p.stop()


def test_daemon(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg)
    pidfile = _with_pidfile(p)
    pid = None
    try:
        started = time.time()
        out = _run([pgwarden_bin, "-d", p.ini])  # capture_output: returns only once detached
        assert out.returncode == 0, out
        assert time.time() - started < 5
        pid = _read_pid(pidfile)
        assert _running(pid)
        assert _serves(p)
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        assert int(fields[3]) != pid, "the daemon should not lead its session"  # session id
        os.kill(pid, signal.SIGTERM)
        assert _wait_gone(pid), "SIGTERM did not stop the daemon"
        assert not os.path.exists(pidfile)
        assert "shut down" in p.log()
    finally:
        if pid:
            _stop_pid(pid)
        p.stop()


def test_daemon_needs_pidfile_and_logfile_and_reports_failure(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg)
    try:
        out = _run([pgwarden_bin, "-d", p.ini])  # a logfile but no pidfile
        assert out.returncode == 3 and "pidfile" in out.stderr, out
        del p.settings["logfile"]
        _with_pidfile(p)
        out = _run([pgwarden_bin, "-d", p.ini])
        assert out.returncode == 3 and "logfile" in out.stderr, out
        assert not _listening(p.port)
        # A daemon that cannot listen: the caller gets 3 and the reason, not 0.
        p.settings["logfile"] = p.logfile
        p.write_config()
        with socket.socket() as busy:
            busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            busy.bind(("127.0.0.1", p.port))
            busy.listen(1)
            out = _run([pgwarden_bin, "-d", p.ini])
        assert out.returncode == 3, out
        assert "cannot listen" in out.stderr, out.stderr
        assert "cannot listen" in p.log(), p.log()
        assert not os.path.exists(p.settings["pidfile"])
    finally:
        p.stop()


def test_pidfile_of_a_live_process_refuses_start(pgwarden_bin, pg):
    a = Pooler(pgwarden_bin, pg)
    pidfile = _with_pidfile(a)
    a.start()
    try:
        wait_for(lambda: os.path.exists(pidfile), what="the pidfile")
        assert _read_pid(pidfile) == a.proc.pid
        # A second pooler with the same pidfile (another port) is refused, and the first
        # one's pidfile is left as it is.
        b = Pooler(pgwarden_bin, pg, settings={"pidfile": pidfile})
        try:
            out = _run([pgwarden_bin, "serve", "-c", b.ini])
            assert out.returncode == 3, out
            assert pidfile in out.stderr and str(a.proc.pid) in out.stderr, out.stderr
            assert not _listening(b.port)
        finally:
            b.stop()
        assert _read_pid(pidfile) == a.proc.pid
        # At exit, a pidfile that names another process now is not removed.
        with open(pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")
        a.proc.send_signal(signal.SIGTERM)
        a.proc.wait(timeout=10)
        assert os.path.exists(pidfile) and _read_pid(pidfile) == os.getpid()
    finally:
        a.stop()


def test_stale_pidfile_is_replaced(pgwarden_bin, pg):
    gone = subprocess.Popen(["true"])
    gone.wait()
    p = Pooler(pgwarden_bin, pg)
    pidfile = _with_pidfile(p, f"{gone.pid}\n")
    p.start()
    try:
        wait_for(lambda: os.path.exists(pidfile) and _read_pid(pidfile) == p.proc.pid,
                 what="the pidfile rewritten")
        p.proc.send_signal(signal.SIGTERM)
        p.proc.wait(timeout=10)
        assert not os.path.exists(pidfile)
    finally:
        p.stop()


def _uid_gid(pid):
    ids = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("Uid:", "Gid:")):
                ids[line[:3]] = {int(x) for x in line.split()[1:]}
    return ids["Uid"], ids["Gid"]


def _nobody_pooler(pgwarden_bin, pg):
    """A pooler whose directory (config, unix socket, pidfile) belongs to nobody."""
    p = Pooler(pgwarden_bin, pg, server_via="tcp")
    _with_pidfile(p)
    nobody = pwd.getpwnam("nobody")
    for path in [p.dir] + [os.path.join(p.dir, f) for f in os.listdir(p.dir)]:
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    os.chmod(p.dir, 0o755)
    return p, nobody


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
@pytest.mark.parametrize("how", ["-u", "user key"])
def test_switch_user_after_binding(pgwarden_bin, pg, how):
    p, nobody = _nobody_pooler(pgwarden_bin, pg)
    if how == "user key":
        p.settings["user"] = "nobody"
        p.write_config()
        os.chown(p.ini, nobody.pw_uid, nobody.pw_gid)
        extra = ()
    else:
        extra = ("-u", "nobody")
    try:
        p.start(extra)
        uids, gids = _uid_gid(p.proc.pid)
        assert uids == {nobody.pw_uid} and gids == {nobody.pw_gid}, (uids, gids)
        assert _serves(p)
        wait_for(lambda: os.path.exists(p.settings["pidfile"]), what="the pidfile")
        assert os.stat(p.settings["pidfile"]).st_uid == nobody.pw_uid
        assert "running as user nobody" in p.log(), p.log()
        p.proc.send_signal(signal.SIGTERM)
        p.proc.wait(timeout=10)
        assert not os.path.exists(p.settings["pidfile"])
    finally:
        p.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run pgwarden as another user")
def test_switch_user_needs_root(pgwarden_bin, pg):
    p, nobody = _nobody_pooler(pgwarden_bin, pg)
    try:
        # pgwarden_bin may sit in a directory nobody cannot enter: run a copy.
        tmp = tempfile.mkdtemp(prefix="pgwarden-bin-")
        os.chmod(tmp, 0o755)
        binary = shutil.copy(pgwarden_bin, tmp)
        try:
            out = _run([binary, "-u", "root", p.ini], user="nobody", cwd=tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        assert out.returncode == 3, out
        assert "needs root" in out.stderr, out.stderr
        assert not _listening(p.port)
        out = _run([pgwarden_bin, "-u", "no-such-user-here", p.ini])
        assert out.returncode == 3 and "no-such-user-here" in out.stderr, out
    finally:
        p.stop()


# ---- 4. listen_addr = * ----

def _ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_listen_everywhere_ipv4_and_ipv6(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, settings={"listen_addr": "*", "admin_users": "postgres"})
    p.start()
    try:
        assert _serves(p, "127.0.0.1")
        with psycopg.connect(p.dsn()) as c:
            rows = console_rows(p, "SHOW CLIENTS")
            addrs = {r["addr"] for r in rows}
            # An IPv4 client of the dual-stack socket shows as IPv4, not ::ffff:127.0.0.1.
            assert "127.0.0.1" in addrs and not any("ffff" in a for a in addrs), rows
            c.execute("SELECT 1")
        if not _ipv6_loopback():
            pytest.skip("no IPv6 loopback on this machine")
        assert _serves(p, "::1")
    finally:
        p.stop()


# ---- 5. unix socket mode and group ----

def _socket_file(p):
    return os.path.join(p.dir, f".s.PGSQL.{p.port}")


def _a_group_other_than_ours():
    """A group this process is not in by default (postgres where it exists), else our own."""
    import grp
    try:
        return grp.getgrnam("postgres")
    except KeyError:
        return grp.getgrgid(os.getgid())


def test_unix_socket_default_mode(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg).start()
    try:
        st = os.stat(_socket_file(p))
        assert st.st_mode & 0o7777 == 0o777, oct(st.st_mode)
        assert st.st_gid == os.getgid()
        assert "unix_socket" not in p.log(), p.log()
    finally:
        p.stop()


def test_unix_socket_mode_and_group(pgwarden_bin, pg):
    """As PgBouncer: the socket file gets unix_socket_group, then unix_socket_mode (octal), so
    that the file decides which local users may connect."""
    g = _a_group_other_than_ours()
    p = Pooler(pgwarden_bin, pg,
               settings={"unix_socket_mode": "0750", "unix_socket_group": g.gr_name}).start()
    try:
        st = os.stat(_socket_file(p))
        assert st.st_mode & 0o7777 == 0o750, oct(st.st_mode)
        assert st.st_gid == g.gr_gid, (st.st_gid, g)
        assert "not supported" not in p.log(), p.log()
        # Still a working socket for those allowed (root here, or the owner).
        with psycopg.connect(host=p.dir, port=p.port, user="postgres", dbname="postgres",
                             password="", connect_timeout=10) as c:
            assert c.execute("SELECT 1").fetchone() == (1,)
        # Read at start only: a reload leaves the file as it is.
        p.settings["unix_socket_mode"] = "0700"
        p.write_config()
        p.signal(signal.SIGHUP)
        wait_for(lambda: p.log().count("configuration reloaded") >= 1, what="the reload")
        assert "unix_socket_mode, unix_socket_group, pkt_buf and disable_pqexec changes need a " \
            "restart" in p.log()
        assert os.stat(_socket_file(p)).st_mode & 0o7777 == 0o750
    finally:
        p.stop()
    # A group given by number is taken as it is.
    p = Pooler(pgwarden_bin, pg,
               settings={"unix_socket_mode": "0660", "unix_socket_group": str(g.gr_gid)}).start()
    try:
        st = os.stat(_socket_file(p))
        assert st.st_mode & 0o7777 == 0o660 and st.st_gid == g.gr_gid, (oct(st.st_mode), st)
    finally:
        p.stop()


def test_unix_socket_bad_group_or_mode_stops_start(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, settings={"unix_socket_group": "no-such-group-here"})
    try:
        with pytest.raises(RuntimeError, match="no-such-group-here"):
            p.start()
    finally:
        p.stop()
    p = Pooler(pgwarden_bin, pg, settings={"unix_socket_mode": "rw-rw----"})
    try:
        with pytest.raises(RuntimeError, match="unix_socket_mode"):
            p.start()
    finally:
        p.stop()


# ---- 6. syslog ----
#
# glibc's syslog() writes to /dev/log and nowhere else. To read what pgwarden sends, it runs
# in a private mount namespace (unshare -m, needs root) whose /dev is a fresh tmpfs holding
# the few devices a process needs and /dev/log, a link to a datagram socket this test reads.
# The host's /dev is not touched.

_SYSLOG_WRAPPER = """#!/bin/sh
exec unshare --mount --propagation private sh -c '
set -e
mkdir -p "$0/olddev"
mount --bind /dev "$0/olddev"
mount -t tmpfs -o mode=755 tmpfs /dev
for d in null zero random urandom; do
    touch /dev/$d
    mount --bind "$0/olddev/$d" /dev/$d
done
ln -s /proc/self/fd /dev/fd
ln -s "$0/log.sock" /dev/log
exec "$@"' "{dir}" "{binary}" "$@"
"""


def _syslog_pooler(pgwarden_bin, pg, settings):
    """A Pooler whose /dev/log is a datagram socket in its directory, and that socket."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("reading syslog needs root and unshare (a private /dev/log)")
    p = Pooler(pgwarden_bin, pg, settings=settings)
    wrapper = os.path.join(p.dir, "in-own-dev.sh")
    with open(wrapper, "w") as f:
        f.write(_SYSLOG_WRAPPER.replace("{dir}", p.dir).replace("{binary}", pgwarden_bin))
    os.chmod(wrapper, 0o755)
    probe = subprocess.run([wrapper, "--version"], capture_output=True, text=True)
    if probe.returncode != 0:
        shutil.rmtree(p.dir, ignore_errors=True)
        pytest.skip(f"no private mount namespace here: {probe.stderr.strip()}")
    p.binary = wrapper
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(os.path.join(p.dir, "log.sock"))
    return p, rx


class _Syslog:
    """Datagrams received so far, parsed: (facility, severity, ident, message)."""

    def __init__(self, rx):
        self.rx = rx
        self.seen = []

    def _drain(self, timeout):
        self.rx.settimeout(timeout)
        try:
            while True:
                raw = self.rx.recv(65536).decode(errors="replace")
                # <PRI>Mmm dd hh:mm:ss ident[pid]: message
                assert raw.startswith("<"), raw
                pri, rest = raw[1:].split(">", 1)
                head, msg = rest[16:].split(": ", 1)
                ident = head.split("[", 1)[0]
                self.seen.append((int(pri) >> 3, int(pri) & 7, ident, msg))
                self.rx.settimeout(0)
        except (BlockingIOError, socket.timeout):
            pass

    def wait(self, pred, what):
        deadline = time.time() + 15
        while time.time() < deadline:
            for m in self.seen:
                if pred(m):
                    return m
            self._drain(0.2)
        raise AssertionError(f"no syslog message {what}; got {self.seen}")

    def new_since(self, n):
        self._drain(0)
        return self.seen[n:]


LOG_LOCAL2, LOG_USER = 18, 1  # facility numbers (the LOG_* codes >> 3)
LOG_WARNING, LOG_INFO = 4, 6


def test_syslog_lines_ident_facility_and_reload(pgwarden_bin, pg):
    p, rx = _syslog_pooler(pgwarden_bin, pg, {"syslog": "1", "syslog_ident": "pgw-test",
                                              "syslog_facility": "local2",
                                              "some_future_key": "1"})
    log = _Syslog(rx)
    try:
        p.start()
        # The load's warnings reach syslog too, with PgBouncer's level mapping.
        w = log.wait(lambda m: "unknown key 'some_future_key'" in m[3], "for the config warning")
        assert w[:3] == (LOG_LOCAL2, LOG_WARNING, "pgw-test"), w
        assert w[3].startswith("config: "), w
        with psycopg.connect(p.dsn()) as c:
            c.execute("SELECT 1")
        m = log.wait(lambda m: m[3].startswith("pool: ") and "login" in m[3], "for the login")
        assert m[:3] == (LOG_LOCAL2, LOG_INFO, "pgw-test"), m
        assert "not supported" not in p.log(), p.log()
        # The logfile still gets every line.
        assert "unknown key 'some_future_key'" in p.log()

        # A reload changes ident and facility.
        p.settings.update({"syslog_ident": "pgw-two", "syslog_facility": "user"})
        p.write_config()
        p.signal(signal.SIGHUP)
        m = log.wait(lambda m: "configuration reloaded" in m[3], "for the reload")
        assert m[:3] == (LOG_USER, LOG_INFO, "pgw-two"), m

        # And turns it off: the logfile goes on, syslog hears nothing more.
        p.settings["syslog"] = "0"
        p.write_config()
        p.signal(signal.SIGHUP)
        wait_for(lambda: p.log().count("configuration reloaded") >= 2, what="the second reload")
        # "SIGHUP: reloading" comes before the new configuration applies, the rest after.
        n = len(log.new_since(0))
        assert log.seen[-1][3] == "serve: SIGHUP: reloading", log.seen
        with psycopg.connect(p.dsn()) as c:
            c.execute("SELECT 1")
        wait_for(lambda: p.log().count("login") >= 2, what="the second login in the logfile")
        assert log.new_since(n) == [], log.seen[n:]
    finally:
        p.stop()
        rx.close()


def test_daemon_with_syslog_and_no_logfile(pgwarden_bin, pg):
    """As PgBouncer: -d needs a pidfile; with syslog on, no logfile is needed."""
    p, rx = _syslog_pooler(pgwarden_bin, pg, {"syslog": "1", "syslog_ident": "pgw-daemon"})
    log = _Syslog(rx)
    del p.settings["logfile"]
    pidfile = _with_pidfile(p)
    pid = None
    try:
        out = _run([p.binary, "-d", p.ini])
        assert out.returncode == 0, out
        pid = _read_pid(pidfile)
        assert _serves(p)
        m = log.wait(lambda m: m[2] == "pgw-daemon" and m[1] == LOG_INFO, "from the daemon")
        assert m[0] == 3, m  # daemon, PgBouncer's default facility
        # A second one is refused (the pidfile names a live process): the reason is on the
        # caller's stderr and, with no logfile, in syslog.
        out = _run([p.binary, "-d", p.ini])
        assert out.returncode == 3, out
        m = log.wait(lambda m: "not starting" in m[3], "for the refusal")
        assert m[1] == 3, m  # LOG_ERR
        os.kill(pid, signal.SIGTERM)
        assert _wait_gone(pid)
        log.wait(lambda m: "shut down" in m[3], "for the shutdown")
    finally:
        if pid:
            _stop_pid(pid)
        p.stop()
        rx.close()


# ---- 7. tcp_socket_buffer ----

def _skmem(local_port=None, remote_port=None):
    """rb and tb (receive and send buffer sizes) of the established loopback TCP sockets with
    that local or remote port, as ss -m reports them."""
    flt = f"sport = :{local_port}" if local_port else f"dport = :{remote_port}"
    out = subprocess.run(["ss", "-tmnH", "state", "established", f"( {flt} )"],
                         capture_output=True, text=True, check=True).stdout
    found = []
    for part in out.split("skmem:(")[1:]:
        fields = part.split(")")[0].split(",")  # r0,rb131072,t0,tb87040,...
        size = {f[:2]: int(f[2:]) for f in fields if f[:2] in ("rb", "tb")}
        found.append((size["rb"], size["tb"]))
    return found


def test_tcp_socket_buffer(pgwarden_bin, pg):
    """As PgBouncer: SO_SNDBUF and SO_RCVBUF on the client and the server TCP sockets (Linux
    reports twice the value set); a reload changes it for the next connections."""
    if not shutil.which("ss"):
        pytest.skip("needs ss (iproute2)")
    p = Pooler(pgwarden_bin, pg, server_via="tcp", pool_mode="session",
               settings={"tcp_socket_buffer": "32768"}).start()
    try:
        with psycopg.connect(p.dsn()) as c:
            c.execute("SELECT 1")
            clients = _skmem(local_port=p.port)
            assert clients == [(65536, 65536)], clients
            # The pooler's server connection: a socket to PostgreSQL's port whose peer is not
            # a pooler client (PostgreSQL's own ends have PostgreSQL's port as local port).
            servers = _skmem(remote_port=pg.port)
            assert (65536, 65536) in servers, servers
        assert "not supported" not in p.log(), p.log()
        p.settings["tcp_socket_buffer"] = "16384"
        p.write_config()
        p.signal(signal.SIGHUP)
        wait_for(lambda: "configuration reloaded" in p.log(), what="the reload")
        with psycopg.connect(p.dsn()) as c:
            c.execute("SELECT 1")
            assert _skmem(local_port=p.port) == [(32768, 32768)], _skmem(local_port=p.port)
    finally:
        p.stop()

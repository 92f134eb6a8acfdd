"""auth_type = hba (auth_hba_file, auth_ident_file), cert and peer against the real
PostgreSQL: every line type and method, the first matching line deciding, one failure message
whatever failed, client certificates, the unix socket peer, and broken files at start and at
reload."""
import os
import pwd
import signal
import subprocess
import tempfile

import psycopg
import pytest

from pgfixture import ROOT
from serve_helpers import Pooler, wait_for

OS_USER = pwd.getpwuid(os.geteuid()).pw_name

# Every record type and method. Lines are ordered so that each test connection shows which
# line decided: a hostssl line a plain connection must not match, a rejecting line before one
# that would let the user in, a +group line that is skipped, @file, sameuser, IPv6.
HBA = f"""
# unix socket: the OS user may be trust_user (map), nobody else gets in
local     all               trust_user                    peer map=osmap
local     all               all                           reject
hostssl   all               app_user     127.0.0.1/32     reject
hostnossl all               app_user     127.0.0.1/32     md5
host      all               md5_user     127.0.0.1 255.255.255.255   password
host      all               +admins,trust_user  all       reject
host      all               trust_user   127.0.0.1/32     trust
host      all               nopriv       127.0.0.1/32     reject
host      @dbs.txt          monitor      all              scram-sha-256
host      sameuser          all          127.0.0.1/32     md5
host      all               all          ::1/128          md5
host      postgres          all          127.0.0.1/32     md5
"""


def hba_pooler(pgwarden_bin, pg, hba=HBA, ident=None, settings=None, **kw):
    conf = {"auth_type": "hba"}
    conf.update(settings or {})
    p = Pooler(pgwarden_bin, pg, settings=conf, **kw)
    write_hba(p, hba, ident)
    return p


def write_hba(p, hba, ident=None):
    with open(os.path.join(p.dir, "hba.conf"), "w") as f:
        f.write(hba)
    with open(os.path.join(p.dir, "dbs.txt"), "w") as f:
        f.write("# databases monitor may use\npostgres\n")
    with open(os.path.join(p.dir, "ident.conf"), "w") as f:
        f.write(ident if ident is not None else f"osmap  {OS_USER}  trust_user\n")
    p.settings["auth_hba_file"] = "hba.conf"  # relative to the config file
    p.settings["auth_ident_file"] = os.path.join(p.dir, "ident.conf")
    p.write_config()


def who(dsn):
    with psycopg.connect(dsn) as c:
        return c.execute("SELECT current_user").fetchone()[0]


def failure(dsn):
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(dsn)
    return str(e.value)


def same_text(msgs, users):
    """The server's words of each failure, with the user name taken out."""
    out = set()
    for m, u in zip(msgs, users):
        out.add(m.split("connection to server")[-1].split(":", 2)[-1].replace(u, "USER").strip())
    return out


def test_every_line_type_and_method(pgwarden_bin, pg):
    p = hba_pooler(pgwarden_bin, pg).start()
    try:
        # hostssl ... reject is not matched over plain TCP: hostnossl's md5 lets app_user in.
        assert who(p.dsn("app_user", "appdb")) == "app_user"
        # address + netmask, cleartext password
        assert who(p.dsn("md5_user", "postgres")) == "md5_user"
        # the +group line is skipped (and said so), so trust_user reaches its trust line
        assert who(p.dsn("trust_user", "postgres", password="")) == "trust_user"
        assert "+group skipped" in p.log()
        # @file for databases, scram-sha-256
        assert who(p.dsn("monitor", "postgres")) == "monitor"
        # Failures: wrong password, unknown user, a rejecting line with the right password,
        # no matching line (monitor to appdb) -- one message.
        cases = [("app_user", "appdb", "wrong"), ("ghost", "postgres", "wrong"),
                 ("nopriv", "postgres", None), ("monitor", "appdb", None)]
        msgs = [failure(p.dsn(u, d, password=pw)) for u, d, pw in cases]
        assert all("password authentication failed" in m for m in msgs), msgs
        assert len(same_text(msgs, [c[0] for c in cases])) == 1, msgs
        # the unix socket: peer through the ident map; anyone else meets the reject line
        assert who(f"host={p.dir} port={p.port} user=trust_user dbname=postgres") == "trust_user"
        m = failure(f"host={p.dir} port={p.port} user=app_user dbname=appdb password=app-pw")
        assert "password authentication failed" in m
        assert p.alive()
    finally:
        p.stop()


def test_peer_without_a_map_needs_the_same_name(pgwarden_bin, pg):
    """Peer without map=: the Unix user must be the database user. The test's OS user is no
    PostgreSQL role, so a mapped line is what lets it in; unmapped, trust_user is refused."""
    userlist = {"trust_user": "", OS_USER: ""}
    p = hba_pooler(pgwarden_bin, pg, hba="local all all peer\n", ident="",
                   userlist=userlist).start()
    try:
        m = failure(f"host={p.dir} port={p.port} user=trust_user dbname=postgres")
        assert "peer authentication failed" in m
        # the same name gets past the pooler's check (the server then refuses the role)
        m = failure(f"host={p.dir} port={p.port} user={OS_USER} dbname=postgres")
        assert "peer authentication failed" not in m
    finally:
        p.stop()


def test_auth_type_peer(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, settings={"auth_type": "peer"}).start()
    try:
        m = failure(f"host={p.dir} port={p.port} user=trust_user dbname=postgres")
        assert "peer authentication failed" in m
        m = failure(p.dsn("trust_user", "postgres", password=""))  # TCP: never peer
        assert "peer authentication failed" in m
    finally:
        p.stop()


@pytest.fixture(scope="module")
def certs():
    d = tempfile.mkdtemp(prefix="pgwarden-hba-certs-")
    subprocess.run([os.path.join(ROOT, "scripts", "make-test-certs"), d, "app_user"], check=True,
                   capture_output=True)
    return d


def cert_settings(certs, auth_type):
    return {"auth_type": auth_type,
            "client_tls_sslmode": "verify-ca",
            "client_tls_key_file": os.path.join(certs, "server.key"),
            "client_tls_cert_file": os.path.join(certs, "server.crt"),
            "client_tls_ca_file": os.path.join(certs, "ca.crt")}


def cert_dsn(p, certs, user, dbname="appdb", cert="client"):
    return (f"host=localhost port={p.port} user={user} dbname={dbname} sslmode=verify-ca "
            f"sslrootcert={os.path.join(certs, 'ca.crt')} "
            f"sslcert={os.path.join(certs, cert + '.crt')} "
            f"sslkey={os.path.join(certs, cert + '.key')} connect_timeout=10")


@pytest.mark.parametrize("auth_type", ["cert", "hba"])
def test_cert(pgwarden_bin, pg, certs, auth_type):
    """The client certificate's CN (app_user) is the user; with hba, a map lets the same
    certificate log in as trust_user too."""
    p = Pooler(pgwarden_bin, pg, settings=cert_settings(certs, auth_type))
    if auth_type == "hba":
        write_hba(p, "hostssl all app_user 127.0.0.1/32 cert\n"
                     "hostssl all trust_user 127.0.0.1/32 cert map=certs\n",
                  ident="certs app_user trust_user\n")
    p.start()
    try:
        assert who(cert_dsn(p, certs, "app_user")) == "app_user"
        m = failure(cert_dsn(p, certs, "md5_user", "postgres") + " password=x")  # CN differs
        if auth_type == "cert":
            assert "certificate authentication failed" in m
            return
        assert "password authentication failed" in m  # no line for md5_user
        assert who(cert_dsn(p, certs, "trust_user", "postgres")) == "trust_user"
    finally:
        p.stop()


def test_hba_cert_under_require_asks_for_a_certificate(pgwarden_bin, pg, certs):
    """client_tls_sslmode = require with a client_tls_ca_file asks for a certificate without
    demanding one (PostgreSQL's and PgBouncer's rule): a cert line works, a client without a
    certificate fails that line, and one whose certificate no CA vouches for fails the
    handshake."""
    conf = cert_settings(certs, "hba")
    conf["client_tls_sslmode"] = "require"
    p = Pooler(pgwarden_bin, pg, settings=conf)
    write_hba(p, "hostssl all trust_user 127.0.0.1/32 cert map=certs\n",
              ident="certs app_user trust_user\n")
    p.start()
    try:
        assert who(cert_dsn(p, certs, "trust_user", "postgres")) == "trust_user"
        m = failure(f"host=localhost port={p.port} user=trust_user dbname=postgres "
                    f"sslmode=require sslcert=/nonexistent sslkey=/nonexistent "
                    f"connect_timeout=10")
        assert "certificate authentication failed" in m, m
        wait_for(lambda: "cert identity (none) does not allow user trust_user" in p.log(),
                 what="the refusal logged")
        m = failure(cert_dsn(p, certs, "trust_user", "postgres", cert="untrusted"))
        assert "unknown ca" in m, m
        assert who(cert_dsn(p, certs, "trust_user", "postgres")) == "trust_user"
    finally:
        p.stop()


def test_auth_type_cert_needs_a_verifying_tls_mode(pgwarden_bin, pg, certs):
    conf = cert_settings(certs, "cert")
    conf["client_tls_sslmode"] = "require"
    with pytest.raises(RuntimeError) as e:
        Pooler(pgwarden_bin, pg, settings=conf).start()
    assert "auth_type cert needs client_tls_sslmode verify-ca" in str(e.value)


@pytest.mark.parametrize("bad,why", [
    ("host all all 10.0.0.0/33 md5\n", "hba.conf:1: not an IPv4 or IPv6 address block"),
    ("local all all trust\nhost all all all ldap\n", "hba.conf:2: unknown or unsupported"),
    ("hostssl all all all cert map=nosuch\n", "map=nosuch is not defined"),
    ("host @missing.txt all all md5\n", "cannot read an @file"),
])
def test_malformed_hba_at_start(pgwarden_bin, pg, bad, why):
    p = hba_pooler(pgwarden_bin, pg, hba=bad)
    with pytest.raises(RuntimeError) as e:
        p.start()
    assert why in str(e.value)


def test_missing_hba_file_at_start(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, settings={"auth_type": "hba",
                                           "auth_hba_file": "/nonexistent/hba.conf"})
    with pytest.raises(RuntimeError) as e:
        p.start()
    assert "/nonexistent/hba.conf" in str(e.value)


def test_reload_reads_the_hba_file_and_keeps_it_when_broken(pgwarden_bin, pg):
    p = hba_pooler(pgwarden_bin, pg, hba="host all all 127.0.0.1/32 trust\n").start()
    try:
        assert who(p.dsn("trust_user", "postgres", password="")) == "trust_user"
        # a good change applies
        write_hba(p, "host all trust_user 127.0.0.1/32 reject\nhost all all 127.0.0.1/32 md5\n")
        p.signal(signal.SIGHUP)
        wait_for(lambda: p.log().count("configuration reloaded") >= 1, what="reload")
        assert "password authentication failed" in failure(
            p.dsn("trust_user", "postgres", password="x"))
        assert who(p.dsn("app_user", "appdb")) == "app_user"
        # a broken one is refused with its reason; the rules above stay
        write_hba(p, "host all all all md5 extra=1\n")
        p.signal(signal.SIGHUP)
        wait_for(lambda: "reload failed" in p.log(), what="refused reload")
        assert "hba.conf:1: unsupported option" in p.log()
        assert who(p.dsn("app_user", "appdb")) == "app_user"
        assert "password authentication failed" in failure(
            p.dsn("trust_user", "postgres", password="x"))
        assert p.alive()
    finally:
        p.stop()


def client_cert(certs, name, cns, expired=False):
    """A client certificate signed by the test CA with the common names cns (in order; any
    text, empty or with a NUL), valid now or only in 2019 (expired); returns its name for
    cert_dsn."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    with open(os.path.join(certs, "ca.key"), "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), None)
    with open(os.path.join(certs, "ca.crt"), "rb") as f:
        ca = x509.load_pem_x509_certificate(f.read())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = ((datetime.datetime(2019, 1, 1), datetime.datetime(2020, 1, 1)) if expired
                  else (now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn, _validate=False)
                         for cn in cns])
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .sign(ca_key, hashes.SHA256()))
    with open(os.path.join(certs, name + ".crt"), "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(os.path.join(certs, name + ".key"), "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.chmod(os.path.join(certs, name + ".key"), 0o600)
    return name


@pytest.mark.parametrize("sslmode", ["require", "verify-ca"])
def test_expired_client_certificate_never_passes_a_cert_line(pgwarden_bin, pg, certs, sslmode):
    """A certificate the CA signed for the right name, but expired: the handshake fails,
    whether client_tls_ca_file asks for a certificate (require) or demands one (verify-ca)."""
    conf = cert_settings(certs, "hba")
    conf["client_tls_sslmode"] = sslmode
    p = Pooler(pgwarden_bin, pg, settings=conf)
    write_hba(p, "hostssl all app_user 127.0.0.1/32 cert\n")
    p.start()
    try:
        expired = client_cert(certs, "expired_app_user", ["app_user"], expired=True)
        m = failure(cert_dsn(p, certs, "app_user", cert=expired))
        assert "certificate expired" in m, m
        # The pooler logs the handshake's failure after its alert has gone to the client.
        wait_for(lambda: "certificate has expired" in p.log(), what="the failure logged")
        assert who(cert_dsn(p, certs, "app_user")) == "app_user"
    finally:
        p.stop()


@pytest.mark.parametrize("cns,passes", [
    (["app_user"], True),
    (["app_user", "nobody"], True),     # the first CN counts, as in PostgreSQL
    (["nobody", "app_user"], False),
    ([""], False),
    (["app_user\0evil"], False),        # an embedded NUL is no name
    ([], False),                         # no CN at all
], ids=["cn", "first-of-two", "second-of-two", "empty", "nul", "none"])
def test_client_certificate_common_names(pgwarden_bin, pg, certs, cns, passes):
    """Only the first common name of a trusted certificate, whole, is the identity a cert line
    checks."""
    p = Pooler(pgwarden_bin, pg, settings=cert_settings(certs, "hba"))
    write_hba(p, "hostssl all app_user 127.0.0.1/32 cert\n")
    p.start()
    try:
        name = client_cert(certs, f"cn{len(cns)}_" + "_".join(c.replace("\0", "NUL") for c in cns),
                           cns)
        dsn = cert_dsn(p, certs, "app_user", cert=name)
        if passes:
            assert who(dsn) == "app_user"
        else:
            assert "certificate authentication failed" in failure(dsn)
    finally:
        p.stop()

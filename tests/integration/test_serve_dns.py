"""Server host names and PgBouncer's DNS keys: resolv_conf names the resolver (here a DNS
server of the test's, so no namespace is needed), dns_max_ttl bounds how long an answer is
reused, dns_nxdomain_ttl how long a failed lookup fails new logins without asking again."""
import os
import signal
import time

import psycopg
import pytest

from fake_dns import FakeDns
from serve_helpers import Pooler, console_rows, wait_for

NAME = "pgwarden-dns-keys.invalid-host"


def _pooler(pgwarden_bin, pg, dns, **settings):
    p = Pooler(pgwarden_bin, pg, pool_mode="session",
               databases={"named": f"host={NAME} port={pg.port} dbname=appdb"},
               settings={"server_login_retry": "0",
                         # each client gets a new server connection, so each login needs
                         # the address: from the cache or from DNS
                         "server_lifetime": "0",
                         "server_connect_timeout": "3",
                         "query_wait_timeout": "5",
                         **settings})
    resolv = os.path.join(p.dir, "resolv.conf")
    with open(resolv, "w") as f:
        f.write(f"nameserver 127.0.0.1:{dns.port}\noptions timeout:1 attempts:1\n")
    p.settings["resolv_conf"] = resolv
    p.write_config()
    return p.start()


def _login(p):
    """(True, None) when a query runs through the named database, else (False, message)."""
    try:
        with psycopg.connect(p.dsn(dbname="named"), connect_timeout=10) as c:
            c.execute("SELECT 1")
            return True, None
    except psycopg.Error as e:
        return False, str(e)


@pytest.fixture
def dns():
    d = FakeDns(NAME)
    yield d
    d.close()


def test_resolv_conf_names_the_resolver(pgwarden_bin, pg, dns):
    dns.mode = "answer"
    p = _pooler(pgwarden_bin, pg, dns)
    try:
        ok, err = _login(p)
        assert ok, err + p.log()
        assert dns.queries > 0  # only this server knows the name
    finally:
        p.stop()


def test_dns_max_ttl_reuses_then_asks_again(pgwarden_bin, pg, dns):
    dns.mode = "answer"
    p = _pooler(pgwarden_bin, pg, dns, dns_max_ttl="2")
    try:
        assert _login(p)[0]
        asked = dns.queries
        # A new server within the TTL: the cached address, no question.
        assert _login(p)[0]
        assert dns.queries == asked
        # Past the TTL the name is looked up again: now it no longer resolves.
        dns.mode = "nxdomain"
        time.sleep(2.5)
        ok, err = _login(p)
        assert not ok and "server DNS lookup failed" in err, err
        assert dns.queries > asked
    finally:
        p.stop()


def test_dns_nxdomain_ttl_remembers_a_failure(pgwarden_bin, pg, dns):
    p = _pooler(pgwarden_bin, pg, dns, dns_nxdomain_ttl="3")
    try:
        ok, err = _login(p)
        assert not ok and f"cannot resolve {NAME}" in err, err
        asked = dns.queries
        assert asked > 0
        first_failure = time.monotonic()
        # The name resolves now, but the failure is remembered: no question, same error.
        dns.mode = "answer"
        ok, err = _login(p)
        assert not ok and f"cannot resolve {NAME}" in err, err
        assert dns.queries == asked
        time.sleep(max(0.0, 3.3 - (time.monotonic() - first_failure)))
        ok, err = _login(p)
        assert ok, err
        assert dns.queries > asked
    finally:
        p.stop()


def test_dns_nxdomain_ttl_zero_asks_every_time(pgwarden_bin, pg, dns):
    p = _pooler(pgwarden_bin, pg, dns, dns_nxdomain_ttl="0")
    try:
        assert not _login(p)[0]
        dns.mode = "answer"
        ok, err = _login(p)
        assert ok, err
    finally:
        p.stop()


@pytest.mark.parametrize("content,why", [(None, "cannot open it"),
                                         ("options timeout:1\n", "it lists no nameserver")])
def test_unusable_resolv_conf_stops_start(pgwarden_bin, pg, content, why):
    p = Pooler(pgwarden_bin, pg)
    path = os.path.join(p.dir, "resolv.conf")
    if content is not None:
        with open(path, "w") as f:
            f.write(content)
    p.settings["resolv_conf"] = path
    p.write_config()
    try:
        with pytest.raises(RuntimeError, match=f"resolv_conf {path}: {why}"):
            p.start()
    finally:
        p.stop()


def test_resolv_conf_change_needs_a_restart(pgwarden_bin, pg, dns):
    """resolv_conf is read at start (PgBouncer's too): a reload that changes it says so and
    keeps showing the file in use, not one that was never read."""
    dns.mode = "answer"
    p = _pooler(pgwarden_bin, pg, dns, admin_users="postgres")
    try:
        used = p.settings["resolv_conf"]
        other = os.path.join(p.dir, "other-resolv.conf")
        with open(other, "w") as f:
            f.write("nameserver 127.0.0.1:9\n")
        p.settings["resolv_conf"] = other
        p.write_config()
        p.signal(signal.SIGHUP)
        wait_for(lambda: "resolv_conf" in p.log() and "need a restart" in p.log(),
                 what="the reload's warning")
        rows = console_rows(p, "SHOW CONFIG")
        assert [r["value"] for r in rows if r["key"] == "resolv_conf"] == [used], rows
        ok, err = _login(p)
        assert ok, err + p.log()
    finally:
        p.stop()

"""The admin console's tables as PgBouncer 1.25 sends them: every SHOW command with its
columns in order and their types (int4, int8, numeric, text), so typed clients and exporters
written for PgBouncer parse pgwarden's answers. The golden lists below are PgBouncer 1.25's
(doc/usage.md and the types its console declares); changing one means a client may break."""
import psycopg
import pytest

from serve_helpers import Pooler

TEXT, INT4, INT8, NUMERIC = 25, 23, 20, 1700


def cols(spec):
    """'name:i, other' -> [(name, oid)] with PgBouncer's type letters."""
    types = {"": TEXT, "i": INT4, "q": INT8, "N": NUMERIC, "T": TEXT}
    out = []
    for item in spec.split():
        name, _, t = item.partition(":")
        out.append((name, types[t]))
    return out


SOCKETS = ("type user database replication state addr port:i local_addr local_port:i "
           "connect_time:T request_time:T wait:i wait_us:i close_needed:i ptr link remote_pid:i "
           "tls application_name prepared_statements:i id:q")
SOCKETS_DEBUG = SOCKETS + (" recv_pos:i pkt_pos:i pkt_remain:i send_pos:i send_remain:i "
                           "pkt_avail:i send_avail:i")
STATS_COUNTERS = ("server_assignment_count xact_count query_count {recv} {sent} xact_time "
                  "query_time wait_time {cp} {sp} {b}")

GOLDEN = {
    "SHOW POOLS": "database user cl_active:i cl_waiting:i cl_active_cancel_req:i "
                  "cl_waiting_cancel_req:i sv_active:i sv_active_cancel:i sv_being_canceled:i "
                  "sv_idle:i sv_used:i sv_tested:i sv_login:i maxwait:i maxwait_us:i pool_mode "
                  "load_balance_hosts",
    "SHOW PEER_POOLS": "peer_id:i cl_active_cancel_req:i cl_waiting_cancel_req:i "
                       "sv_active_cancel:i sv_login:i",
    "SHOW STATS": "database " + " ".join(
        f"total_{c}:N" for c in STATS_COUNTERS.format(
            recv="received", sent="sent", cp="client_parse_count", sp="server_parse_count",
            b="bind_count").split()) + " " + " ".join(
        f"avg_{c}:N" for c in STATS_COUNTERS.format(
            recv="recv", sent="sent", cp="client_parse_count", sp="server_parse_count",
            b="bind_count").split()),
    "SHOW STATS_TOTALS": "database " + " ".join(
        f"{c}:N" for c in STATS_COUNTERS.format(
            recv="bytes_received", sent="bytes_sent", cp="client_parse_count",
            sp="server_parse_count", b="bind_count").split()),
    "SHOW STATS_AVERAGES": "database " + " ".join(
        f"{c}:N" for c in STATS_COUNTERS.format(
            recv="bytes_received", sent="bytes_sent", cp="avg_client_parse_count",
            sp="avg_server_parse_count", b="avg_bind_count").split()),
    "SHOW TOTALS": "name value:N",
    "SHOW SERVERS": SOCKETS,
    "SHOW CLIENTS": SOCKETS,
    "SHOW SOCKETS": SOCKETS_DEBUG,
    "SHOW ACTIVE_SOCKETS": SOCKETS_DEBUG,
    "SHOW LISTS": "list items:i",
    "SHOW USERS": "name pool_size reserve_pool_size pool_mode max_user_connections:i "
                  "current_connections:i max_user_client_connections:i "
                  "current_client_connections:i",
    "SHOW DATABASES": "name host port:i database force_user pool_size:i min_pool_size:i "
                      "reserve_pool_size:i server_lifetime:i pool_mode load_balance_hosts "
                      "max_connections:i current_connections:i max_client_connections:i "
                      "current_client_connections:i paused:i disabled:i",
    "SHOW PEERS": "peer_id:i host port:i pool_size:i",
    "SHOW FDS": "fd:i task user database addr port:i cancel:q link:i client_encoding "
                "std_strings datestyle timezone password scram_client_key scram_server_key",
    "SHOW CONFIG": "key value default changeable",
    "SHOW MEM": "name size:i used:i free:i memtotal:i",
    "SHOW DNS_HOSTS": "hostname ttl:q addrs",
    "SHOW DNS_ZONES": "zonename serial:q count:i",
    "SHOW VERSION": "version",
    "SHOW STATE": "key value",
}


@pytest.fixture(scope="module")
def pooler(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, settings={"admin_users": "postgres"}).start()
    yield p
    p.stop()


@pytest.mark.parametrize("command", sorted(GOLDEN))
def test_columns_and_types_match_pgbouncer(pooler, command):
    # A pooled client and its server, so the socket tables have rows to type-check too.
    with psycopg.connect(pooler.dsn(), autocommit=True) as c, \
            psycopg.connect(pooler.dsn("postgres", "pgbouncer", password=""),
                            autocommit=True) as admin:
        c.execute("SELECT 1")
        res = admin.pgconn.exec_(command.encode())
        assert res.status == psycopg.pq.ExecStatus.TUPLES_OK, res.error_message
        got = [(res.fname(i).decode(), res.ftype(i)) for i in range(res.nfields)]
        assert got == cols(GOLDEN[command]), command
        # Every value parses as its type says.
        for r in range(res.ntuples):
            for i, (name, oid) in enumerate(got):
                v = res.get_value(r, i)
                if v is not None and oid in (INT4, INT8, NUMERIC):
                    n = int(v)
                    if oid == INT4:
                        assert -2**31 <= n < 2**31, (command, name, v)


def test_show_help_is_a_notice(pooler):
    notices = []
    with psycopg.connect(pooler.dsn("postgres", "pgbouncer", password=""),
                         autocommit=True) as admin:
        admin.add_notice_handler(
            lambda d: notices.append((d.severity, d.message_primary, d.message_detail)))
        admin.pgconn.exec_(b"SHOW HELP")
        admin.execute("SHOW VERSION")  # notices are delivered with the next result
    assert notices and notices[0][:2] == ("NOTICE", "Console usage"), notices
    assert "SHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS" in notices[0][2]


def test_console_client_is_listed_in_show_clients(pooler):
    with psycopg.connect(pooler.dsn("postgres", "pgbouncer", password=""),
                         autocommit=True, application_name="golden-admin") as admin:
        res = admin.pgconn.exec_(b"SHOW CLIENTS")
        names = [res.fname(i).decode() for i in range(res.nfields)]
        rows = [{names[i]: (res.get_value(r, i) or b"").decode() for i in range(res.nfields)}
                for r in range(res.ntuples)]
        me = [r for r in rows if r["application_name"] == "golden-admin"]
        assert me and me[0]["database"] == "pgbouncer" and me[0]["type"] == "C", rows

"""What clients bring at login (startup parameters): a client must not keep others out with
the names it brought once it has left, and what the pooler makes of a client's values must be
something the server accepts."""
import struct

import psycopg
import pytest

from serve_helpers import (Pooler, data_row_values, error_fields, query_msg, raw_connect,
                           read_messages, read_until_readies)


def connect(p, user, db, options):
    return psycopg.connect(p.dsn(user, db, options=f"'{options}'"), autocommit=True)


def refused(p, user, db, options):
    with pytest.raises(psycopg.OperationalError) as e:
        connect(p, user, db, options).close()
    return str(e.value)


def test_startup_parameter_names_of_clients_that_left_make_room(pgwarden_bin, pg):
    """pgwarden follows a bounded number of startup parameter names. A user with no rights
    who logs in again and again, each time with a new made-up parameter, used to take every
    slot for the life of the process: any other client bringing a parameter not seen yet (PgJDBC's
    extra_float_digits) was refused from then on. Names no client, server or pool holds a value
    for any more now give their slot to new ones; names still in use keep theirs, and a value a
    server still holds keeps its name followed, so the next client on that server is RESET."""
    p = Pooler(pgwarden_bin, pg, auth_type="md5",
               settings={"default_pool_size": "1", "pool_mode": "transaction"}).start()
    try:
        # A client whose session value stays on the only server after it leaves.
        with connect(p, "app_user", "appdb", "-c work_mem=1234kB") as c:
            assert c.execute("SHOW work_mem").fetchone()[0] == "1234kB"
        # One user fills every free slot, holding each name with an open connection.
        held = []
        for i in range(30):
            try:
                held.append(connect(p, "nopriv", "postgres", f"-c x.junk{i}=1"))
            except psycopg.OperationalError as e:
                assert "too many different startup parameters" in str(e), e
                break
        else:
            pytest.fail("no limit on startup parameter names")
        assert len(held) >= 5
        # While they are held, a new name is refused: the limit stands, and work_mem's slot
        # was not taken from the value the server still has.
        assert "too many different startup parameters" in refused(
            p, "app_user", "appdb", "-c extra_float_digits=3")
        # The next client on that server gets the server's default, not the first client's.
        with connect(p, "app_user", "appdb", "-c x.junk0=1") as c:
            assert c.execute("SHOW work_mem").fetchone()[0] == "4MB"
        for c in held:
            c.close()
        # The made-up names are held by nobody now: a new client's parameter gets a slot.
        for i in range(40, 70):  # more new names than there are slots
            connect(p, "nopriv", "postgres", f"-c x.junk{i}=1").close()
        with connect(p, "app_user", "appdb", "-c extra_float_digits=3") as c:
            assert c.execute("SHOW extra_float_digits").fetchone()[0] == "3"
            assert c.execute("SHOW work_mem").fetchone()[0] == "4MB"
        assert p.alive()
    finally:
        p.stop()


def startup(params):
    """A StartupMessage of (name, value) byte strings: a client's names as bytes."""
    body = struct.pack("!I", 196608)
    for k, v in params:
        body += k + b"\0" + v + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


@pytest.mark.parametrize("add_host", ["0", "1"])
def test_application_name_in_any_encoding(pgwarden_bin, pg, add_host):
    """pgwarden gives a client's application_name to its servers in a SET, whose text the
    server refuses when it is not valid in its encoding: a client whose name was Latin-1
    (b"Caf\\xe9"), or one whose long UTF-8 name application_name_add_host cut inside a
    character, was ended at its first query ("server connection closed", 08006) and a server
    connection was closed with it. The name is cleaned as PostgreSQL 16 cleans it (each byte
    outside printable ASCII becomes \\xNN), and the client is told that value."""
    p = Pooler(pgwarden_bin, pg, auth_type="trust",
               settings={"application_name_add_host": add_host}).start()
    try:
        for name, want in ((b"Caf\xe9", "Caf\\xe9"), (b"tab\there", "tab\\x09here"),
                           (b"Caf\xc3\xa9", "Caf\\xc3\\xa9")):
            s = raw_connect(p.port)
            s.sendall(startup([(b"user", b"postgres"), (b"database", b"postgres"),
                               (b"application_name", name)]))
            welcome = read_messages(s, until=b"Z")
            told = [b.split(b"\0")[1].decode() for t, b in welcome
                    if t == b"S" and b.startswith(b"application_name\0")]
            s.sendall(query_msg("SELECT current_setting('application_name')"))
            got = read_until_readies(s, 1)
            s.close()
            rows = [data_row_values(b) for t, b in got if t == b"D"]
            assert rows and rows[0][0].startswith(want), (name, got)
            assert told == [rows[0][0]], (told, rows)
        # Long names in 2-, 3- and 4-byte characters, whatever add_host cuts.
        names = ["x" * j + ch * 210 for ch in ("é", "€", "\U0001F600") for j in range(4)]
        for name in names:
            with psycopg.connect(p.dsn(), application_name=name) as c:
                assert c.execute("SELECT 1").fetchone()[0] == 1, name
        with psycopg.connect(p.dsn(), application_name="plain") as c:
            got = c.execute("SELECT current_setting('application_name')").fetchone()[0]
            assert got == "plain" if add_host == "0" else got.startswith("plain - 127.0.0.1:")
        assert p.alive()
    finally:
        p.stop()


def test_startup_value_a_utf8_server_cannot_take_is_refused_at_login(pgwarden_bin, pg):
    """A startup value that is not UTF-8 (here search_path in Latin-1, given directly or in
    options) reaches the server in the pooler's SET, which a UTF8 server refuses: the client
    was ended at its first query with a bare 08006 and a server connection was closed. It is
    now refused at login with 22021 naming the parameter; the pool's servers stay, and valid
    UTF-8 values pass."""
    p = Pooler(pgwarden_bin, pg, auth_type="trust", settings={"default_pool_size": "1"}).start()
    try:
        with psycopg.connect(p.dsn(), autocommit=True) as c:  # the pool's one server
            assert c.execute("SELECT 1").fetchone()[0] == 1
        pid_before = pg.psql("SELECT pid FROM pg_stat_activity WHERE datname = 'postgres' "
                             "AND application_name = '' AND backend_type = 'client backend'")
        for params in ([(b"search_path", b"caf\xe9")], [(b"options", b"-c search_path=caf\xe9")]):
            s = raw_connect(p.port)
            s.sendall(startup([(b"user", b"postgres"), (b"database", b"postgres"), *params]))
            got = read_messages(s, until=b"Z")
            s.close()
            errors = [error_fields(b) for t, b in got if t == b"E"]
            assert errors and errors[0]["C"] == "22021", got
            assert '"search_path"' in errors[0]["M"], errors
            assert not any(t == b"Z" for t, _ in got), got
        with psycopg.connect(p.dsn(), autocommit=True, options="-c search_path=café") as c:
            assert "café" in c.execute("SHOW search_path").fetchone()[0]
        pid_after = pg.psql("SELECT pid FROM pg_stat_activity WHERE datname = 'postgres' "
                            "AND application_name = '' AND backend_type = 'client backend'")
        assert pid_before and pid_after == pid_before, (pid_before, pid_after, p.log())
        assert p.alive()
    finally:
        p.stop()

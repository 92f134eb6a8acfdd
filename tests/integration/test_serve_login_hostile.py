"""What clients bring at login (startup parameters): a client must not keep others out with
the names it brought once it has left, and what the pooler makes of a client's values must be
something the server accepts."""
import psycopg
import pytest

from serve_helpers import Pooler


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


def test_long_application_name_is_cut_between_characters(pgwarden_bin, pg):
    """application_name_add_host appends the client's address and cuts the result to fit (as
    PgBouncer does). A long name in 2-, 3- or 4-byte characters was cut inside one, the server
    refused the SET carrying it (invalid byte sequence for encoding "UTF8"), and the client was
    ended at its first query with "server connection closed"."""
    p = Pooler(pgwarden_bin, pg, auth_type="trust",
               settings={"application_name_add_host": "1"}).start()
    try:
        names = ["x" * j + ch * 210 for ch in ("é", "€", "\U0001F600") for j in range(4)]
        for name in names:
            with psycopg.connect(p.dsn(), application_name=name) as c:
                assert c.execute("SELECT 1").fetchone()[0] == 1, name
        # A short name still carries the address.
        with psycopg.connect(p.dsn(), application_name="short") as c:
            got = c.execute("SELECT current_setting('application_name')").fetchone()[0]
            assert got.startswith("short - 127.0.0.1:"), got
        assert p.alive()
    finally:
        p.stop()

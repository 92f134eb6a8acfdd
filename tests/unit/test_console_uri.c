/* Unit tests for the pgwarden:// target URI parser (console_source_parse_uri): user and
 * password %-decoding, IPv6 hosts, ports, the console databases, and refusals that never
 * quote the URI. tests/fuzz/fuzz_console_uri.c checks the same parser on any bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "inspect/console_source.h"

static bool parse(const char *uri, struct console_uri *u, struct inspect_error *err)
{
    memset(err, 0, sizeof(*err));
    return console_source_parse_uri(uri, u, err);
}

static void test_full_uri(void **state)
{
    (void)state;
    struct console_uri u;
    struct inspect_error err;
    assert_true(parse("pgwarden://ad%6Din:s%40c:r@t@db.example:6543/pgwarden", &u, &err));
    assert_string_equal(u.user, "admin");
    assert_string_equal(u.password, "s@c:r@t");
    assert_true(u.has_user && u.has_password);
    assert_string_equal(u.host, "db.example");
    assert_string_equal(u.port, "6543");
    assert_string_equal(u.database, "pgwarden");
}

static void test_defaults(void **state)
{
    (void)state;
    struct console_uri u;
    struct inspect_error err;
    assert_true(parse("pgwarden://localhost", &u, &err));
    assert_false(u.has_user || u.has_password);
    assert_string_equal(u.port, CONSOLE_SOURCE_DEFAULT_PORT);
    assert_string_equal(u.database, "pgbouncer");
    assert_true(parse("pgwarden://:secret@h:007/", &u, &err));
    assert_false(u.has_user);
    assert_true(u.has_password);
    assert_string_equal(u.port, "7");
}

static void test_ipv6(void **state)
{
    (void)state;
    struct console_uri u;
    struct inspect_error err;
    assert_true(parse("pgwarden://[::1]:6432", &u, &err));
    assert_string_equal(u.host, "::1");
    assert_true(parse("pgwarden://[fe80::1%25eth0]", &u, &err));
    assert_string_equal(u.host, "fe80::1%25eth0"); /* the host is not decoded */
    assert_false(parse("pgwarden://[::1", &u, &err));
    assert_false(parse("pgwarden://[::1]x", &u, &err));
    assert_false(parse("pgwarden://[]:5", &u, &err));
}

static void test_refusals(void **state)
{
    (void)state;
    struct console_uri u;
    struct inspect_error err;
    const char *bad[] = {
        "pgwarden://",           "pgwarden://h:0",       "pgwarden://h:65536",
        "pgwarden://h:",         "pgwarden://h:6x",      "pgwarden://h:99999999999999999999",
        "pgwarden://h/postgres", "pgwarden://h?sslmode", "pgwarden://u%zz@h",
        "pgwarden://u%00@h",     "pgwarden://u%4@h",     "pgwarden://u:p%@h",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_false(parse(bad[i], &u, &err));
        assert_string_equal(err.code, "bad_input");
    }
    char long_user[200] = "pgwarden://";
    memset(long_user + strlen(long_user), 'u', 100);
    strcat(long_user, "@h");
    assert_false(parse(long_user, &u, &err));
    assert_false(parse("pgwarden://u:hunter2@h:1/nope", &u, &err));
    assert_null(strstr(err.message, "hunter2"));
}

/* Callers dispatch on the scheme first; a string without it was read from past its end. */
static void test_needs_scheme(void **state)
{
    (void)state;
    struct console_uri u;
    struct inspect_error err;
    const char *bad[] = {"", "pg", "pgwarden:/", "postgresql://h", "PGWARDEN://h"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_false(parse(bad[i], &u, &err));
        assert_string_equal(err.code, "bad_input");
        assert_string_equal(u.host, "");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_uri),     cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_ipv6),         cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_needs_scheme),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for the auth_file (userlist.txt) loader: syntax, quoting, line endings, lookups,
 * empty secrets, duplicates, secret kinds, FIFOs, and errors with file:line that never reveal a
 * secret. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "config/auth_file.h"

static bool parse(const char *text, struct auth_file *af, char *err, size_t err_len)
{
    return auth_file_parse(text, strlen(text), "userlist.txt", af, err, err_len);
}

static void expect_error(const char *text, size_t len, const char *expected_prefix);

static void expect_error_at(const char *text, const char *expected_prefix)
{
    expect_error(text, strlen(text), expected_prefix);
}

static void test_basic(void **state)
{
    (void)state;
    struct auth_file af;
    char err[256];
    const char *text = "; PgBouncer userlist\n"
                       "# another comment\n"
                       "\n"
                       "\"alice\" \"plainpw\"\n"
                       "   \"bob\"\t\"md520c46e3762c864548e296b33c3406aa9\"   \r\n"
                       "\"carol\" \"SCRAM-SHA-256$4096:c2FsdA==$a:b\"\n"
                       "\"say \"\"hi\"\"\" \"pa\"\"ss word\" ; trailing comment\n"
                       "\"dave\"  \"dpw\"\n"
                       "\"erin\" \"\"\n"
                       "\"frank\" \"fpw\" \"\" \"extra\"\n"
                       "\"zed\" \"last line without newline\"";

    assert_true(parse(text, &af, err, sizeof(err)));
    assert_int_equal(af.count, 8);
    for (size_t i = 1; i < af.count; i++)
        assert_true(strcmp(af.entries[i - 1].user, af.entries[i].user) < 0);
    assert_string_equal(auth_file_lookup(&af, "alice"), "plainpw");
    assert_string_equal(auth_file_lookup(&af, "bob"), "md520c46e3762c864548e296b33c3406aa9");
    assert_string_equal(auth_file_lookup(&af, "say \"hi\""), "pa\"ss word");
    assert_string_equal(auth_file_lookup(&af, "dave"), "dpw");
    assert_null(auth_file_lookup(&af, "erin")); /* an empty secret is no secret */
    assert_string_equal(auth_file_lookup(&af, "frank"), "fpw");
    assert_string_equal(auth_file_lookup(&af, "zed"), "last line without newline");
    assert_null(auth_file_lookup(&af, "mallory"));
    assert_null(auth_file_lookup(&af, "alic"));
    assert_null(auth_file_lookup(&af, ""));
    assert_null(auth_file_lookup(&af, NULL));

    assert_int_equal(auth_file_secret_kind(auth_file_lookup(&af, "alice")), AUTH_SECRET_PLAIN);
    assert_int_equal(auth_file_secret_kind(auth_file_lookup(&af, "bob")), AUTH_SECRET_MD5);
    assert_int_equal(auth_file_secret_kind(auth_file_lookup(&af, "carol")), AUTH_SECRET_SCRAM);
    assert_int_equal(auth_file_secret_kind(auth_file_lookup(&af, "erin")), AUTH_SECRET_NONE);
    auth_file_free(&af);
    assert_int_equal(af.count, 0);
    auth_file_free(&af); /* twice is fine */
}

static void test_secret_kinds(void **state)
{
    (void)state;
    assert_int_equal(auth_file_secret_kind(NULL), AUTH_SECRET_NONE);
    assert_int_equal(auth_file_secret_kind(""), AUTH_SECRET_NONE);
    assert_int_equal(auth_file_secret_kind("md5"), AUTH_SECRET_PLAIN);
    assert_int_equal(auth_file_secret_kind("md520c46e3762c864548e296b33c3406aa"),
                     AUTH_SECRET_PLAIN);
    assert_int_equal(auth_file_secret_kind("md520c46e3762c864548e296b33c3406aa9"), AUTH_SECRET_MD5);
    assert_int_equal(auth_file_secret_kind("SCRAM-SHA-256$"), AUTH_SECRET_SCRAM);
    assert_int_equal(auth_file_secret_kind("scram-sha-256$x"), AUTH_SECRET_PLAIN);
    assert_string_equal(auth_file_secret_kind_name(AUTH_SECRET_MD5), "md5");
    assert_string_equal(auth_file_secret_kind_name(AUTH_SECRET_NONE), "none");
}

/* `"user" ""` must never let anybody in: md5 and SCRAM would otherwise accept the empty
 * password, and the server login would send it. The lookup answers "no secret", exactly as
 * for an unknown user, also when the empty secret overrides an earlier one. */
static void test_empty_secret_is_no_secret(void **state)
{
    (void)state;
    struct auth_file af;
    char err[256];

    assert_true(parse("\"empty\" \"\"\n"
                      "\"u\" \"pw\"\n"
                      "\"u\" \"\"\n"
                      "\"v\" \"\"\n"
                      "\"v\" \"vpw\"\n",
                      &af, err, sizeof(err)));
    assert_int_equal(af.count, 3);
    assert_null(auth_file_lookup(&af, "empty"));
    assert_null(auth_file_lookup(&af, "u"));
    assert_string_equal(auth_file_lookup(&af, "v"), "vpw");
    assert_int_equal(auth_file_secret_kind(auth_file_lookup(&af, "empty")), AUTH_SECRET_NONE);
    auth_file_free(&af);
}

/* LF, CRLF and CR alone all end a line; CRLF counts as one line in error messages. */
static void test_line_endings(void **state)
{
    (void)state;
    static const char *const files[] = {
        "\"a\" \"pa\"\n\"b\" \"pb\"\n; c\n\"c\" \"pc\"\n",
        "\"a\" \"pa\"\r\n\"b\" \"pb\"\r\n; c\r\n\"c\" \"pc\"\r\n",
        "\"a\" \"pa\"\r\"b\" \"pb\"\r; c\r\"c\" \"pc\"\r",
        "\"a\" \"pa\"\r\"b\" \"pb\"\n\r\n; c\r\"c\" \"pc\"",
    };
    struct auth_file af;
    char err[256];

    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        if (!parse(files[i], &af, err, sizeof(err)))
            fail_msg("file %zu: %s", i, err);
        assert_int_equal(af.count, 3);
        assert_string_equal(auth_file_lookup(&af, "a"), "pa");
        assert_string_equal(auth_file_lookup(&af, "b"), "pb");
        assert_string_equal(auth_file_lookup(&af, "c"), "pc");
        auth_file_free(&af);
    }
    expect_error_at("\"a\" \"pa\"\r\"b\" \"pb\"\rSECRET\r", "userlist.txt:3: ");
    expect_error_at("\"a\" \"pa\"\r\n\r\nSECRET\r\n", "userlist.txt:3: ");
    expect_error_at("\"a\" \"pa\"\n\r\"b\" SECRET\n", "userlist.txt:3: ");
    /* A quoted string cannot run over a line end of any kind. */
    expect_error_at("\"a\" \"SECRET\r\"\n", "userlist.txt:1: unterminated quoted secret");
}

static void test_duplicates_last_wins(void **state)
{
    (void)state;
    struct auth_file af;
    char err[256];

    assert_true(parse("\"u\" \"one\"\n\"v\" \"x\"\n\"u\" \"two\"\n\"u\" \"three\"\n", &af, err,
                      sizeof(err)));
    assert_int_equal(af.count, 2);
    assert_string_equal(auth_file_lookup(&af, "u"), "three");
    auth_file_free(&af);
}

static void test_empty(void **state)
{
    (void)state;
    struct auth_file af;
    char err[256];

    assert_true(parse("", &af, err, sizeof(err)));
    assert_int_equal(af.count, 0);
    assert_null(auth_file_lookup(&af, "x"));
    auth_file_free(&af);
    assert_true(parse("\n\n  ; only comments\n#\n", &af, err, sizeof(err)));
    assert_int_equal(af.count, 0);
    auth_file_free(&af);
}

static void expect_error(const char *text, size_t len, const char *expected_prefix)
{
    struct auth_file af = {.entries = (void *)1, .count = 99};
    char err[256] = "";

    assert_false(auth_file_parse(text, len, "userlist.txt", &af, err, sizeof(err)));
    assert_null(af.entries);
    assert_int_equal(af.count, 0);
    if (strncmp(err, expected_prefix, strlen(expected_prefix)) != 0)
        fail_msg("error \"%s\" does not start with \"%s\"", err, expected_prefix);
    /* Secrets in these inputs all contain "SECRET": it must never be echoed. */
    assert_null(strstr(err, "SECRET"));
}

static void test_errors(void **state)
{
    (void)state;
    char big[AUTH_FILE_MAX_SECRET_LEN + 64];

    expect_error("alice \"SECRET\"\n", 15, "userlist.txt:1: expected a quoted user name");
    expect_error("\"ok\" \"p\"\n\"alice \"SECRET\"\n", 25, "userlist.txt:2: ");
    expect_error("\n\n\"alice\"\n", 10, "userlist.txt:3: expected a quoted secret");
    expect_error("\"alice\" SECRET\n", 15, "userlist.txt:1: expected a quoted secret");
    expect_error("\"alice\" \"SECRET\n\"x\" \"y\"\n", 24,
                 "userlist.txt:1: unterminated quoted secret");
    expect_error("\"alice\" \"SECRET\" SECRET2\n", 25, "userlist.txt:1: unexpected text after");
    expect_error("\"alice\" \"SECRET\" \"SECRET\n", 25, "userlist.txt:1: unexpected text after");
    expect_error("\"\" \"SECRET\"\n", 12, "userlist.txt:1: empty user name");
    expect_error("\"a\0b\" \"SECRET\"\n", 15, "userlist.txt:1: NUL byte");
    expect_error("\"a\" \"SEC\0RET\"", 13, "userlist.txt:1: NUL byte");

    memset(big, 'u', sizeof(big));
    big[0] = '"';
    big[AUTH_FILE_MAX_USER_LEN + 2] = '"';
    expect_error(big, AUTH_FILE_MAX_USER_LEN + 3, "userlist.txt:1: user name too long");
    memcpy(big, "\"u\" \"", 5);
    memset(big + 5, 'S', sizeof(big) - 5);
    big[5 + AUTH_FILE_MAX_SECRET_LEN + 1] = '"';
    expect_error(big, 5 + AUTH_FILE_MAX_SECRET_LEN + 2, "userlist.txt:1: secret too long");
    big[5 + AUTH_FILE_MAX_SECRET_LEN] = '"';
    {
        struct auth_file af;
        char err[256];
        assert_true(
            auth_file_parse(big, 5 + AUTH_FILE_MAX_SECRET_LEN + 1, "x", &af, err, sizeof(err)));
        assert_int_equal(strlen(auth_file_lookup(&af, "u")), AUTH_FILE_MAX_SECRET_LEN);
        auth_file_free(&af);
    }
}

static void test_load_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/pgwarden-auth-XXXXXX";
    char path[256], err[512];
    struct auth_file af;
    FILE *f;

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/userlist.txt", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("\"u1\" \"p1\"\n\"u2\" \"md520c46e3762c864548e296b33c3406aa9\"\nbroken\n", f);
    fclose(f);
    assert_false(auth_file_load(path, &af, err, sizeof(err)));
    assert_true(strstr(err, "userlist.txt:3: ") != NULL);
    assert_true(strncmp(err, path, strlen(path)) == 0);

    f = fopen(path, "w");
    assert_non_null(f);
    fputs("\"u1\" \"p1\"\n\"u2\" \"md520c46e3762c864548e296b33c3406aa9\"\n", f);
    fclose(f);
    assert_true(auth_file_load(path, &af, err, sizeof(err)));
    assert_int_equal(af.count, 2);
    assert_string_equal(auth_file_lookup(&af, "u1"), "p1");
    auth_file_free(&af);

    /* Missing file and a directory. */
    assert_false(auth_file_load("/nonexistent/userlist.txt", &af, err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent/userlist.txt: cannot open"));
    assert_false(auth_file_load(dir, &af, err, sizeof(err)));
    assert_non_null(strstr(err, "not a regular file"));

    unlink(path);
    rmdir(dir);
}

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "test_auth_file: opening a FIFO blocked (no O_NONBLOCK)\n";
    ssize_t n = write(STDERR_FILENO, msg, sizeof(msg) - 1);
    (void)n;
    _exit(1);
}

/* A FIFO as auth_file is refused at once; a blocking open() hung the reload forever. */
static void test_load_fifo(void **state)
{
    (void)state;
    char dir[] = "/tmp/pgwarden-auth-XXXXXX";
    char path[256], err[512];
    struct auth_file af = {.entries = (void *)1, .count = 99};

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/userlist.fifo", dir);
    assert_int_equal(mkfifo(path, 0600), 0);
    signal(SIGALRM, on_alarm);
    alarm(10);
    assert_false(auth_file_load(path, &af, err, sizeof(err)));
    alarm(0);
    signal(SIGALRM, SIG_DFL);
    assert_null(af.entries);
    assert_int_equal(af.count, 0);
    assert_true(strncmp(err, path, strlen(path)) == 0);
    assert_non_null(strstr(err, ": not a regular file (a FIFO)"));
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic),
        cmocka_unit_test(test_secret_kinds),
        cmocka_unit_test(test_empty_secret_is_no_secret),
        cmocka_unit_test(test_line_endings),
        cmocka_unit_test(test_duplicates_last_wins),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_load_fifo),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for config/hba: pg_hba.conf parsing as PgBouncer reads it, first-match decisions,
 * refusals with line numbers, @file, and the ident map. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config/hba.h"

static const char *const EXAMPLE =
    "# every line type and method\n"
    "local   all         pgbouncer                  peer\n"
    "local   sameuser    all                        trust\n"
    "hostssl app,\"all\"  alice       all            scram-sha-256\n"
    "hostnossl app       alice       all            reject\n"
    "host    app         bob, carol  10.0.0.0/8     md5\n"
    "host    \"app\"     dave        192.168.1.0 255.255.255.0   password\n"
    "host    replication repl        ::1/128        trust\n"
    "hostssl all         all         all            cert map=certmap\n"
    "host    all         all         0.0.0.0/0      reject\n";

static const struct hba_rule *ask(const struct hba *h, bool unix_socket, bool tls, const char *ip,
                                  const char *db, const char *user)
{
    unsigned char addr[16];
    struct hba_request req = {.unix_socket = unix_socket, .tls = tls, .database = db, .user = user};
    if (ip) {
        req.family = strchr(ip, ':') ? AF_INET6 : AF_INET;
        assert_int_equal(inet_pton(req.family, ip, addr), 1);
        req.addr = addr;
    }
    return hba_match(h, &req);
}

static void test_every_line_type_and_method(void **state)
{
    (void)state;
    struct hba h;
    char err[256];
    assert_true(hba_parse(EXAMPLE, "hba.conf", NULL, &h, err, sizeof(err)));
    assert_int_equal(h.n, 9);
    const struct hba_rule *r;
    r = ask(&h, true, false, NULL, "anything", "pgbouncer");
    assert_int_equal(r->method, HBA_PEER);
    assert_int_equal(r->line, 2);
    r = ask(&h, true, false, NULL, "eve", "eve"); /* sameuser */
    assert_int_equal(r->method, HBA_TRUST);
    assert_null(ask(&h, true, false, NULL, "other", "eve")); /* no local line: refused */
    /* hostssl matches only with TLS; a plain connection falls to hostnossl's reject. */
    r = ask(&h, false, true, "10.1.2.3", "app", "alice");
    assert_int_equal(r->method, HBA_SCRAM);
    r = ask(&h, false, false, "10.1.2.3", "app", "alice");
    assert_int_equal(r->method, HBA_REJECT);
    assert_int_equal(r->line, 5);
    /* A quoted "all" is a database named all. */
    r = ask(&h, false, true, "10.1.2.3", "all", "alice");
    assert_int_equal(r->method, HBA_SCRAM);
    r = ask(&h, false, false, "10.9.9.9", "app", "carol"); /* list with a space after ',' */
    assert_int_equal(r->method, HBA_MD5);
    r = ask(&h, false, false, "192.168.1.77", "app", "dave"); /* address + netmask */
    assert_int_equal(r->method, HBA_PASSWORD);
    r = ask(&h, false, false, "192.168.2.77", "app", "dave");
    assert_int_equal(r->method, HBA_REJECT);
    assert_int_equal(r->line, 10);
    r = ask(&h, false, true, "::ffff:10.0.0.1", "x", "y"); /* hostssl all ... cert */
    assert_int_equal(r->method, HBA_CERT);
    assert_string_equal(r->map, "certmap");
    /* replication: only lines naming it; "all" does not cover it. */
    struct hba_request repl = {
        .database = "x", .user = "repl", .replication = true, .family = AF_INET6};
    unsigned char one[16] = {0};
    one[15] = 1;
    repl.addr = one;
    r = hba_match(&h, &repl);
    assert_non_null(r);
    assert_int_equal(r->method, HBA_TRUST);
    assert_int_equal(r->line, 8);
    hba_free(&h);
}

static void test_refusals_name_the_line(void **state)
{
    (void)state;
    const struct {
        const char *text;
        const char *why;
    } bad[] = {
        {"host all all\n", ":1: too few fields"},
        {"\n\nhostgssenc all all all trust\n", ":3: unknown record type"},
        {"host samerole all all md5\n", "samerole"},
        {"host all all samenet md5\n", "samehost and samenet"},
        {"host all all db.example.com md5\n", "host names are not supported"},
        {"host all all 10.0.0.0/33 md5\n", "address block"},
        {"host all all 10.0.0.0 255.0.255.0 md5\n", "host names are not supported"},
        {"host all all all ldap\n", "unsupported authentication method"},
        {"host all all all peer\n", "peer works over the unix socket"},
        {"local all all cert\n", "cert needs TLS"},
        {"local all all md5 map=x\n", "unsupported option"},
        {"local \"all all md5\n", "unterminated quote"},
        {"local all, all md5,\n", "ends with a comma"},
        {"local @names all trust\n", "@file is not available"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct hba h;
        char err[256] = "";
        assert_false(hba_parse(bad[i].text, "f", NULL, &h, err, sizeof(err)));
        if (!strstr(err, bad[i].why)) {
            fprintf(stderr, "case %zu: '%s' lacks '%s'\n", i, err, bad[i].why);
            fail();
        }
        assert_int_equal(h.n, 0);
    }
}

static void test_at_file_and_ident_map(void **state)
{
    (void)state;
    char dir[] = "/tmp/pgwarden-hba-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof(path), "%s/admins", dir);
    FILE *f = fopen(path, "w");
    fputs("# who may\nann, ben\ncat # trailing comment\n", f);
    fclose(f);
    snprintf(path, sizeof(path), "%s/hba.conf", dir);
    f = fopen(path, "w");
    fputs("host all @admins 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 reject\n", f);
    fclose(f);
    struct hba h;
    char err[256];
    assert_true(hba_load(path, &h, err, sizeof(err)));
    assert_int_equal(ask(&h, false, false, "127.0.0.1", "d", "cat")->method, HBA_TRUST);
    assert_int_equal(ask(&h, false, false, "127.0.0.1", "d", "dan")->method, HBA_REJECT);
    hba_free(&h);
    /* A missing file names itself. */
    snprintf(path, sizeof(path), "%s/none.conf", dir);
    assert_false(hba_load(path, &h, err, sizeof(err)));
    assert_non_null(strstr(err, "none.conf"));

    struct ident_map m;
    assert_true(hba_ident_parse("# map sys db\ncertmap  CN-alice  alice\nlocal root all\n", "ident",
                                &m, err, sizeof(err)));
    assert_true(hba_ident_allows(&m, "certmap", "CN-alice", "alice"));
    assert_false(hba_ident_allows(&m, "certmap", "CN-alice", "bob"));
    assert_true(hba_ident_allows(&m, "local", "root", "anyone"));
    assert_false(hba_ident_allows(&m, "other", "root", "anyone"));
    hba_ident_free(&m);
    assert_false(hba_ident_parse("m a\n", "ident", &m, err, sizeof(err)));
    assert_non_null(strstr(err, "ident:1: expected"));
    assert_false(hba_ident_parse("m /regex$ b\n", "ident", &m, err, sizeof(err)));
    snprintf(path, sizeof(path), "rm -rf %s", dir);
    assert_int_equal(system(path), 0);
}

/* A +group cannot be resolved by a pooler: the line is skipped (PgBouncer), counted, and the
 * next line decides. A user list that also names plain users is skipped whole, as there. */
static void test_group_lines_are_skipped(void **state)
{
    (void)state;
    struct hba h;
    char err[256];
    const char *text = "host all +admins,bob all trust\n"
                       "host all all all md5\n"
                       "host +dbs all all trust\n";
    assert_true(hba_parse(text, "hba.conf", NULL, &h, err, sizeof(err)));
    assert_int_equal(h.n, 1);
    assert_int_equal(h.n_skipped, 2);
    assert_int_equal(h.first_skipped_line, 1);
    const struct hba_rule *r = ask(&h, false, false, "127.0.0.1", "db", "bob");
    assert_int_equal(r->method, HBA_MD5);
    hba_free(&h);
}

/* PgBouncer reads "u1,u2 , u3" as one list, and takes cert on host lines. */
static void test_spaced_lists_and_cert_on_host(void **state)
{
    (void)state;
    struct hba h;
    char err[256];
    assert_true(hba_parse("host db u1,u2 , u3 10.0.0.0/8 md5\nhost all all all cert\n", "hba.conf",
                          NULL, &h, err, sizeof(err)));
    assert_int_equal(h.n, 2);
    assert_int_equal(h.rules[0].users.n, 3);
    assert_string_equal(h.rules[0].users.names[2], "u3");
    assert_int_equal(ask(&h, false, false, "10.0.0.1", "db", "u3")->method, HBA_MD5);
    assert_int_equal(ask(&h, false, false, "10.0.0.1", "db", "u4")->method, HBA_CERT);
    hba_free(&h);
}

/* hba_decide: the first match's method, and reject when nothing matches. */
static void test_decide_defaults_to_reject(void **state)
{
    (void)state;
    struct hba h;
    char err[256];
    assert_true(
        hba_parse("hostssl all all all scram-sha-256\n", "hba.conf", NULL, &h, err, sizeof(err)));
    unsigned char addr[4] = {127, 0, 0, 1};
    struct hba_request req = {.family = AF_INET, .addr = addr, .database = "d", .user = "u"};
    const struct hba_rule *rule = NULL;
    assert_int_equal(hba_decide(&h, &req, &rule), HBA_REJECT); /* plain TCP: no match */
    assert_null(rule);
    req.tls = true;
    assert_int_equal(hba_decide(&h, &req, &rule), HBA_SCRAM);
    assert_non_null(rule);
    req.unix_socket = true; /* a unix socket never matches host lines */
    assert_int_equal(hba_decide(&h, &req, &rule), HBA_REJECT);
    struct hba empty = {0};
    req.unix_socket = false;
    assert_int_equal(hba_decide(&empty, &req, &rule), HBA_REJECT);
    hba_free(&h);
}

/* Whose identity may log in as whom: the same name without a map, the map's lines with one. */
static void test_identity_with_and_without_map(void **state)
{
    (void)state;
    struct ident_map m;
    char err[256];
    assert_true(hba_ident_parse("ops  root  postgres\nops  alice  all\nother bob bob\n", "ident",
                                &m, err, sizeof(err)));
    assert_true(hba_identity_ok(&m, NULL, "bob", "bob"));
    assert_false(hba_identity_ok(&m, NULL, "bob", "alice"));
    assert_false(hba_identity_ok(&m, NULL, NULL, "bob")); /* no proven identity */
    assert_true(hba_identity_ok(&m, "ops", "root", "postgres"));
    assert_false(hba_identity_ok(&m, "ops", "root", "app")); /* not mapped to app */
    assert_true(hba_identity_ok(&m, "ops", "alice", "app")); /* "all" */
    assert_false(hba_identity_ok(&m, "ops", "bob", "bob"));  /* a map replaces the same name */
    assert_false(hba_identity_ok(&m, "nosuch", "bob", "bob"));
    assert_false(hba_identity_ok(NULL, "ops", "root", "postgres"));

    struct hba h;
    assert_true(hba_parse("local all all peer map=ops\nhostssl all all all cert map=gone\n",
                          "hba.conf", NULL, &h, err, sizeof(err)));
    assert_string_equal(hba_missing_map(&h, &m), "gone");
    assert_string_equal(hba_missing_map(&h, NULL), "ops");
    hba_free(&h);
    hba_ident_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_line_type_and_method),
        cmocka_unit_test(test_refusals_name_the_line),
        cmocka_unit_test(test_at_file_and_ident_map),
        cmocka_unit_test(test_group_lines_are_skipped),
        cmocka_unit_test(test_spaced_lists_and_cert_on_host),
        cmocka_unit_test(test_decide_defaults_to_reject),
        cmocka_unit_test(test_identity_with_and_without_map),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for the typed pooler config: defaults (PgBouncer's), every value type, the
 * [databases] connection strings with the "*" fallback, [users], and file:line errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "config/pooler_config.h"
#include "pool/params.h"

static void test_defaults(void **state)
{
    (void)state;
    struct pooler_config cfg;
    char err[512];
    assert_true(pooler_config_load_string("[pgbouncer]\nauth_type = trust\n", "t.ini", &cfg, err,
                                          sizeof(err)));
    assert_int_equal(cfg.default_pool_size, 20);
    assert_int_equal(cfg.max_client_conn, 100);
    assert_int_equal(cfg.listen_port, 6432);
    assert_int_equal(cfg.server_idle_timeout_ms, 600000);
    assert_int_equal(cfg.server_lifetime_ms, 3600000);
    assert_int_equal(cfg.server_connect_timeout_ms, 15000);
    assert_int_equal(cfg.server_login_retry_ms, 15000);
    assert_int_equal(cfg.client_login_timeout_ms, 60000);
    assert_int_equal(cfg.query_wait_timeout_ms, 120000);
    assert_int_equal(cfg.server_check_delay_ms, 30000);
    assert_int_equal(cfg.transaction_timeout_ms, 0);
    assert_int_equal(cfg.query_wait_notify_ms, 5000);
    assert_false(cfg.server_fast_close);
    assert_int_equal(cfg.pool_mode, POOL_MODE_SESSION);
    assert_string_equal(cfg.server_reset_query, "DISCARD ALL");
    assert_int_equal(cfg.unix_socket_mode, 0777);
    assert_string_equal(cfg.unix_socket_group, "");
    assert_false(cfg.syslog);
    assert_string_equal(cfg.syslog_ident, "pgbouncer");
    assert_string_equal(cfg.syslog_facility, "daemon");
    /* PgBouncer 1.25's defaults for the keys it shares. */
    assert_int_equal(cfg.dns_max_ttl_ms, 15000);
    assert_int_equal(cfg.dns_nxdomain_ttl_ms, 15000);
    assert_int_equal(cfg.dns_zone_check_period_ms, 0);
    assert_string_equal(cfg.resolv_conf, "");
    assert_false(cfg.disable_pqexec);
    assert_true(cfg.log_stats);
    assert_int_equal(cfg.sbuf_loopcnt, 5);
    assert_int_equal(cfg.cancel_wait_timeout_ms, 10000);
    assert_int_equal(cfg.autodb_idle_timeout_ms, 3600000);
    assert_string_equal(cfg.service_name, "pgbouncer");
    assert_int_equal(cfg.scram_iterations, 4096);
    pooler_config_free(&cfg);
}

static void expect_error(const char *text, const char *needle);

static void test_syslog_keys(void **state)
{
    (void)state;
    struct pooler_config cfg;
    char err[512];
    assert_true(pooler_config_load_string("[pgbouncer]\nauth_type = trust\nsyslog = 1\n"
                                          "syslog_ident = pgw\nsyslog_facility = local5\n",
                                          "t.ini", &cfg, err, sizeof(err)));
    assert_true(cfg.syslog);
    assert_string_equal(cfg.syslog_ident, "pgw");
    assert_string_equal(cfg.syslog_facility, "local5");
    assert_int_equal(cfg.n_warnings, 0);
    pooler_config_free(&cfg);
    /* An unknown facility is PgBouncer's daemon, with a warning; syslog takes any integer. */
    assert_true(pooler_config_load_string("[pgbouncer]\nauth_type = trust\nsyslog = 2\n"
                                          "syslog_facility = local8\n",
                                          "t.ini", &cfg, err, sizeof(err)));
    assert_true(cfg.syslog);
    assert_string_equal(cfg.syslog_facility, "daemon");
    assert_int_equal(cfg.n_warnings, 1);
    pooler_config_free(&cfg);
}

/* unix_socket_mode is read as PgBouncer reads it: C notation, so a leading 0 is octal. */
static void test_unix_socket_mode(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int mode;
    } ok[] = {{"0770", 0770}, {"0x1ff", 0777}, {"384", 0600}, {"0", 0}, {"07777", 07777}};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        struct pooler_config cfg;
        char err[512], text[128];
        snprintf(text, sizeof(text),
                 "[pgbouncer]\nauth_type = trust\nunix_socket_mode = %s\nunix_socket_group = "
                 "staff\n",
                 ok[i].text);
        assert_true(pooler_config_load_string(text, "t.ini", &cfg, err, sizeof(err)));
        assert_int_equal(cfg.unix_socket_mode, ok[i].mode);
        assert_string_equal(cfg.unix_socket_group, "staff");
        assert_int_equal(cfg.n_warnings, 0);
        pooler_config_free(&cfg);
    }
    expect_error("[pgbouncer]\nauth_type = trust\nunix_socket_mode = 0778\n", "unix_socket_mode");
    expect_error("[pgbouncer]\nauth_type = trust\nunix_socket_mode = 010000\n", "file mode");
    expect_error("[pgbouncer]\nauth_type = trust\nunix_socket_mode = -1\n", "file mode");
    expect_error("[pgbouncer]\nauth_type = trust\nunix_socket_mode = rw\n", "file mode");
    expect_error("[pgbouncer]\nauth_type = trust\nunix_socket_mode =\n", "file mode");
}

static void test_values_and_sections(void **state)
{
    (void)state;
    struct pooler_config cfg;
    char err[512];
    const char *text = "[databases]\n"
                       "app = host=10.0.0.1 port=5433 dbname=real pool_size=7 pool_mode=session\n"
                       "* = host=/run/pg\n"
                       "[users]\n"
                       "bob = pool_mode=transaction max_user_connections=3\n"
                       "[pgbouncer]\n"
                       "auth_type = trust\n"
                       "pool_mode = transaction\n"
                       "query_wait_timeout = 2.5\n"
                       "server_lifetime = 5min\n"
                       "idle_transaction_timeout = 250ms\n"
                       "pkt_buf = 16kB\n"
                       "log_connections = off\n"
                       "tcp_keepidle = 30\n"
                       "tcp_user_timeout = 5000\n"
                       "some_future_key = 1\n"
                       "[pgwarden]\n"
                       "log_format = json\n";
    assert_true(pooler_config_load_string(text, "t.ini", &cfg, err, sizeof(err)));
    assert_int_equal(cfg.pool_mode, POOL_MODE_TRANSACTION);
    assert_int_equal(cfg.query_wait_timeout_ms, 2500);
    assert_int_equal(cfg.server_lifetime_ms, 300000);
    assert_int_equal(cfg.idle_transaction_timeout_ms, 250);
    assert_int_equal(cfg.pkt_buf, 16384);
    assert_false(cfg.log_connections);
    assert_int_equal(cfg.tcp_keepidle, 30);
    assert_int_equal(cfg.tcp_user_timeout_ms, 5000);
    assert_string_equal(cfg.log_format, "json");
    const struct pooler_db_config *db = pooler_config_find_db(&cfg, "app");
    assert_non_null(db);
    assert_string_equal(db->host, "10.0.0.1");
    assert_int_equal(db->port, 5433);
    assert_string_equal(db->dbname, "real");
    assert_int_equal(db->pool_size, 7);
    assert_int_equal(db->pool_mode, POOL_MODE_SESSION);
    db = pooler_config_find_db(&cfg, "anything");
    assert_non_null(db);
    assert_string_equal(db->name, "*");
    const struct pooler_user_config *u = pooler_config_find_user(&cfg, "bob");
    assert_non_null(u);
    assert_int_equal(u->max_user_connections, 3);
    assert_int_equal(u->pool_mode, POOL_MODE_TRANSACTION);
    assert_null(pooler_config_find_user(&cfg, "alice"));
    pooler_config_free(&cfg);
}

static void expect_error(const char *text, const char *needle)
{
    struct pooler_config cfg;
    char err[512] = "";
    assert_false(pooler_config_load_string(text, "bad.ini", &cfg, err, sizeof(err)));
    if (!strstr(err, needle)) {
        fprintf(stderr, "error '%s' lacks '%s'\n", err, needle);
        fail();
    }
}

static void test_errors(void **state)
{
    (void)state;
    expect_error("[pgbouncer]\nauth_type = trust\nmax_client_conn = lots\n", "bad.ini:3");
    expect_error("[pgbouncer]\nauth_type = trust\nmax_client_conn = lots\n", "max_client_conn");
    expect_error("[pgbouncer]\nauth_type = kerberos\n", "auth_type");
    expect_error("[pgbouncer]\nauth_type = trust\npool_mode = sometimes\n", "pool_mode");
    expect_error("[pgbouncer]\nauth_type = trust\nserver_lifetime = 5 parsecs\n", "duration");
    expect_error("[pgbouncer]\nauth_type = md5\n", "auth_file");
    expect_error("[databases]\nx = host=a port=99999\n[pgbouncer]\nauth_type = trust\n",
                 "bad.ini:2");
    expect_error("[databases]\nx = host='unterminated\n[pgbouncer]\nauth_type = trust\n",
                 "bad.ini:2");
    expect_error("[pgbouncer]\nauth_type = trust\nlog_format = xml\n", "log_format");
}

static void test_set_quoting(void **state)
{
    (void)state;
    struct pstr *want[PARAM_COUNT] = {0}, *have[PARAM_COUNT] = {0};
    want[PARAM_APPLICATION_NAME] = params_intern("it's a \\ test");
    want[PARAM_TIMEZONE] = params_intern("UTC");
    have[PARAM_TIMEZONE] = params_ref(want[PARAM_TIMEZONE]);
    char sql[256];
    int n = params_build_set((const struct pstr *const *)want, (const struct pstr *const *)have,
                             sql, sizeof(sql));
    assert_int_equal(n, 1);
    assert_string_equal(sql, "SET application_name=E'it''s a \\\\ test';");
    assert_int_equal(params_build_set((const struct pstr *const *)want,
                                      (const struct pstr *const *)have, sql, 10),
                     -1);
    /* long values are never truncated */
    char big[5000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    struct pstr *w2[PARAM_COUNT] = {0};
    w2[PARAM_APPLICATION_NAME] = params_intern(big);
    size_t need = params_set_len((const struct pstr *const *)w2, (const struct pstr *const *)have);
    char out[6000];
    assert_true(need <= sizeof(out));
    /* and TimeZone, which w2 does not have, goes back to the server's default */
    assert_int_equal(params_build_set((const struct pstr *const *)w2,
                                      (const struct pstr *const *)have, out, need),
                     2);
    assert_non_null(strstr(out, "RESET TimeZone;"));
    assert_int_equal(strlen(out), need - 1);
    assert_ptr_equal(params_intern("UTC"), want[PARAM_TIMEZONE]);
    params_unref(want[PARAM_TIMEZONE]);
    params_unref(want[PARAM_TIMEZONE]);
    params_unref(have[PARAM_TIMEZONE]);
    params_unref(want[PARAM_APPLICATION_NAME]);
    params_unref(w2[PARAM_APPLICATION_NAME]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),         cmocka_unit_test(test_values_and_sections),
        cmocka_unit_test(test_errors),           cmocka_unit_test(test_set_quoting),
        cmocka_unit_test(test_unix_socket_mode), cmocka_unit_test(test_syslog_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for the PgBouncer keys pgwarden does not implement: the ones whose absence
 * would weaken security stop the load (naming key and value), the rest are kept as warnings
 * that the caller logs once its log target is open; and the `user` key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/log.h"
#include "config/pooler_config.h"

static void expect_refused(const char *section_and_line, const char *key, const char *value)
{
    char text[1024];
    snprintf(text, sizeof(text), "[pgbouncer]\nauth_type = trust\n%s\n", section_and_line);
    struct pooler_config cfg;
    char err[512] = "";
    if (pooler_config_load_string(text, "t.ini", &cfg, err, sizeof(err))) {
        pooler_config_free(&cfg);
        fprintf(stderr, "'%s' was accepted\n", section_and_line);
        fail();
    }
    if (!strstr(err, key) || !strstr(err, value) || !strstr(err, "t.ini:")) {
        fprintf(stderr, "error '%s' does not name %s = %s with its place\n", err, key, value);
        fail();
    }
}

static void test_refused(void **state)
{
    (void)state;
    static const char *const modes[] = {"require", "verify-ca", "verify-full", "REQUIRE", "bogus"};
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        char line[128];
        snprintf(line, sizeof(line), "server_tls_sslmode = %s", modes[i]);
        expect_refused(line, "server_tls_sslmode", modes[i]);
        snprintf(line, sizeof(line), "client_tls_sslmode = %s", modes[i]);
        expect_refused(line, "client_tls_sslmode", modes[i]);
    }
    expect_refused("auth_query = SELECT 1", "auth_query", "SELECT 1");
    expect_refused("auth_user = authenticator", "auth_user", "authenticator");
    expect_refused("auth_hba_file = /etc/hba.conf", "auth_hba_file", "/etc/hba.conf");
    expect_refused("auth_ident_file = /etc/ident", "auth_ident_file", "/etc/ident");
    expect_refused("auth_type = hba", "auth_type", "hba");
    expect_refused("auth_type = cert", "auth_type", "cert");
    expect_refused("auth_type = pam", "auth_type", "pam");
    expect_refused("auth_type = ldap", "auth_type", "ldap");
    /* In [pgwarden] too, and per database. */
    expect_refused("[pgwarden]\nauth_hba_file = h", "auth_hba_file", "h");
    expect_refused("[databases]\napp = host=/tmp auth_user=authenticator", "auth_user",
                   "authenticator");
}

/* Loads text; returns how many warnings mention needle (cfg is freed). */
static size_t warnings_about(const char *text, const char *needle)
{
    struct pooler_config cfg;
    char err[512] = "";
    if (!pooler_config_load_string(text, "t.ini", &cfg, err, sizeof(err))) {
        fprintf(stderr, "refused: %s\n", err);
        fail();
    }
    size_t n = 0;
    for (size_t i = 0; i < cfg.n_warnings; i++)
        n += strstr(cfg.warnings[i], needle) != NULL;
    pooler_config_free(&cfg);
    return n;
}

static void test_accepted_with_or_without_warning(void **state)
{
    (void)state;
    assert_int_equal(warnings_about("[pgbouncer]\nauth_type = trust\nserver_tls_sslmode = prefer\n",
                                    "server_tls_sslmode = prefer"),
                     1);
    assert_int_equal(warnings_about("[pgbouncer]\nauth_type = trust\nclient_tls_sslmode = allow\n",
                                    "client_tls_sslmode = allow"),
                     1);
    assert_int_equal(
        warnings_about("[pgbouncer]\nauth_type = trust\nclient_tls_sslmode = disable\n", "tls"), 0);
    /* An empty value is the key unset. */
    assert_int_equal(warnings_about("[pgbouncer]\nauth_type = trust\nauth_hba_file =\n"
                                    "auth_query =\nclient_tls_key_file =\n",
                                    "auth"),
                     0);
    assert_int_equal(
        warnings_about("[pgbouncer]\nauth_type = trust\nclient_tls_key_file = /k.pem\n",
                       "'client_tls_key_file' is set but pgwarden has no TLS"),
        1);
    assert_int_equal(warnings_about("[pgbouncer]\nauth_type = trust\nsyslog = 1\n",
                                    "t.ini:3: 'syslog' is not supported"),
                     1);
    assert_int_equal(warnings_about("[databases]\napp = host=/tmp auth_dbname=x\n"
                                    "[pgbouncer]\nauth_type = trust\n",
                                    "[databases] app: 'auth_dbname'"),
                     1);
}

/* Loading only collects warnings: nothing reaches the log until pooler_config_log_warnings,
 * which the pooler calls once the logfile is open. */
static void test_warnings_are_kept_for_the_log(void **state)
{
    (void)state;
    FILE *out = tmpfile();
    assert_non_null(out);
    log_configure(LOG_LEVEL_INFO, LOG_FORMAT_TEXT, out);
    struct pooler_config cfg;
    char err[512];
    assert_true(pooler_config_load_string("[databases]\napp = host=/tmp colour=blue\n"
                                          "[users]\nbob = pool_size=2 shoe_size=44\n"
                                          "[pgbouncer]\nauth_type = trust\nfuture_key = 1\n"
                                          "[manager]\nfuture_manager_key = 2\n[nowhere]\nx = 1\n",
                                          "t.ini", &cfg, err, sizeof(err)));
    assert_int_equal(cfg.n_warnings, 5);
    fflush(out);
    assert_int_equal(ftell(out), 0);
    pooler_config_log_warnings(&cfg);
    char text[4096] = "";
    rewind(out);
    size_t n = fread(text, 1, sizeof(text) - 1, out);
    text[n] = '\0';
    assert_non_null(strstr(text, "warning config: [databases] app: unknown connection parameter "
                                 "'colour' ignored"));
    assert_non_null(strstr(text, "[users] bob: unknown setting 'shoe_size' ignored"));
    assert_non_null(strstr(text, "t.ini:7: unknown key 'future_key' in [pgbouncer] ignored"));
    assert_non_null(strstr(text, "unknown [manager] key 'future_manager_key'"));
    assert_non_null(strstr(text, "unknown section [nowhere]"));
    pooler_config_free(&cfg);
    assert_null(cfg.warnings);
    assert_int_equal(cfg.n_warnings, 0);
    log_configure(LOG_LEVEL_INFO, LOG_FORMAT_TEXT, NULL);
    fclose(out);
}

static void show_value(void *ctx, const char *key, const char *value, const char *default_text,
                       bool reloadable)
{
    (void)default_text;
    if (!strcmp(key, "user")) {
        assert_string_equal(value, "postgres");
        assert_false(reloadable);
        ++*(int *)ctx;
    }
}

static void test_user_key(void **state)
{
    (void)state;
    struct pooler_config cfg;
    char err[512];
    assert_true(pooler_config_load_string("[pgbouncer]\nauth_type = trust\nuser = postgres\n",
                                          "t.ini", &cfg, err, sizeof(err)));
    assert_string_equal(cfg.user, "postgres");
    assert_int_equal(cfg.n_warnings, 0);
    int seen = 0;
    pooler_config_values(&cfg, show_value, &seen);
    assert_int_equal(seen, 1);
    pooler_config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_accepted_with_or_without_warning),
        cmocka_unit_test(test_warnings_are_kept_for_the_log),
        cmocka_unit_test(test_user_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

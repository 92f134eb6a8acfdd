/* Unit tests for PgBouncer's keys: the ones pgwarden does not implement (those whose absence
 * would weaken security stop the load, naming key and value; the rest are kept as warnings
 * that the caller logs once its log target is open), the `user` key, and the client_tls_* and
 * server_tls_* keys (PgBouncer's defaults, sslmodes and protocol lists checked at load and by
 * SET, SHOW CONFIG's view, the settings handed to the TLS module). */
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
    /* Only a value that is no sslmode is refused (require and up are implemented now). */
    static const char *const modes[] = {"bogus", "requre"};
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        char line[128];
        snprintf(line, sizeof(line), "server_tls_sslmode = %s", modes[i]);
        expect_refused(line, "server_tls_sslmode", modes[i]);
        snprintf(line, sizeof(line), "client_tls_sslmode = %s", modes[i]);
        expect_refused(line, "client_tls_sslmode", modes[i]);
    }
    /* hba needs its file; cert needs a TLS mode that asks clients for a certificate. */
    expect_refused("auth_type = hba", "auth_type", "hba");
    expect_refused("auth_type = cert", "auth_type", "cert");
    expect_refused("auth_type = pam", "auth_type", "pam");
    expect_refused("auth_type = ldap", "auth_type", "ldap");
    /* The console is no database auth_query can run in (PgBouncer refuses it too). */
    expect_refused("auth_dbname = pgbouncer", "auth_dbname", "reserved \"pgbouncer\"");
}

/* auth_user, auth_query and auth_dbname in a [databases] entry are the entry's own: NULL in
 * an entry without them (the global ones apply). */
static void test_database_auth_settings(void **state)
{
    (void)state;
    struct pooler_config cfg;
    char err[512] = "";
    assert_true(pooler_config_load_string(
        "[databases]\napp = host=/tmp auth_user=authenticator auth_dbname=authdb "
        "auth_query='SELECT u, p FROM f($1)'\nother = host=/tmp\n"
        "[pgbouncer]\nauth_type = trust\nauth_user = global_user\n",
        "t.ini", &cfg, err, sizeof(err)));
    const struct pooler_db_config *app = pooler_config_find_db(&cfg, "app");
    const struct pooler_db_config *other = pooler_config_find_db(&cfg, "other");
    assert_non_null(app);
    assert_non_null(other);
    assert_string_equal(app->auth_user, "authenticator");
    assert_string_equal(app->auth_query, "SELECT u, p FROM f($1)");
    assert_string_equal(app->auth_dbname, "authdb");
    assert_null(other->auth_user);
    assert_null(other->auth_query);
    assert_string_equal(cfg.auth_user, "global_user");
    assert_int_equal(cfg.n_warnings, 0);
    pooler_config_free(&cfg);
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
    /* TLS keys are real keys now: no warning whatever their value. */
    assert_int_equal(
        warnings_about("[pgbouncer]\nauth_type = trust\nserver_tls_sslmode = prefer\n", "tls"), 0);
    assert_int_equal(
        warnings_about("[pgbouncer]\nauth_type = trust\nclient_tls_sslmode = allow\n", "tls"), 0);
    assert_int_equal(
        warnings_about("[pgbouncer]\nauth_type = trust\nclient_tls_sslmode = disable\n", "tls"), 0);
    /* An empty value is the key unset. */
    assert_int_equal(warnings_about("[pgbouncer]\nauth_type = trust\nauth_hba_file =\n"
                                    "auth_query =\nclient_tls_key_file =\n",
                                    "auth"),
                     0);
    assert_int_equal(
        warnings_about("[pgbouncer]\nauth_type = trust\nclient_tls_key_file = /k.pem\n", "tls"), 0);
    /* An HBA file with another auth_type is not read: a warning says so (PgBouncer reads it
     * only for auth_type = hba). */
    assert_int_equal(warnings_about("[pgbouncer]\nauth_type = trust\nauth_hba_file = /no/hba\n",
                                    "auth_hba_file is used only with auth_type = hba"),
                     1);
    assert_int_equal(warnings_about("[pgbouncer]\nauth_type = trust\nauth_ldap_options = x\n",
                                    "t.ini:3: 'auth_ldap_options' is not supported"),
                     1);
    /* PgBouncer starts with an unknown facility (it uses daemon) and with a zone check period
     * its evdns build cannot honour: so does pgwarden, saying so. */
    assert_int_equal(warnings_about("[pgbouncer]\nauth_type = trust\nsyslog_facility = local9\n",
                                    "syslog_facility 'local9' is unknown; daemon is used"),
                     1);
    assert_int_equal(warnings_about("[pgbouncer]\nauth_type = trust\ndns_zone_check_period = 60\n",
                                    "dns_zone_check_period is ignored"),
                     1);
    /* Implemented PgBouncer keys say nothing. */
    assert_int_equal(warnings_about("[pgbouncer]\nauth_type = trust\nsyslog = 1\n"
                                    "syslog_ident = pgb\nsyslog_facility = local0\n"
                                    "unix_socket_mode = 0770\nunix_socket_group = postgres\n"
                                    "tcp_socket_buffer = 65536\n"
                                    "dns_max_ttl = 30\ndns_nxdomain_ttl = 5\n"
                                    "dns_zone_check_period = 0\nresolv_conf = /etc/resolv.conf\n"
                                    "disable_pqexec = 0\nlog_stats = 0\nsbuf_loopcnt = 10\n"
                                    "cancel_wait_timeout = 3\nautodb_idle_timeout = 60\n"
                                    "service_name = pgb\njob_name = pgb\nconffile = /x.ini\n",
                                    ""),
                     0);
    assert_int_equal(warnings_about("[databases]\napp = host=/tmp auth_dbname=x\n"
                                    "[pgbouncer]\nauth_type = trust\nauth_user = a\n",
                                    "auth"),
                     0);
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

/* ---- TLS keys ---- */

static void load_pgbouncer(const char *lines, struct pooler_config *cfg)
{
    char text[2048], err[512] = "";
    snprintf(text, sizeof(text), "[pgbouncer]\nauth_type = trust\n%s\n", lines);
    if (!pooler_config_load_string(text, "t.ini", cfg, err, sizeof(err)))
        fail_msg("refused: %s", err);
}

static void test_tls_defaults_are_pgbouncers(void **state)
{
    (void)state;
    struct pooler_config cfg;
    load_pgbouncer("", &cfg);
    assert_int_equal(cfg.client_tls.sslmode, TLS_DISABLE);
    assert_int_equal(cfg.server_tls.sslmode, TLS_PREFER);
    const struct pooler_tls_config *sides[] = {&cfg.client_tls, &cfg.server_tls};
    for (size_t i = 0; i < 2; i++) {
        assert_string_equal(sides[i]->protocols, "secure");
        assert_string_equal(sides[i]->ciphers, "default");
        assert_string_equal(sides[i]->tls13_ciphers, "");
        assert_string_equal(sides[i]->key_file, "");
        assert_string_equal(sides[i]->ca_file, "");
    }
    assert_string_equal(cfg.client_tls.dheparams, "auto");
    assert_string_equal(cfg.client_tls.ecdhcurve, "auto");
    pooler_config_free(&cfg);
}

static void test_tls_values_reach_the_settings(void **state)
{
    (void)state;
    struct pooler_config cfg;
    load_pgbouncer("client_tls_sslmode = VERIFY-CA\n"
                   "client_tls_key_file = /k.pem\nclient_tls_cert_file = /c.pem\n"
                   "client_tls_ca_file = /ca.pem\nclient_tls_protocols = tlsv1.3\n"
                   "client_tls_ciphers = HIGH\nclient_tls13_ciphers = TLS_AES_256_GCM_SHA384\n"
                   "client_tls_dheparams = none\nclient_tls_ecdhcurve = prime256v1\n"
                   "server_tls_sslmode = verify-full\nserver_tls_ca_file = system\n"
                   "server_tls_key_file = /sk.pem\nserver_tls_cert_file = /sc.pem\n"
                   "server_tls_protocols = !tlsv1.0\nserver_tls_ciphers = all\n"
                   "server_tls13_ciphers = TLS_AES_128_GCM_SHA256\n",
                   &cfg);
    assert_int_equal(cfg.n_warnings, 0);
    struct tls_settings c, s;
    pooler_config_tls_settings(&cfg, true, &c);
    pooler_config_tls_settings(&cfg, false, &s);
    /* side, sslmode, then the strings in struct order */
    const char *want_c[] = {"/k.pem",  "/c.pem",    "/ca.pem",
                            "tlsv1.3", "HIGH",      "TLS_AES_256_GCM_SHA384",
                            "none",    "prime256v1"};
    const char *have_c[] = {c.key_file, c.cert_file,     c.ca_file,   c.protocols,
                            c.ciphers,  c.tls13_ciphers, c.dheparams, c.ecdhcurve};
    const char *want_s[] = {"/sk.pem",  "/sc.pem", "system",
                            "!tlsv1.0", "all",     "TLS_AES_128_GCM_SHA256"};
    const char *have_s[] = {s.key_file,  s.cert_file, s.ca_file,
                            s.protocols, s.ciphers,   s.tls13_ciphers};
    assert_string_equal(c.side, "client");
    assert_int_equal(c.sslmode, TLS_VERIFY_CA);
    for (size_t i = 0; i < sizeof(want_c) / sizeof(want_c[0]); i++)
        assert_string_equal(have_c[i], want_c[i]);
    assert_string_equal(s.side, "server");
    assert_int_equal(s.sslmode, TLS_VERIFY_FULL);
    for (size_t i = 0; i < sizeof(want_s) / sizeof(want_s[0]); i++)
        assert_string_equal(have_s[i], want_s[i]);
    assert_null(s.dheparams); /* connecting: OpenSSL's defaults */
    assert_null(s.ecdhcurve);
    pooler_config_free(&cfg);
}

static void test_tls_bad_values_stop_the_load(void **state)
{
    (void)state;
    expect_refused("client_tls_sslmode = on", "client_tls_sslmode", "on");
    /* OpenSSL takes a range: a list with a hole is refused, not widened. */
    expect_refused("client_tls_protocols = tlsv1.0,tlsv1.2", "client_tls_protocols",
                   "tlsv1.0,tlsv1.2");
    expect_refused("server_tls_protocols = tlsv9", "server_tls_protocols", "tlsv9");
}

struct seen {
    const char *key;
    char value[64];
    bool reloadable;
};

static void find_key(void *ctx, const char *key, const char *value, const char *default_text,
                     bool reloadable)
{
    (void)default_text;
    struct seen *s = ctx;
    if (!strcmp(key, s->key)) {
        snprintf(s->value, sizeof(s->value), "%s", value);
        s->reloadable = reloadable;
    }
}

static void test_tls_show_config_and_set(void **state)
{
    (void)state;
    struct pooler_config cfg;
    char err[512];
    load_pgbouncer("server_tls_sslmode = Require", &cfg);
    struct seen s = {"server_tls_sslmode", "", false};
    pooler_config_values(&cfg, find_key, &s);
    assert_string_equal(s.value, "require");
    assert_true(s.reloadable);

    assert_int_equal(pooler_config_set(&cfg, "client_tls_sslmode", "verify-full", err, sizeof(err)),
                     POOLER_SET_OK);
    assert_int_equal(cfg.client_tls.sslmode, TLS_VERIFY_FULL);
    assert_int_equal(pooler_config_set(&cfg, "client_tls_sslmode", "sometimes", err, sizeof(err)),
                     POOLER_SET_REFUSED);
    assert_non_null(strstr(err, "not an sslmode"));
    assert_int_equal(cfg.client_tls.sslmode, TLS_VERIFY_FULL);
    assert_int_equal(
        pooler_config_set(&cfg, "server_tls_protocols", "tlsv1.1,tlsv1.3", err, sizeof(err)),
        POOLER_SET_REFUSED);
    assert_string_equal(cfg.server_tls.protocols, "secure");
    assert_int_equal(pooler_config_set(&cfg, "server_tls_protocols", "tlsv1.3", err, sizeof(err)),
                     POOLER_SET_OK);
    assert_string_equal(cfg.server_tls.protocols, "tlsv1.3");
    pooler_config_free(&cfg);
}

/* SHOW CONFIG and SET for the syslog, unix socket and socket buffer keys: PgBouncer's
 * reload rules (unix_socket_mode and _group at start only; the others live). */
static void test_socket_and_syslog_keys_show_config_and_set(void **state)
{
    (void)state;
    struct pooler_config cfg;
    char err[512];
    load_pgbouncer("unix_socket_mode = 0x1f8", &cfg);
    struct seen s = {"unix_socket_mode", "", true};
    pooler_config_values(&cfg, find_key, &s);
    assert_string_equal(s.value, "0770"); /* shown in octal, as it is written */
    assert_false(s.reloadable);
    assert_int_equal(pooler_config_set(&cfg, "unix_socket_mode", "0700", err, sizeof(err)),
                     POOLER_SET_REFUSED);
    assert_int_equal(pooler_config_set(&cfg, "unix_socket_group", "staff", err, sizeof(err)),
                     POOLER_SET_REFUSED);
    assert_int_equal(pooler_config_set(&cfg, "syslog", "1", err, sizeof(err)), POOLER_SET_OK);
    assert_true(cfg.syslog);
    assert_int_equal(pooler_config_set(&cfg, "syslog_facility", "local9", err, sizeof(err)),
                     POOLER_SET_REFUSED);
    assert_string_equal(cfg.syslog_facility, "daemon");
    assert_int_equal(pooler_config_set(&cfg, "syslog_facility", "local1", err, sizeof(err)),
                     POOLER_SET_OK);
    assert_int_equal(pooler_config_set(&cfg, "tcp_socket_buffer", "131072", err, sizeof(err)),
                     POOLER_SET_OK);
    assert_int_equal(cfg.tcp_socket_buffer, 131072);
    pooler_config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_socket_and_syslog_keys_show_config_and_set),
        cmocka_unit_test(test_database_auth_settings),
        cmocka_unit_test(test_accepted_with_or_without_warning),
        cmocka_unit_test(test_warnings_are_kept_for_the_log),
        cmocka_unit_test(test_user_key),
        cmocka_unit_test(test_tls_defaults_are_pgbouncers),
        cmocka_unit_test(test_tls_values_reach_the_settings),
        cmocka_unit_test(test_tls_bad_values_stop_the_load),
        cmocka_unit_test(test_tls_show_config_and_set),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

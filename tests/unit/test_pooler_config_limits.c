/* Unit tests for the per-database and per-user settings PgBouncer has and the pool applies:
 * server_lifetime and max_db_client_connections in [databases], the [users] counts and
 * timeouts, and the global client limits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "config/pooler_config.h"

static void test_database_settings(void **state)
{
    (void)state;
    struct pooler_config cfg;
    char err[512];
    assert_true(pooler_config_load_string(
        "[databases]\n"
        "a = dbname=x server_lifetime=2 max_db_client_connections=3 reserve_pool_size=4\n"
        "b = dbname=y server_lifetime=0\n"
        "c = dbname=z\n"
        "[pgbouncer]\nauth_type = trust\nmax_db_client_connections = 7\n"
        "max_user_client_connections = 8\nserver_lifetime = 0\n",
        "t.ini", &cfg, err, sizeof(err)));
    const struct pooler_db_config *a = pooler_config_find_db(&cfg, "a");
    assert_int_equal(a->server_lifetime_ms, 2000);
    assert_int_equal(a->max_db_client_connections, 3);
    assert_int_equal(a->reserve_pool, 4);
    /* 0 in an entry means the [pgbouncer] value, as in PgBouncer */
    assert_int_equal(pooler_config_find_db(&cfg, "b")->server_lifetime_ms, -1);
    assert_int_equal(pooler_config_find_db(&cfg, "c")->server_lifetime_ms, -1);
    assert_int_equal(pooler_config_find_db(&cfg, "c")->max_db_client_connections, -1);
    assert_int_equal(cfg.max_db_client_connections, 7);
    assert_int_equal(cfg.max_user_client_connections, 8);
    assert_int_equal(cfg.server_lifetime_ms, 0);
    pooler_config_free(&cfg);
}

static void test_user_settings(void **state)
{
    (void)state;
    struct pooler_config cfg;
    char err[512];
    assert_true(pooler_config_load_string(
        "[users]\n"
        "u1 = pool_mode=transaction pool_size=1 reserve_pool_size=2 max_user_connections=3 "
        "max_user_client_connections=4 query_timeout=1.5 idle_transaction_timeout=250ms "
        "client_idle_timeout=1min transaction_timeout=2\n"
        "u2 = pool_size=5\n"
        "[pgbouncer]\nauth_type = trust\n",
        "t.ini", &cfg, err, sizeof(err)));
    const struct pooler_user_config *u = pooler_config_find_user(&cfg, "u1");
    assert_non_null(u);
    assert_int_equal(u->pool_mode, POOL_MODE_TRANSACTION);
    assert_int_equal(u->pool_size, 1);
    assert_int_equal(u->reserve_pool_size, 2);
    assert_int_equal(u->max_user_connections, 3);
    assert_int_equal(u->max_user_client_connections, 4);
    assert_int_equal(u->query_timeout_ms, 1500);
    assert_int_equal(u->idle_transaction_timeout_ms, 250);
    assert_int_equal(u->client_idle_timeout_ms, 60000);
    assert_int_equal(u->transaction_timeout_ms, 2000);
    u = pooler_config_find_user(&cfg, "u2");
    assert_int_equal(u->pool_size, 5);
    assert_int_equal(u->reserve_pool_size, -1);
    assert_int_equal(u->max_user_client_connections, -1);
    assert_int_equal(u->query_timeout_ms, -1);
    assert_int_equal(u->transaction_timeout_ms, -1);
    pooler_config_free(&cfg);
}

static void test_bad_values(void **state)
{
    (void)state;
    struct pooler_config cfg;
    char err[512];
    assert_false(pooler_config_load_string("[users]\nu = query_timeout=soon\n"
                                           "[pgbouncer]\nauth_type = trust\n",
                                           "t.ini", &cfg, err, sizeof(err)));
    assert_non_null(strstr(err, "query_timeout"));
    assert_non_null(strstr(err, "duration"));
    assert_false(pooler_config_load_string("[users]\nu = reserve_pool_size=-1\n"
                                           "[pgbouncer]\nauth_type = trust\n",
                                           "t.ini", &cfg, err, sizeof(err)));
    assert_non_null(strstr(err, "non-negative integer"));
    assert_false(pooler_config_load_string("[databases]\nd = server_lifetime=forever\n"
                                           "[pgbouncer]\nauth_type = trust\n",
                                           "t.ini", &cfg, err, sizeof(err)));
    assert_non_null(strstr(err, "server_lifetime"));
}

static void test_set_client_limits(void **state)
{
    (void)state;
    struct pooler_config cfg;
    char err[512];
    assert_true(pooler_config_load_string("[pgbouncer]\nauth_type = trust\n", "t.ini", &cfg, err,
                                          sizeof(err)));
    assert_int_equal(pooler_config_set(&cfg, "max_db_client_connections", "2", err, sizeof(err)),
                     POOLER_SET_OK);
    assert_int_equal(cfg.max_db_client_connections, 2);
    assert_int_equal(pooler_config_set(&cfg, "max_user_client_connections", "3", err, sizeof(err)),
                     POOLER_SET_OK);
    assert_int_equal(cfg.max_user_client_connections, 3);
    pooler_config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_database_settings),
        cmocka_unit_test(test_user_settings),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_set_client_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

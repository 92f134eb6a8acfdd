/* Unit tests for manager/options: defaults, one key at a time, spellings, lists, filters. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "manager/options.h"

static void test_defaults_match_design(void **state)
{
    (void)state;
    struct manager_options o;
    options_init_defaults(&o);
    assert_int_equal(o.idle_timeout_ms, 300000);
    assert_int_equal(o.max_connection_age_ms, 3600000);
    assert_true(o.leak_detection_threshold_pct == 80.0);
    assert_int_equal(o.leak_hold_threshold_ms, 60000);
    assert_int_equal(o.health_check_interval_ms, 30000);
    assert_true(o.auto_scaling);
    assert_true(o.max_kill_percentage == 25.0);
    assert_int_equal(o.min_pool_size, 5);
    assert_int_equal(o.max_pool_size, 100);
    assert_true(o.growth_rate_pct == 20.0);
    assert_true(o.shrink_rate_pct == 15.0);
    assert_int_equal(o.interval_ms, 1000);
    assert_int_equal(o.health_connections, 5);
    assert_int_equal(o.current_size, -1);
    assert_false(o.execute);
    assert_null(o.filter_user);
    assert_int_equal(o.n_exclude_users, 0);
    char err[200];
    assert_true(options_validate(&o, err, sizeof(err)));
    options_free(&o);
}

static void test_set_spellings_and_units(void **state)
{
    (void)state;
    struct manager_options o;
    options_init_defaults(&o);
    char err[200];
    assert_int_equal(options_set(&o, "idle-timeout", "5min", err, sizeof(err)), OPTIONS_OK);
    assert_int_equal(o.idle_timeout_ms, 300000);
    assert_int_equal(options_set(&o, "idle_timeout", "250ms", err, sizeof(err)), OPTIONS_OK);
    assert_int_equal(o.idle_timeout_ms, 250);
    assert_int_equal(options_set(&o, "--max-kill-percentage", "10%", err, sizeof(err)), OPTIONS_OK);
    assert_true(o.max_kill_percentage == 10.0);
    assert_int_equal(options_set(&o, "leak_detection_threshold", "90", err, sizeof(err)),
                     OPTIONS_OK);
    assert_true(o.leak_detection_threshold_pct == 90.0);
    assert_int_equal(options_set(&o, "max_connection_age", "0", err, sizeof(err)), OPTIONS_OK);
    assert_int_equal(o.max_connection_age_ms, 0);
    assert_int_equal(options_set(&o, "min-pool-size", "2", err, sizeof(err)), OPTIONS_OK);
    assert_int_equal(o.min_pool_size, 2);
    assert_int_equal(options_set(&o, "current_size", "-1", err, sizeof(err)), OPTIONS_OK);
    assert_int_equal(options_set(&o, "current_size", "12", err, sizeof(err)), OPTIONS_OK);
    assert_int_equal(o.current_size, 12);
    assert_int_equal(options_set(&o, "interval", "2s", err, sizeof(err)), OPTIONS_OK);
    assert_int_equal(o.interval_ms, 2000);
    options_free(&o);
}

static void test_booleans(void **state)
{
    (void)state;
    struct manager_options o;
    options_init_defaults(&o);
    const char *yes[] = {"on", "true", "yes", "1", "ON", "True"};
    const char *no[] = {"off", "false", "no", "0", "OFF"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        o.execute = false;
        assert_int_equal(options_set(&o, "execute", yes[i], NULL, 0), OPTIONS_OK);
        assert_true(o.execute);
    }
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        o.auto_scaling = true;
        assert_int_equal(options_set(&o, "auto-scaling", no[i], NULL, 0), OPTIONS_OK);
        assert_false(o.auto_scaling);
    }
    char err[200];
    assert_int_equal(options_set(&o, "auto_scaling", "maybe", err, sizeof(err)), OPTIONS_BAD_VALUE);
    assert_string_equal(err,
                        "auto_scaling: 'maybe' is not a boolean (use on/off, true/false, yes/no, "
                        "1/0)");
    options_free(&o);
}

static void test_bad_values_name_key_and_value(void **state)
{
    (void)state;
    struct manager_options o;
    options_init_defaults(&o);
    char err[200];
    assert_int_equal(options_set(&o, "idle-timeout", "5x", err, sizeof(err)), OPTIONS_BAD_VALUE);
    assert_string_equal(err, "idle_timeout: '5x' is not a duration (use 300s, 5min, 250ms)");
    assert_int_equal(o.idle_timeout_ms, 300000); /* unchanged */
    assert_int_equal(options_set(&o, "idle_timeout", "0", err, sizeof(err)), OPTIONS_BAD_VALUE);
    assert_non_null(strstr(err, "idle_timeout: '0'"));
    assert_int_equal(options_set(&o, "max_kill_percentage", "150%", err, sizeof(err)),
                     OPTIONS_BAD_VALUE);
    assert_non_null(strstr(err, "max_kill_percentage: '150%'"));
    assert_int_equal(options_set(&o, "min_pool_size", "-3", err, sizeof(err)), OPTIONS_BAD_VALUE);
    assert_string_equal(err, "min_pool_size: '-3' is outside the range 0 to 100000");
    assert_int_equal(options_set(&o, "max_pool_size", "ten", err, sizeof(err)), OPTIONS_BAD_VALUE);
    assert_string_equal(err, "max_pool_size: 'ten' is not a whole number");
    assert_int_equal(options_set(&o, "connections", "0", err, sizeof(err)), OPTIONS_BAD_VALUE);
    assert_int_equal(options_set(&o, "idle-timeuot", "5s", err, sizeof(err)), OPTIONS_UNKNOWN_KEY);
    assert_string_equal(err, "unknown manager option 'idle-timeuot'");
    assert_int_equal(options_set(&o, NULL, "5s", err, sizeof(err)), OPTIONS_UNKNOWN_KEY);
    options_free(&o);
}

static void test_validate_pool_bounds(void **state)
{
    (void)state;
    struct manager_options o;
    options_init_defaults(&o);
    char err[200];
    assert_int_equal(options_set(&o, "min_pool_size", "50", err, sizeof(err)), OPTIONS_OK);
    assert_int_equal(options_set(&o, "max_pool_size", "20", err, sizeof(err)), OPTIONS_OK);
    assert_false(options_validate(&o, err, sizeof(err)));
    assert_non_null(strstr(err, "min_pool_size 50 is larger than max_pool_size 20"));
    assert_int_equal(options_set(&o, "max_pool_size", "50", err, sizeof(err)), OPTIONS_OK);
    assert_true(options_validate(&o, err, sizeof(err)));
    options_free(&o);
}

static void test_filters_and_excludes(void **state)
{
    (void)state;
    struct manager_options o;
    options_init_defaults(&o);
    char err[200];
    assert_int_equal(options_set(&o, "exclude_user", "alice, bob", err, sizeof(err)), OPTIONS_OK);
    assert_int_equal(options_set(&o, "exclude-user", "carol,,alice", err, sizeof(err)), OPTIONS_OK);
    assert_int_equal(o.n_exclude_users, 3); /* appended, duplicates and blanks dropped */
    assert_true(options_user_excluded(&o, "bob"));
    assert_true(options_user_excluded(&o, "carol"));
    assert_false(options_user_excluded(&o, "Bob"));
    assert_false(options_user_excluded(&o, "dave"));
    assert_int_equal(options_set(&o, "exclude_app", "PostgREST*", err, sizeof(err)), OPTIONS_OK);
    assert_true(options_app_excluded(&o, "PostgREST 12.0.2"));
    assert_false(options_app_excluded(&o, "psql"));

    struct conn_record rec;
    memset(&rec, 0, sizeof(rec));
    rec.user = "app";
    rec.database = "shop";
    rec.application = "api-7";
    rec.client_addr = "";
    assert_true(options_match_filters(&o, &rec));
    assert_int_equal(options_set(&o, "user", "app", err, sizeof(err)), OPTIONS_OK);
    assert_int_equal(options_set(&o, "database", "shop", err, sizeof(err)), OPTIONS_OK);
    assert_int_equal(options_set(&o, "application", "api-*", err, sizeof(err)), OPTIONS_OK);
    assert_true(options_match_filters(&o, &rec));
    rec.application = "worker";
    assert_false(options_match_filters(&o, &rec));
    assert_int_equal(options_set(&o, "application", "", err, sizeof(err)), OPTIONS_OK);
    assert_null(o.filter_application);
    assert_true(options_match_filters(&o, &rec));
    rec.user = "other";
    assert_false(options_match_filters(&o, &rec));

    /* The list is bounded, and says so. */
    for (int i = 0; i < OPTIONS_MAX_EXCLUDES; i++) {
        char name[16];
        snprintf(name, sizeof(name), "app%d", i);
        options_set(&o, "exclude_app", name, err, sizeof(err));
    }
    assert_int_equal(o.n_exclude_apps, OPTIONS_MAX_EXCLUDES);
    assert_int_equal(options_set(&o, "exclude_app", "one-too-many", err, sizeof(err)),
                     OPTIONS_BAD_VALUE);
    assert_non_null(strstr(err, "exclude_app: cannot add 'one-too-many'"));
    options_free(&o);
    assert_null(o.filter_user);
    assert_int_equal(o.n_exclude_users, 0);
}

struct describe_ctx {
    int count;
    bool saw_idle_timeout;
    bool all_known;
};

static void collect(void *ctx, const char *key, const char *default_text, const char *meaning)
{
    struct describe_ctx *c = ctx;
    c->count++;
    if (strcmp(key, "idle_timeout") == 0 && strcmp(default_text, "300s") == 0)
        c->saw_idle_timeout = true;
    if (!options_is_known_key(key) || meaning == NULL || meaning[0] == '\0')
        c->all_known = false;
}

static void test_describe_and_known_keys(void **state)
{
    (void)state;
    struct describe_ctx c = {0, false, true};
    options_describe(~0u, collect, &c);
    /* At least the keys this file tests; other keys may be added without touching this. */
    assert_true(c.count >= 21);
    assert_true(c.saw_idle_timeout);
    assert_true(c.all_known);
    /* Per action: health-check reads neither the filters nor kill-idle's settings; the live
     * manager's keys are not listed for the CLI actions. */
    struct describe_ctx health = {0, false, true};
    options_describe(OPTION_USE_HEALTH_CHECK, collect, &health);
    assert_int_equal(health.count, 1); /* --connections */
    struct describe_ctx kill = {0, false, true};
    options_describe(OPTION_USE_KILL_IDLE, collect, &kill);
    assert_true(kill.saw_idle_timeout);
    assert_true(kill.count < c.count);
    assert_true(options_is_known_key("leak-hold-threshold"));
    assert_true(options_is_known_key("exclude_app"));
    assert_true(options_is_known_key("exclude-addr"));
    assert_false(options_is_known_key("pool_mode"));
    assert_false(options_is_known_key(""));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_match_design),
        cmocka_unit_test(test_set_spellings_and_units),
        cmocka_unit_test(test_booleans),
        cmocka_unit_test(test_bad_values_name_key_and_value),
        cmocka_unit_test(test_validate_pool_bounds),
        cmocka_unit_test(test_filters_and_excludes),
        cmocka_unit_test(test_describe_and_known_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

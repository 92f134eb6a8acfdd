/* Unit tests for manager/autoscale: serve-mode bounds, hysteresis and cooldown. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "manager/autoscale.h"

static void test_bounds_only_from_explicit_keys(void **state)
{
    (void)state;
    struct manager_options o;
    options_init_defaults(&o);
    int lo, hi;
    autoscale_bounds(20, 0, &o, &lo, &hi);
    assert_int_equal(lo, 20); /* defaults (5..100) do not apply: a PgBouncer config alone */
    assert_int_equal(hi, 20);
    char err[200];
    assert_int_equal(options_set(&o, "max_pool_size", "50", err, sizeof(err)), OPTIONS_OK);
    autoscale_bounds(20, 0, &o, &lo, &hi);
    assert_int_equal(lo, 20);
    assert_int_equal(hi, 50);
    assert_int_equal(options_set(&o, "min_pool_size", "4", err, sizeof(err)), OPTIONS_OK);
    autoscale_bounds(20, 0, &o, &lo, &hi);
    assert_int_equal(lo, 4);
    autoscale_bounds(60, 0, &o, &lo, &hi); /* the configured size is always inside the bounds */
    assert_int_equal(hi, 60);
    assert_int_equal(lo, 4);
    /* PgBouncer's min_pool_size (servers kept open) is a floor too, within the base. */
    autoscale_bounds(20, 8, &o, &lo, &hi);
    assert_int_equal(lo, 8);
    assert_int_equal(hi, 50);
    autoscale_bounds(20, 3, &o, &lo, &hi); /* below [manager] min_pool_size: no change */
    assert_int_equal(lo, 4);
    autoscale_bounds(6, 10, &o, &lo, &hi); /* above the configured size: the size is the floor */
    assert_int_equal(lo, 6);
    assert_int_equal(hi, 50);
    assert_true(options_is_set(&o, "max-pool-size"));
    assert_false(options_is_set(&o, "idle_timeout"));
    options_free(&o);
}

static struct scaling_decision decision(enum scaling_verdict v, int current, int target)
{
    struct scaling_decision d;
    memset(&d, 0, sizeof(d));
    d.decision = v;
    d.current_size = current;
    d.target_size = target;
    d.min_size = 1;
    d.max_size = 100;
    d.server_budget = -1;
    return d;
}

static void test_outside_bounds_goes_at_once(void **state)
{
    (void)state;
    struct autoscale_state st;
    memset(&st, 0, sizeof(st));
    char why[160];
    int64_t iv = 1000, t = 100000;
    /* A lowered maximum: back under it at the first decision, even right after a resize. */
    struct scaling_decision grow = decision(SCALING_GROW, 4, 8);
    assert_false(autoscale_accept(&st, &grow, t, iv, why, sizeof(why)));
    assert_true(autoscale_accept(&st, &grow, t += iv, iv, why, sizeof(why)));
    struct scaling_decision over = decision(SCALING_SHRINK, 8, 3);
    over.max_size = 3;
    assert_true(autoscale_accept(&st, &over, t += 1, iv, why, sizeof(why)));
    assert_non_null(strstr(why, "outside the bounds 1..3"));
    /* The server's budget bounds too. */
    struct scaling_decision budget = decision(SCALING_SHRINK, 8, 5);
    budget.server_budget = 5;
    assert_true(autoscale_accept(&st, &budget, t += 1, iv, why, sizeof(why)));
    /* A raised minimum: up to it at once. */
    struct scaling_decision under = decision(SCALING_GROW, 2, 6);
    under.min_size = 6;
    assert_true(autoscale_accept(&st, &under, t += 1, iv, why, sizeof(why)));
    /* Inside the bounds, a shrink still waits for its streak. */
    struct scaling_decision shrink = decision(SCALING_SHRINK, 8, 6);
    assert_false(autoscale_accept(&st, &shrink, t += iv, iv, why, sizeof(why)));
}

static void test_hysteresis_and_cooldown(void **state)
{
    (void)state;
    struct autoscale_state st;
    memset(&st, 0, sizeof(st));
    char why[160];
    struct scaling_decision grow = decision(SCALING_GROW, 2, 4);
    struct scaling_decision shrink = decision(SCALING_SHRINK, 4, 2);
    struct scaling_decision hold = decision(SCALING_HOLD, 4, 4);
    int64_t iv = 1000, t = 1000;
    assert_false(autoscale_accept(&st, &grow, t, iv, why, sizeof(why)));
    assert_non_null(strstr(why, "1 of 2"));
    assert_true(autoscale_accept(&st, &grow, t += iv, iv, why, sizeof(why)));
    /* Growing again right away waits for the cooldown (2 intervals). */
    assert_false(autoscale_accept(&st, &grow, t += iv, iv, why, sizeof(why)));
    assert_false(autoscale_accept(&st, &grow, t += 500, iv, why, sizeof(why)));
    assert_non_null(strstr(why, "cooling down"));
    assert_true(autoscale_accept(&st, &grow, t += 500, iv, why, sizeof(why)));
    /* A hold breaks a shrink streak: shrinking needs 10 in a row. */
    for (int i = 0; i < 9; i++)
        assert_false(autoscale_accept(&st, &shrink, t += iv, iv, why, sizeof(why)));
    assert_false(autoscale_accept(&st, &hold, t += iv, iv, why, sizeof(why)));
    for (int i = 0; i < 9; i++)
        assert_false(autoscale_accept(&st, &shrink, t += iv, iv, why, sizeof(why)));
    assert_true(autoscale_accept(&st, &shrink, t += iv, iv, why, sizeof(why)));
}

static void test_fair_share(void **state)
{
    (void)state;
    assert_int_equal(autoscale_fair_share(0, 3, 20), 0);   /* unknown: no bound */
    assert_int_equal(autoscale_fair_share(97, 4, 10), 24); /* equal share */
    assert_int_equal(autoscale_fair_share(97, 4, 30), 30); /* never below the config */
    assert_int_equal(autoscale_fair_share(97, 0, 5), 97);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bounds_only_from_explicit_keys),
        cmocka_unit_test(test_hysteresis_and_cooldown),
        cmocka_unit_test(test_outside_bounds_goes_at_once),
        cmocka_unit_test(test_fair_share),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

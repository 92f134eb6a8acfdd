/* Unit tests for manager/scaling: the Little's-law estimate, bounds (min, max, server budget),
 * step limits both ways, hold, and the fallbacks when rates are unusable. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <math.h>

#include "manager/scaling.h"
#include "test_manager_fixture.h"

static void add_busy(struct snapshot *s, int n, const char *app, int64_t first_id)
{
    for (int i = 0; i < n; i++)
        fx_conn(s, first_id + i, "app", app, CONN_STATE_ACTIVE, 1);
}

static void add_idle(struct snapshot *s, int n, const char *app, int64_t first_id)
{
    for (int i = 0; i < n; i++)
        fx_conn(s, first_id + i, "app", app, CONN_STATE_IDLE, 30);
}

static void test_littles_law_shrink_with_step(void **state)
{
    (void)state;
    struct snapshot prev, cur;
    struct manager_options o;
    struct scaling_decision d;
    fx_options(&o);
    fx_snapshot(&prev, SNAPSHOT_MODE_SERVE, FX_NOW - 10000);
    fx_snapshot(&cur, SNAPSHOT_MODE_SERVE, FX_NOW);
    prev.counters.has_pool_totals = cur.counters.has_pool_totals = true;
    prev.counters.requests_total = 1000;
    cur.counters.requests_total = 1410; /* 41 tx/s */
    prev.counters.query_time_total_ms = 5000;
    cur.counters.query_time_total_ms = 5000 + 410 * 78.0; /* 78 ms each */
    add_busy(&cur, 3, "api", 1);
    add_idle(&cur, 9, "api", 100);
    scaling_decide(&prev, &cur, &o, 12, &d);
    assert_true(fabs(d.observed_concurrency - 3.198) < 1e-9);
    assert_int_equal(d.peak_busy, 3);
    assert_int_equal(d.current_size, 12);
    assert_int_equal(d.min_size, 5);
    assert_int_equal(d.max_size, 100);
    assert_int_equal(d.target_size, 11); /* desired 5, but one 15% step from 12 is 1 */
    assert_int_equal(d.decision, SCALING_SHRINK);
    assert_false(d.applied);
    assert_string_equal(d.reason,
                        "mean busy 3.2 (Little's law: 41.0 tx/s x 78.0 ms) x 1.25 headroom = "
                        "4.0; peak busy 3 -> 4; bounded to min 5; current 12, shrink step 15% "
                        "allows 11 -> target 11 (shrink)");
    assert_string_equal(scaling_verdict_name(d.decision), "shrink");
    snapshot_free(&prev);
    snapshot_free(&cur);
    options_free(&o);
}

static void test_grow_step_and_max(void **state)
{
    (void)state;
    struct snapshot cur;
    struct manager_options o;
    struct scaling_decision d;
    fx_options(&o);
    fx_snapshot(&cur, SNAPSHOT_MODE_INSPECT, FX_NOW);
    add_busy(&cur, 50, "api", 1);
    /* No prev: mean = busy now = 50, x 1.25 = 62.5 -> 63; +20% of 20 = 4 -> 24. */
    scaling_decide(NULL, &cur, &o, 20, &d);
    assert_true(d.observed_concurrency == 50.0);
    assert_int_equal(d.target_size, 24);
    assert_int_equal(d.decision, SCALING_GROW);
    assert_non_null(strstr(d.reason, "growth step 20% allows 24"));
    /* A big enough step reaches the need exactly. */
    o.growth_rate_pct = 100;
    scaling_decide(NULL, &cur, &o, 40, &d);
    assert_int_equal(d.target_size, 63);
    /* Max bound; at the max already: hold. */
    o.max_pool_size = 60;
    scaling_decide(NULL, &cur, &o, 60, &d);
    assert_int_equal(d.target_size, 60);
    assert_int_equal(d.decision, SCALING_HOLD);
    assert_non_null(strstr(d.reason, "bounded to max 60"));
    /* Above the max: back to it in one step, whatever the shrink rate. */
    scaling_decide(NULL, &cur, &o, 90, &d);
    assert_int_equal(d.target_size, 60);
    assert_int_equal(d.decision, SCALING_SHRINK);
    /* The step is at least one connection: 20% of 3 is 0.6. */
    o.min_pool_size = 1;
    o.growth_rate_pct = 20;
    scaling_decide(NULL, &cur, &o, 3, &d);
    assert_int_equal(d.target_size, 4);
    /* 0% growth disables growing. */
    o.growth_rate_pct = 0;
    scaling_decide(NULL, &cur, &o, 3, &d);
    assert_int_equal(d.target_size, 3);
    assert_int_equal(d.decision, SCALING_HOLD);
    snapshot_free(&cur);
    options_free(&o);
}

static void test_min_bound_and_hold(void **state)
{
    (void)state;
    struct snapshot cur;
    struct manager_options o;
    struct scaling_decision d;
    fx_options(&o);
    fx_snapshot(&cur, SNAPSHOT_MODE_INSPECT, FX_NOW);
    /* Empty server, empty pool: the minimum is reached in one step. */
    scaling_decide(NULL, &cur, &o, -1, &d);
    assert_int_equal(d.current_size, 0);
    assert_int_equal(d.target_size, 5);
    assert_int_equal(d.decision, SCALING_GROW);
    /* All idle, at the minimum: hold. */
    add_idle(&cur, 5, "api", 1);
    scaling_decide(NULL, &cur, &o, -1, &d);
    assert_int_equal(d.current_size, 5);
    assert_int_equal(d.peak_busy, 0);
    assert_int_equal(d.target_size, 5);
    assert_int_equal(d.decision, SCALING_HOLD);
    assert_string_equal(scaling_verdict_name(d.decision), "hold");
    /* A tiny shrink rate still shrinks by one. */
    o.shrink_rate_pct = 1;
    scaling_decide(NULL, &cur, &o, 8, &d);
    assert_int_equal(d.target_size, 7);
    /* 0% shrink disables shrinking. */
    o.shrink_rate_pct = 0;
    scaling_decide(NULL, &cur, &o, 8, &d);
    assert_int_equal(d.target_size, 8);
    assert_int_equal(d.decision, SCALING_HOLD);
    snapshot_free(&cur);
    options_free(&o);
}

static void test_server_budget(void **state)
{
    (void)state;
    struct snapshot cur;
    struct manager_options o;
    struct scaling_decision d;
    fx_options(&o);
    assert_int_equal(options_set(&o, "application", "api", NULL, 0), OPTIONS_OK);
    fx_snapshot(&cur, SNAPSHOT_MODE_INSPECT, FX_NOW);
    add_busy(&cur, 20, "api", 1);
    add_idle(&cur, 70, "other", 1000);
    fx_conn(&cur, 5000, "me", "api", CONN_STATE_ACTIVE, 0)->is_self = true;
    /* 97 usable - 71 others (incl. ourselves) = 26; need ceil(25) = 25. */
    scaling_decide(NULL, &cur, &o, -1, &d);
    assert_int_equal(d.server_budget, 26);
    assert_int_equal(d.current_size, 20);
    assert_int_equal(d.peak_busy, 20);
    assert_int_equal(d.target_size, 24); /* one 20% step */
    /* Fill the server: budget 3, below min 5; never propose more than the server gives. */
    add_idle(&cur, 23, "other", 2000);
    scaling_decide(NULL, &cur, &o, -1, &d);
    assert_int_equal(d.server_budget, 3);
    assert_int_equal(d.target_size, 3);
    assert_int_equal(d.decision, SCALING_SHRINK);
    assert_non_null(strstr(d.reason, "bounded to server budget 3 (97 usable slots - 94 other "
                                     "connections)"));
    /* Overcommitted server: budget 0. */
    add_idle(&cur, 10, "other", 3000);
    scaling_decide(NULL, &cur, &o, -1, &d);
    assert_int_equal(d.server_budget, 0);
    assert_int_equal(d.target_size, 0);
    /* Unknown capacity: no budget. */
    cur.capacity.usable = 0;
    cur.capacity.max_connections = 0;
    scaling_decide(NULL, &cur, &o, -1, &d);
    assert_int_equal(d.server_budget, -1);
    assert_int_equal(d.target_size, 24);
    snapshot_free(&cur);
    options_free(&o);
}

/* Serve mode: the records are a pool's clients; those the filters leave out hold no server
 * slot, so the budget is the pool's share of the slots whatever their number. */
static void test_serve_filtered_clients_take_no_slots(void **state)
{
    (void)state;
    struct snapshot cur;
    struct manager_options o;
    struct scaling_decision d;
    fx_options(&o);
    assert_int_equal(options_set(&o, "application", "api", NULL, 0), OPTIONS_OK);
    assert_int_equal(options_set(&o, "min_pool_size", "3", NULL, 0), OPTIONS_OK);
    fx_snapshot(&cur, SNAPSHOT_MODE_SERVE, FX_NOW);
    cur.capacity.usable = 20;
    add_idle(&cur, 150, "other", 1);
    scaling_decide(NULL, &cur, &o, 5, &d);
    assert_int_equal(d.server_budget, 20);
    assert_int_equal(d.target_size, 4); /* one 15% step towards min 3, not to 0 */
    assert_null(strstr(d.reason, "server budget"));
    snapshot_free(&cur);
    options_free(&o);
}

static void test_session_counters_and_guards(void **state)
{
    (void)state;
    struct snapshot prev, cur;
    struct manager_options o;
    struct scaling_decision d;
    fx_options(&o);
    o.min_pool_size = 1;
    fx_snapshot(&prev, SNAPSHOT_MODE_INSPECT, FX_NOW - 10000);
    fx_snapshot(&cur, SNAPSHOT_MODE_INSPECT, FX_NOW);
    prev.counters.has_sessions = cur.counters.has_sessions = true;
    prev.counters.active_time_ms = 100000;
    cur.counters.active_time_ms = 130000;
    prev.counters.idle_in_xact_time_ms = 5000;
    cur.counters.idle_in_xact_time_ms = 15000;
    add_busy(&cur, 2, "api", 1);
    add_idle(&cur, 8, "api", 10);
    /* (30000 + 10000) ms busy over 10 s = 4.0, x 1.25 = 5. */
    scaling_decide(&prev, &cur, &o, -1, &d);
    assert_true(d.observed_concurrency == 4.0);
    assert_int_equal(d.current_size, 10);
    assert_int_equal(d.target_size, 9); /* desired 5, one 15% step from 10 */
    assert_non_null(strstr(d.reason, "session counters: 40000 ms active + idle in transaction "
                                     "over 10.0 s"));

    /* Counters went down: fall back to the busy count now (2 -> 2.5 -> 3). */
    cur.counters.active_time_ms = 10;
    scaling_decide(&prev, &cur, &o, -1, &d);
    assert_true(d.observed_concurrency == 2.0);
    assert_non_null(strstr(d.reason, "busy connections now"));
    /* Clock went backwards: same fallback, nothing negative. */
    cur.counters.active_time_ms = 130000;
    prev.taken_ms = FX_NOW + 10000;
    scaling_decide(&prev, &cur, &o, -1, &d);
    assert_true(d.observed_concurrency == 2.0);
    assert_true(d.target_size >= 1);
    snapshot_free(&prev);
    snapshot_free(&cur);
    options_free(&o);
}

static void test_serve_waiting_clients(void **state)
{
    (void)state;
    struct snapshot cur;
    struct manager_options o;
    struct scaling_decision d;
    fx_options(&o);
    fx_snapshot(&cur, SNAPSHOT_MODE_SERVE, FX_NOW);
    cur.capacity.pool_current = 10;
    cur.capacity.pool_max = 100;
    add_busy(&cur, 10, "api", 1);
    fx_conn(&cur, 50, "app", "api", CONN_STATE_WAITING, 1);
    cur.counters.waiting_clients = 6; /* one of them has a record above */
    /* busy 11 -> 13.75 -> 14, + 5 queued without a record = 19; one 20% step from 10 = 12. */
    scaling_decide(NULL, &cur, &o, -1, &d);
    assert_int_equal(d.current_size, 10); /* the pool's size, not the 11 client records */
    assert_int_equal(d.peak_busy, 11);
    assert_non_null(strstr(d.reason, "+ 5 queued clients -> 19"));
    assert_int_equal(d.target_size, 12);
    assert_int_equal(d.decision, SCALING_GROW);
    snapshot_free(&cur);
    options_free(&o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_littles_law_shrink_with_step),
        cmocka_unit_test(test_grow_step_and_max),
        cmocka_unit_test(test_min_bound_and_hold),
        cmocka_unit_test(test_server_budget),
        cmocka_unit_test(test_serve_filtered_clients_take_no_slots),
        cmocka_unit_test(test_session_counters_and_guards),
        cmocka_unit_test(test_serve_waiting_clients),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

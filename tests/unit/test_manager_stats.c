/* Unit tests for manager/stats: counts, utilisation, rates and their guards, per application. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <math.h>

#include "manager/stats.h"
#include "test_manager_fixture.h"

static void test_empty_server(void **state)
{
    (void)state;
    struct snapshot cur;
    struct manager_options o;
    struct stats_report r;
    fx_snapshot(&cur, SNAPSHOT_MODE_INSPECT, FX_NOW);
    fx_options(&o);
    assert_true(stats_compute(NULL, &cur, &o, &r));
    assert_int_equal(r.total, 0);
    assert_int_equal(r.max, 97);
    assert_true(r.utilization_pct == 0.0);
    assert_false(r.have_rates);
    assert_true(r.avg_query_ms == -1.0 && r.avg_connect_ms == -1.0 && r.avg_wait_ms == -1.0);
    assert_int_equal(r.n_applications, 0);
    assert_null(r.by_application);
    stats_report_free(&r);
    snapshot_free(&cur);
    options_free(&o);
}

static void test_counts_by_state_and_application(void **state)
{
    (void)state;
    struct snapshot cur;
    struct manager_options o;
    struct stats_report r;
    fx_snapshot(&cur, SNAPSHOT_MODE_INSPECT, FX_NOW);
    fx_options(&o);
    fx_conn(&cur, 1, "app", "api", CONN_STATE_ACTIVE, 2);
    fx_conn(&cur, 2, "app", "api", CONN_STATE_IDLE, 30);
    fx_conn(&cur, 3, "app", "api", CONN_STATE_IDLE_IN_XACT, 90);
    fx_conn(&cur, 4, "app", "worker", CONN_STATE_IDLE_IN_XACT_ABORTED, 20);
    fx_conn(&cur, 5, "app", "worker", CONN_STATE_IDLE, 400)->waiting_on_lock = false;
    fx_conn(&cur, 6, "app", "api", CONN_STATE_ACTIVE, 1)->waiting_on_lock = true;
    fx_conn(&cur, 7, "app", "", CONN_STATE_FASTPATH, 1);
    assert_true(stats_compute(NULL, &cur, &o, &r));
    assert_int_equal(r.total, 7);
    assert_int_equal(r.active, 3);
    assert_int_equal(r.idle, 2);
    assert_int_equal(r.idle_in_transaction, 2);
    assert_int_equal(r.broken, 1);
    assert_int_equal(r.waiting, 1);
    assert_int_equal(r.oldest_connection_ms, FX_S(410));
    assert_int_equal(r.longest_transaction_ms, FX_S(90));
    assert_int_equal(r.longest_idle_ms, FX_S(400));
    assert_true(fabs(r.utilization_pct - 700.0 / 97.0) < 1e-9);
    assert_int_equal(r.n_applications, 3);
    assert_string_equal(r.by_application[0].application, "api");
    assert_int_equal(r.by_application[0].total, 4);
    assert_int_equal(r.by_application[0].active, 2);
    assert_int_equal(r.by_application[0].idle, 1);
    assert_int_equal(r.by_application[0].idle_in_transaction, 1);
    assert_string_equal(r.by_application[1].application, "worker");
    assert_int_equal(r.by_application[1].total, 2);
    assert_string_equal(r.by_application[2].application, "");
    stats_report_free(&r);

    /* Filters narrow the counts, but utilisation still counts every slot taken. */
    assert_int_equal(options_set(&o, "application", "worker", NULL, 0), OPTIONS_OK);
    assert_true(stats_compute(NULL, &cur, &o, &r));
    assert_int_equal(r.total, 2);
    assert_int_equal(r.idle, 1);
    assert_int_equal(r.n_applications, 1);
    assert_true(fabs(r.utilization_pct - 700.0 / 97.0) < 1e-9);
    stats_report_free(&r);
    snapshot_free(&cur);
    options_free(&o);
}

static void test_all_slots_used(void **state)
{
    (void)state;
    struct snapshot cur;
    struct manager_options o;
    struct stats_report r;
    fx_snapshot(&cur, SNAPSHOT_MODE_INSPECT, FX_NOW);
    cur.capacity.usable = 0; /* derived from max_connections - reserved */
    fx_options(&o);
    for (int i = 0; i < 97; i++)
        fx_conn(&cur, 100 + i, "app", "api", CONN_STATE_IDLE, 5);
    assert_true(stats_compute(NULL, &cur, &o, &r));
    assert_int_equal(r.max, 97);
    assert_true(r.utilization_pct == 100.0);
    assert_int_equal(r.idle, 97);
    assert_int_equal(r.active, 0);
    stats_report_free(&r);
    snapshot_free(&cur);
    options_free(&o);
}

static void set_sessions(struct snapshot *s, int64_t sessions, int64_t commits, double active)
{
    s->counters.has_sessions = true;
    s->counters.has_xacts = true;
    s->counters.sessions = sessions;
    s->counters.xact_commit = commits;
    s->counters.xact_rollback = 0;
    s->counters.active_time_ms = active;
}

static void test_rates_inspect(void **state)
{
    (void)state;
    struct snapshot prev, cur;
    struct manager_options o;
    struct stats_report r;
    fx_options(&o);
    fx_snapshot(&prev, SNAPSHOT_MODE_INSPECT, FX_NOW - 2000);
    fx_snapshot(&cur, SNAPSHOT_MODE_INSPECT, FX_NOW);
    set_sessions(&prev, 100, 1000, 5000);
    set_sessions(&cur, 110, 1100, 6000);
    fx_conn(&prev, 1, "app", "api", CONN_STATE_IDLE, 1);
    fx_conn(&cur, 1, "app", "api", CONN_STATE_IDLE, 1);
    fx_conn(&cur, 2, "app", "api", CONN_STATE_IDLE, 1);
    assert_true(stats_compute(&prev, &cur, &o, &r));
    assert_true(r.have_rates);
    assert_false(r.counters_reset);
    assert_true(r.interval_s == 2.0);
    assert_true(r.requests_per_sec == 50.0);
    assert_true(r.created_per_sec == 5.0);
    /* 10 sessions started, connections grew by 1: 9 closed over 2 s. */
    assert_true(r.closed_per_sec == 4.5);
    /* 1000 ms of active time over 100 transactions. */
    assert_true(r.avg_query_ms == 10.0);
    stats_report_free(&r);
    snapshot_free(&prev);
    snapshot_free(&cur);
    options_free(&o);
}

static void test_rates_guarded(void **state)
{
    (void)state;
    struct snapshot prev, cur;
    struct manager_options o;
    struct stats_report r;
    fx_options(&o);

    /* Clock went backwards: no rates, nothing negative or infinite. */
    fx_snapshot(&prev, SNAPSHOT_MODE_INSPECT, FX_NOW + 5000);
    fx_snapshot(&cur, SNAPSHOT_MODE_INSPECT, FX_NOW);
    set_sessions(&prev, 100, 1000, 5000);
    set_sessions(&cur, 110, 1100, 6000);
    assert_true(stats_compute(&prev, &cur, &o, &r));
    assert_false(r.have_rates);
    assert_true(r.requests_per_sec == 0.0 && r.created_per_sec == 0.0);
    assert_true(isfinite(r.avg_query_ms));
    stats_report_free(&r);

    /* Zero interval. */
    prev.taken_ms = FX_NOW;
    assert_true(stats_compute(&prev, &cur, &o, &r));
    assert_false(r.have_rates);
    stats_report_free(&r);

    /* Counters went down (pg_stat_reset): no rates, reset flagged. */
    prev.taken_ms = FX_NOW - 1000;
    set_sessions(&cur, 3, 20, 10);
    assert_true(stats_compute(&prev, &cur, &o, &r));
    assert_false(r.have_rates);
    assert_true(r.counters_reset);
    assert_true(r.requests_per_sec == 0.0);
    assert_true(r.avg_query_ms == 0.5); /* cumulative since the reset: 10 ms / 20 */
    stats_report_free(&r);
    snapshot_free(&prev);
    snapshot_free(&cur);
    options_free(&o);
}

static void test_serve_pool_totals(void **state)
{
    (void)state;
    struct snapshot prev, cur;
    struct manager_options o;
    struct stats_report r;
    fx_options(&o);
    fx_snapshot(&prev, SNAPSHOT_MODE_SERVE, FX_NOW - 4000);
    fx_snapshot(&cur, SNAPSHOT_MODE_SERVE, FX_NOW);
    prev.capacity.pool_max = cur.capacity.pool_max = 20;
    struct snapshot_counters *a = &prev.counters, *b = &cur.counters;
    a->has_pool_totals = b->has_pool_totals = true;
    a->requests_total = 1000;
    b->requests_total = 1400;
    a->query_time_total_ms = 10000;
    b->query_time_total_ms = 14000;
    a->created_total = 10;
    b->created_total = 14;
    a->closed_total = 2;
    b->closed_total = 4;
    a->connect_time_total_ms = 50;
    b->connect_time_total_ms = 70;
    b->waits_total = 10;
    b->wait_time_total_ms = 25;
    for (int i = 0; i < 5; i++)
        fx_conn(&cur, i + 1, "app", "api", CONN_STATE_ACTIVE, 1);
    assert_true(stats_compute(&prev, &cur, &o, &r));
    assert_true(r.have_rates);
    assert_true(r.requests_per_sec == 100.0);
    assert_true(r.created_per_sec == 1.0);
    assert_true(r.closed_per_sec == 0.5);
    assert_true(r.avg_query_ms == 10.0);
    assert_true(r.avg_connect_ms == 5.0);
    assert_true(r.avg_wait_ms == 2.5);
    assert_int_equal(r.max, 20);
    assert_true(r.utilization_pct == 25.0);
    stats_report_free(&r);
    /* Idle clients without a server use no slot; a queued one wants one. */
    for (int i = 0; i < 10; i++)
        fx_conn(&cur, 100 + i, "app", "api", CONN_STATE_IDLE, 1)->pid = 0;
    fx_conn(&cur, 200, "app", "api", CONN_STATE_WAITING, 1)->pid = 0;
    assert_true(stats_compute(&prev, &cur, &o, &r));
    assert_true(r.utilization_pct == 30.0);
    stats_report_free(&r);
    snapshot_free(&prev);
    snapshot_free(&cur);
    options_free(&o);
}

static void test_future_times_and_unknown_capacity(void **state)
{
    (void)state;
    struct snapshot cur;
    struct manager_options o;
    struct stats_report r;
    fx_options(&o);
    snapshot_init(&cur, SNAPSHOT_MODE_INSPECT, FX_NOW); /* no capacity known */
    struct conn_record *rec = fx_conn(&cur, 1, "app", "api", CONN_STATE_IDLE_IN_XACT, 10);
    rec->connected_ms = FX_NOW + 60000; /* server clock ahead of ours */
    rec->state_change_ms = FX_NOW + 30000;
    rec->xact_start_ms = FX_NOW + 30000;
    assert_true(stats_compute(NULL, &cur, &o, &r));
    assert_int_equal(r.oldest_connection_ms, 0);
    assert_int_equal(r.longest_transaction_ms, 0);
    assert_int_equal(r.longest_idle_ms, 0);
    assert_int_equal(r.max, 0);
    assert_true(r.utilization_pct == 0.0);
    stats_report_free(&r);
    snapshot_free(&cur);
    options_free(&o);
}

static void test_five_thousand_connections(void **state)
{
    (void)state;
    struct snapshot cur;
    struct manager_options o;
    struct stats_report r;
    fx_options(&o);
    fx_snapshot(&cur, SNAPSHOT_MODE_INSPECT, FX_NOW);
    cur.capacity.max_connections = 5003;
    cur.capacity.usable = 5000;
    for (int i = 0; i < 5000; i++) {
        char app[16];
        snprintf(app, sizeof(app), "app%d", i % 50);
        assert_non_null(fx_conn(&cur, i + 1, "u", app,
                                i % 4 == 0 ? CONN_STATE_ACTIVE : CONN_STATE_IDLE, i % 600));
    }
    assert_true(stats_compute(NULL, &cur, &o, &r));
    assert_int_equal(r.total, 5000);
    assert_int_equal(r.active, 1250);
    assert_int_equal(r.idle, 3750);
    assert_true(r.utilization_pct == 100.0);
    assert_int_equal(r.n_applications, 50);
    for (size_t i = 0; i < r.n_applications; i++)
        assert_int_equal(r.by_application[i].total, 100);
    /* Equal totals sort by name. */
    assert_string_equal(r.by_application[0].application, "app0");
    assert_string_equal(r.by_application[1].application, "app1");
    stats_report_free(&r);
    snapshot_free(&cur);
    options_free(&o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_server),
        cmocka_unit_test(test_counts_by_state_and_application),
        cmocka_unit_test(test_all_slots_used),
        cmocka_unit_test(test_rates_inspect),
        cmocka_unit_test(test_rates_guarded),
        cmocka_unit_test(test_serve_pool_totals),
        cmocka_unit_test(test_future_times_and_unknown_capacity),
        cmocka_unit_test(test_five_thousand_connections),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

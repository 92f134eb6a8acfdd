/* Unit tests for manager/analysis: anomalies, recommendations and overall status computed
 * from real reports of hand-built snapshots. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "manager/analysis.h"
#include "test_manager_fixture.h"

struct reports {
    struct stats_report stats;
    struct leak_report leaks;
    struct health_report health;
    struct scaling_decision scaling;
    struct kill_plan idle;
    struct analysis_report analysis;
};

static void run_all(const struct snapshot *prev, const struct snapshot *cur,
                    const struct manager_options *o, const struct health_probe *probes,
                    size_t n_probes, struct reports *r)
{
    memset(r, 0, sizeof(*r));
    assert_true(stats_compute(prev, cur, o, &r->stats));
    assert_true(leaks_detect(prev, cur, o, &r->leaks));
    health_summarize(probes, n_probes, cur, o, &r->health);
    scaling_decide(prev, cur, o, o->current_size, &r->scaling);
    assert_true(reaper_plan(cur, o, &r->idle));
    r->analysis.stats = &r->stats;
    r->analysis.leaks = &r->leaks;
    r->analysis.health = &r->health;
    r->analysis.scaling = &r->scaling;
    r->analysis.idle = &r->idle;
    analysis_run(prev, cur, o, &r->analysis);
}

static void free_all(struct reports *r)
{
    stats_report_free(&r->stats);
    leak_report_free(&r->leaks);
    kill_plan_free(&r->idle);
}

static const struct anomaly *find_anomaly(const struct analysis_report *a, const char *code)
{
    for (size_t i = 0; i < a->n_anomalies; i++) {
        if (strcmp(a->anomalies[i].code, code) == 0)
            return &a->anomalies[i];
    }
    return NULL;
}

static const struct recommendation *find_setting(const struct analysis_report *a,
                                                 const char *prefix)
{
    for (size_t i = 0; i < a->n_recommendations; i++) {
        if (strncmp(a->recommendations[i].setting, prefix, strlen(prefix)) == 0)
            return &a->recommendations[i];
    }
    return NULL;
}

static void assert_no_idle_session_timeout(const struct analysis_report *a)
{
    for (size_t i = 0; i < a->n_recommendations; i++) {
        assert_null(strstr(a->recommendations[i].setting, "idle_session_timeout"));
        assert_null(strstr(a->recommendations[i].message, "idle_session_timeout"));
    }
}

static void test_healthy_server_is_ok(void **state)
{
    (void)state;
    struct snapshot cur;
    struct manager_options o;
    struct reports r;
    fx_options(&o);
    fx_snapshot(&cur, SNAPSHOT_MODE_INSPECT, FX_NOW);
    for (int i = 0; i < 5; i++)
        fx_conn(&cur, i + 1, "app", "api", i < 2 ? CONN_STATE_ACTIVE : CONN_STATE_IDLE, 5);
    struct health_probe ok;
    memset(&ok, 0, sizeof(ok));
    ok.healthy = true;
    ok.latency_ms = 3;
    run_all(NULL, &cur, &o, &ok, 1, &r);
    assert_int_equal(r.analysis.n_anomalies, 0);
    assert_int_equal(r.analysis.n_recommendations, 0);
    assert_false(r.analysis.has_leak_risk);
    assert_int_equal(r.analysis.status, REPORT_OK);
    /* The inputs are left as the caller set them. */
    assert_ptr_equal(r.analysis.stats, &r.stats);
    assert_ptr_equal(r.analysis.idle, &r.idle);
    free_all(&r);
    snapshot_free(&cur);
    options_free(&o);
}

static void test_leaky_server(void **state)
{
    (void)state;
    struct snapshot prev, cur;
    struct manager_options o;
    struct reports r;
    fx_options(&o);
    fx_snapshot(&prev, SNAPSHOT_MODE_INSPECT, FX_NOW - 10000);
    fx_snapshot(&cur, SNAPSHOT_MODE_INSPECT, FX_NOW);
    prev.counters.has_sessions = cur.counters.has_sessions = true;
    prev.counters.sessions = 1000;
    cur.counters.sessions = 1050; /* 5 sessions/s */
    prev.counters.sessions_abandoned = 3;
    cur.counters.sessions_abandoned = 7;
    cur.server.invisible_rows = 2;
    fx_conn(&cur, 1, "app", "api", CONN_STATE_IDLE_IN_XACT, 600);
    fx_conn(&cur, 2, "app", "api", CONN_STATE_IDLE_IN_XACT, 400);
    for (int i = 0; i < 12; i++)
        fx_conn(&cur, 10 + i, "app", "web", CONN_STATE_IDLE, 900);
    fx_conn(&cur, 50, "", "", CONN_STATE_OTHER, 0)->visible = false;
    fx_conn(&cur, 51, "", "", CONN_STATE_OTHER, 0)->visible = false;
    run_all(&prev, &cur, &o, NULL, 0, &r);

    assert_true(r.analysis.has_leak_risk);
    assert_non_null(find_anomaly(&r.analysis, "connection_leak"));
    const struct anomaly *iit = find_anomaly(&r.analysis, "idle_in_transaction");
    assert_non_null(iit);
    assert_string_equal(iit->message, "2 sessions idle in transaction longer than 1m (longest "
                                      "10m); they hold locks and hold back vacuum");
    assert_non_null(find_anomaly(&r.analysis, "long_transaction"));
    const struct anomaly *churn = find_anomaly(&r.analysis, "connection_churn");
    assert_non_null(churn);
    assert_string_equal(churn->message,
                        "5.0 new sessions per second; each one costs a backend start");
    assert_non_null(find_anomaly(&r.analysis, "sessions_abandoned"));
    assert_non_null(find_anomaly(&r.analysis, "many_idle_connections"));
    const struct anomaly *priv = find_anomaly(&r.analysis, "insufficient_privilege");
    assert_non_null(priv);
    assert_non_null(strstr(priv->message, "2 sessions are hidden"));
    assert_null(find_anomaly(&r.analysis, "capacity_near_limit"));
    assert_null(find_anomaly(&r.analysis, "in_recovery"));

    const struct recommendation *t =
        find_setting(&r.analysis, "idle_in_transaction_session_timeout");
    assert_non_null(t);
    assert_string_equal(t->setting, "idle_in_transaction_session_timeout = '1min'");
    assert_int_equal(t->severity, REPORT_WARNING);
    assert_no_idle_session_timeout(&r.analysis);
    /* kill-idle candidates -> a recommendation to run it. */
    bool saw_kill = false;
    for (size_t i = 0; i < r.analysis.n_recommendations; i++)
        saw_kill |= strstr(r.analysis.recommendations[i].message, "kill-idle") != NULL;
    assert_true(saw_kill);
    assert_true(r.analysis.status >= REPORT_WARNING);
    free_all(&r);

    /* The server already ends idle transactions: no such recommendation. */
    cur.server.idle_in_xact_session_timeout_ms = 60000;
    run_all(&prev, &cur, &o, NULL, 0, &r);
    assert_null(find_setting(&r.analysis, "idle_in_transaction_session_timeout"));
    free_all(&r);
    snapshot_free(&prev);
    snapshot_free(&cur);
    options_free(&o);
}

static void test_full_server_is_critical(void **state)
{
    (void)state;
    struct snapshot cur;
    struct manager_options o;
    struct reports r;
    fx_options(&o);
    fx_snapshot(&cur, SNAPSHOT_MODE_INSPECT, FX_NOW);
    cur.server.in_recovery = true;
    for (int i = 0; i < 97; i++)
        fx_conn(&cur, i + 1, "app", "api", CONN_STATE_ACTIVE, 1);
    struct health_probe probes[2];
    memset(probes, 0, sizeof(probes));
    probes[0].healthy = false;
    probes[0].latency_ms = 5;
    probes[1].healthy = true;
    probes[1].latency_ms = 5;
    run_all(NULL, &cur, &o, probes, 2, &r);
    const struct anomaly *cap = find_anomaly(&r.analysis, "capacity_at_limit");
    assert_non_null(cap);
    assert_int_equal(cap->severity, REPORT_CRITICAL);
    assert_non_null(find_anomaly(&r.analysis, "in_recovery"));
    const struct anomaly *h = find_anomaly(&r.analysis, "health_failures");
    assert_non_null(h);
    assert_int_equal(h->severity, REPORT_WARNING);
    assert_int_equal(r.analysis.status, REPORT_CRITICAL);
    assert_false(r.analysis.has_leak_risk);
    assert_no_idle_session_timeout(&r.analysis);
    free_all(&r);
    snapshot_free(&cur);

    /* 85%: near the limit, a warning. */
    fx_snapshot(&cur, SNAPSHOT_MODE_INSPECT, FX_NOW);
    for (int i = 0; i < 83; i++)
        fx_conn(&cur, i + 1, "app", "api", CONN_STATE_ACTIVE, 1);
    run_all(NULL, &cur, &o, NULL, 0, &r);
    const struct anomaly *near = find_anomaly(&r.analysis, "capacity_near_limit");
    assert_non_null(near);
    assert_int_equal(near->severity, REPORT_WARNING);
    assert_int_equal(r.analysis.status, REPORT_WARNING);
    free_all(&r);
    snapshot_free(&cur);
    options_free(&o);
}

static void test_scaling_recommendation_and_null_inputs(void **state)
{
    (void)state;
    struct snapshot cur;
    struct manager_options o;
    struct reports r;
    fx_options(&o);
    fx_snapshot(&cur, SNAPSHOT_MODE_SERVE, FX_NOW);
    cur.capacity.pool_current = 10;
    cur.capacity.pool_max = 100;
    for (int i = 0; i < 10; i++)
        fx_conn(&cur, i + 1, "app", "api", CONN_STATE_ACTIVE, 1);
    run_all(NULL, &cur, &o, NULL, 0, &r);
    const struct recommendation *size = find_setting(&r.analysis, "default_pool_size");
    assert_non_null(size);
    assert_string_equal(size->setting, "default_pool_size = 12");
    assert_non_null(strstr(size->message, "Grow the pool from 10 to 12"));
    free_all(&r);

    /* Every input may be NULL; the snapshots alone still give their anomalies. */
    struct analysis_report a;
    memset(&a, 0, sizeof(a));
    cur.server.in_recovery = true;
    analysis_run(NULL, &cur, &o, &a);
    assert_int_equal(a.n_anomalies, 1);
    assert_string_equal(a.anomalies[0].code, "in_recovery");
    assert_int_equal(a.status, REPORT_WARNING);
    snapshot_free(&cur);
    options_free(&o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_healthy_server_is_ok),
        cmocka_unit_test(test_leaky_server),
        cmocka_unit_test(test_full_server_is_critical),
        cmocka_unit_test(test_scaling_recommendation_and_null_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

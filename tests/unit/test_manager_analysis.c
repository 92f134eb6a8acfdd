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
    leaks_report_free(&r->leaks);
    reaper_kill_plan_free(&r->idle);
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

static struct pool_record *fx_pool(struct snapshot *snap, const char *db, const char *server,
                                   int size)
{
    struct pool_record *pl = snapshot_add_pool(snap);
    assert_non_null(pl);
    snprintf(pl->database, sizeof(pl->database), "%s", db);
    snprintf(pl->user, sizeof(pl->user), "app");
    snprintf(pl->server, sizeof(pl->server), "%s", server);
    pl->mode = SNAPSHOT_POOL_TRANSACTION;
    pl->size = pl->max_size = size;
    pl->query_wait_timeout_ms = FX_S(120);
    pl->idle_transaction_timeout_ms = FX_S(30);
    return pl;
}

/* Serve mode: what the pooler sees per pool gives its own anomalies and recommendations. */
static void test_pool_records(void **state)
{
    (void)state;
    struct snapshot cur;
    struct manager_options o;
    fx_options(&o);
    fx_snapshot(&cur, SNAPSHOT_MODE_SERVE, FX_NOW);
    /* Two pools on one server that may open 60 + 50 (+5 reserve) of its 97 usable slots; a
     * third on another server is not counted with them. */
    struct pool_record *queued = fx_pool(&cur, "shop", "db1:5432", 10);
    queued->max_size = 60;
    queued->server_usable = 97;
    struct pool_record *other = fx_pool(&cur, "crm", "db1:5432", 50);
    other->reserve = 5;
    fx_pool(&cur, "logs", "db2:5432", 90)->server_usable = 97;
    /* shop queues: 400 tx/s x 50 ms = 20 busy, x 1.25 = 25 > 10; p99 wait 70 s of 120 s. */
    queued->xacts_per_sec = 400;
    queued->avg_xact_ms = 50;
    queued->wait_p99_ms = 70000;
    queued->xact_p99_ms = 180;
    struct analysis_report a;
    memset(&a, 0, sizeof(a));
    analysis_run(NULL, &cur, &o, &a);
    const struct anomaly *over = find_anomaly(&a, "pools_exceed_server");
    assert_non_null(over);
    assert_non_null(strstr(over->message, "the 2 pools on server db1:5432 may open 115"));
    assert_non_null(strstr(over->message, "97 usable"));
    assert_non_null(find_anomaly(&a, "wait_near_timeout"));
    const struct recommendation *size = find_setting(&a, "pool_size = 25");
    assert_non_null(size);
    assert_non_null(strstr(size->message, "400.0 tx/s x 50.0 ms"));
    assert_non_null(strstr(size->message, "Auto-scaling may grow it"));
    /* idle_transaction_timeout is set: no suggestion for it. */
    assert_null(find_setting(&a, "idle_transaction_timeout"));
    assert_int_equal(a.status, REPORT_WARNING);

    /* Off: suggested from the p99 transaction (180 ms x 10 = 1.8 s, whole seconds up). */
    for (size_t i = 0; i < cur.n_pools; i++)
        cur.pools[i].idle_transaction_timeout_ms = 0;
    /* A session pool whose 8 linked servers are busy 5% of the time. */
    struct pool_record *sess = fx_pool(&cur, "admin", "db3:5432", 8);
    sess->mode = SNAPSHOT_POOL_SESSION;
    sess->sv_active = 8;
    sess->queries_per_sec = 40;
    sess->avg_query_ms = 10; /* 0.4 busy of 8 */
    sess->idle_transaction_timeout_ms = 0;
    memset(&a, 0, sizeof(a));
    analysis_run(NULL, &cur, &o, &a);
    const struct recommendation *idle = find_setting(&a, "idle_transaction_timeout");
    assert_non_null(idle);
    assert_string_equal(idle->setting, "idle_transaction_timeout = 2");
    const struct recommendation *mode = find_setting(&a, "pool_mode = transaction");
    assert_non_null(mode);
    const char *why = mode ? mode->message : "";
    assert_non_null(strstr(why, "busy 5% of the time"));
    assert_int_equal(mode ? mode->severity : REPORT_CRITICAL, REPORT_OK);

    /* Calm pools: none of these. */
    queued->wait_p99_ms = 2;
    queued->max_size = 10;
    sess->queries_per_sec = 600; /* 6 of 8 busy */
    memset(&a, 0, sizeof(a));
    analysis_run(NULL, &cur, &o, &a);
    assert_null(find_anomaly(&a, "pools_exceed_server"));
    assert_null(find_anomaly(&a, "wait_near_timeout"));
    assert_null(find_setting(&a, "pool_size"));
    assert_null(find_setting(&a, "pool_mode"));
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
        cmocka_unit_test(test_pool_records),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for the engine's shared decision rules: one utilisation rule for monitor,
 * status and full-analysis (and its boundary), the leak risk enum and status, the health
 * reason without a status prefix, which sessions count as leak-like, and the kill-idle
 * protections for pgwarden's own connections and excluded client addresses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "manager/analysis.h"
#include "test_manager_fixture.h"

static const struct anomaly *find_anomaly(const struct analysis_report *a, const char *code)
{
    for (size_t i = 0; i < a->n_anomalies; i++) {
        if (strcmp(a->anomalies[i].code, code) == 0)
            return &a->anomalies[i];
    }
    return NULL;
}

/* n active connections on a server with exactly 100 usable slots, so n is the percentage. */
static void snapshot_with(struct snapshot *cur, int n)
{
    fx_snapshot(cur, SNAPSHOT_MODE_INSPECT, FX_NOW);
    cur->capacity.usable = 100;
    for (int i = 0; i < n; i++)
        fx_conn(cur, i + 1, "app", "api", CONN_STATE_ACTIVE, 1);
}

/* The status full-analysis gives the same snapshot through its capacity anomalies. */
static enum report_status analysis_capacity_status(const struct snapshot *cur,
                                                   const struct manager_options *o,
                                                   const struct stats_report *stats)
{
    struct analysis_report a = {.stats = stats};
    analysis_run(NULL, cur, o, &a);
    if (find_anomaly(&a, "capacity_at_limit") != NULL)
        return REPORT_CRITICAL;
    if (find_anomaly(&a, "capacity_near_limit") != NULL)
        return REPORT_WARNING;
    return REPORT_OK;
}

static void test_utilization_rule_and_its_boundaries(void **state)
{
    (void)state;
    struct manager_options o;
    fx_options(&o); /* leak_detection_threshold 80% */
    static const struct {
        int conns;
        enum report_status want;
    } cases[] = {
        {0, REPORT_OK},         {79, REPORT_OK},        {80, REPORT_OK}, /* at the threshold */
        {81, REPORT_WARNING},   {94, REPORT_WARNING},   {95, REPORT_CRITICAL},
        {100, REPORT_CRITICAL}, {120, REPORT_CRITICAL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct snapshot cur;
        struct stats_report stats;
        snapshot_with(&cur, cases[i].conns);
        assert_true(stats_compute(NULL, &cur, &o, &stats));
        assert_int_equal(stats_utilization_status(&stats, &o), cases[i].want);
        /* monitor and full-analysis agree, exactly at the threshold too. */
        assert_int_equal(analysis_capacity_status(&cur, &o, &stats), cases[i].want);
        stats_report_free(&stats);
        snapshot_free(&cur);
    }
    /* Unknown capacity: never a utilisation warning. */
    struct stats_report unknown = {.max = 0, .utilization_pct = 500.0};
    assert_int_equal(stats_utilization_status(&unknown, &o), REPORT_OK);
    options_free(&o);
}

static void test_leak_risk_enum_names_and_status(void **state)
{
    (void)state;
    assert_string_equal(leaks_risk_name(LEAK_RISK_NONE), "none");
    assert_string_equal(leaks_risk_name(LEAK_RISK_LOW), "low");
    assert_string_equal(leaks_risk_name(LEAK_RISK_MEDIUM), "medium");
    assert_string_equal(leaks_risk_name(LEAK_RISK_HIGH), "high");
    assert_string_equal(leaks_risk_name((enum leak_risk)42), "unknown");

    struct leak_report r = {.detected = false, .risk_level = LEAK_RISK_NONE};
    assert_int_equal(leaks_status(&r), REPORT_OK);
    r.detected = true;
    r.risk_level = LEAK_RISK_LOW;
    assert_int_equal(leaks_status(&r), REPORT_WARNING);
    r.risk_level = LEAK_RISK_MEDIUM;
    assert_int_equal(leaks_status(&r), REPORT_WARNING);
    r.risk_level = LEAK_RISK_HIGH;
    assert_int_equal(leaks_status(&r), REPORT_CRITICAL);
}

static void test_quick_status_is_the_worse_of_both_rules(void **state)
{
    (void)state;
    struct manager_options o;
    fx_options(&o);
    struct stats_report stats = {.max = 100, .utilization_pct = 85.0}; /* warning */
    struct leak_report leaks = {.detected = false};
    assert_int_equal(analysis_quick_status(&stats, &leaks, &o), REPORT_WARNING);
    leaks.detected = true;
    leaks.risk_level = LEAK_RISK_HIGH;
    assert_int_equal(analysis_quick_status(&stats, &leaks, &o), REPORT_CRITICAL);
    stats.utilization_pct = 10.0;
    leaks.risk_level = LEAK_RISK_LOW;
    assert_int_equal(analysis_quick_status(&stats, &leaks, &o), REPORT_WARNING);
    leaks.detected = false;
    assert_int_equal(analysis_quick_status(&stats, &leaks, &o), REPORT_OK);
    options_free(&o);
}

static void test_health_reason_carries_no_status_name(void **state)
{
    (void)state;
    struct manager_options o;
    fx_options(&o);
    struct health_probe probes[2] = {{.id = 1, .healthy = true, .latency_ms = 2.0},
                                     {.id = 2, .healthy = false, .latency_ms = 3.0}};
    struct health_report h;
    health_summarize(probes, 2, NULL, &o, &h);
    assert_int_equal(h.status, REPORT_WARNING);
    assert_string_equal(h.reason, "1 of 2 probes failed");
    health_summarize(probes, 1, NULL, &o, &h);
    assert_int_equal(h.status, REPORT_OK);
    assert_string_equal(h.reason, "all probes succeeded");
    options_free(&o);
}

/* A superuser session idle in transaction is a leak like any other; only walsenders, this
 * session, hidden rows and infrastructure are out of scope. full-analysis counts exactly the
 * sessions detect-leaks may report. */
static void test_leak_scope_and_analysis_agree(void **state)
{
    (void)state;
    struct snapshot cur;
    struct manager_options o;
    fx_snapshot(&cur, SNAPSHOT_MODE_INSPECT, FX_NOW);
    fx_options(&o);
    fx_conn(&cur, 1, "postgres", "psql", CONN_STATE_IDLE_IN_XACT, 120)->is_superuser = true;
    fx_conn(&cur, 2, "app", "api", CONN_STATE_IDLE_IN_XACT, 120);
    fx_conn(&cur, 3, "repl", "walreceiver", CONN_STATE_IDLE_IN_XACT, 120)->is_replication = true;
    fx_conn(&cur, 4, "app", "api", CONN_STATE_IDLE_IN_XACT, 120)->is_self = true;
    fx_conn(&cur, 5, "app", "api", CONN_STATE_IDLE_IN_XACT, 120)->visible = false;
    fx_conn(&cur, 6, "authenticator", "PostgREST", CONN_STATE_IDLE_IN_XACT, 120)
        ->is_infrastructure = true;

    assert_true(leaks_may_suspect(&o, &cur.conns[0]));
    assert_true(leaks_may_suspect(&o, &cur.conns[1]));
    for (size_t i = 2; i < cur.n_conns; i++)
        assert_false(leaks_may_suspect(&o, &cur.conns[i]));

    struct leak_report leaks;
    assert_true(leaks_detect(NULL, &cur, &o, &leaks));
    assert_int_equal(leaks.total_suspected, 2);
    bool saw_superuser = false;
    for (size_t i = 0; i < leaks.total_suspected; i++)
        saw_superuser |= leaks.suspects[i].conn->id == 1;
    assert_true(saw_superuser);

    struct analysis_report a = {.leaks = &leaks};
    analysis_run(NULL, &cur, &o, &a);
    const struct anomaly *iit = find_anomaly(&a, "idle_in_transaction");
    assert_non_null(iit);
    assert_non_null(strstr(iit->message, "2 sessions idle in transaction"));

    /* kill-idle still protects the superuser. */
    struct kill_plan plan;
    assert_true(reaper_plan(&cur, &o, &plan));
    for (size_t i = 0; i < plan.n_actions; i++) {
        if (plan.actions[i].conn->id == 1) {
            assert_int_equal(plan.actions[i].result, KILL_SKIPPED_PROTECTED);
            assert_string_equal(plan.actions[i].reason,
                                "protected: superuser session (idle in transaction for 2m)");
        }
    }
    reaper_kill_plan_free(&plan);
    leaks_report_free(&leaks);
    snapshot_free(&cur);
    options_free(&o);
}

static const struct kill_action *action_of(const struct kill_plan *plan, int64_t id)
{
    for (size_t i = 0; i < plan->n_actions; i++) {
        if (plan->actions[i].conn->id == id)
            return &plan->actions[i];
    }
    return NULL;
}

static void test_kill_idle_spares_pgwarden_and_excluded_addresses(void **state)
{
    (void)state;
    struct snapshot cur;
    struct manager_options o;
    fx_snapshot(&cur, SNAPSHOT_MODE_INSPECT, FX_NOW);
    fx_options(&o);
    o.max_kill_percentage = 100.0;
    char err[200];
    assert_int_equal(options_set(&o, "exclude-addr", "10.0.0.0/24, 2001:db8::7", err, sizeof(err)),
                     OPTIONS_OK);
    fx_conn(&cur, 1, "app", "pgwarden", CONN_STATE_IDLE, 900);
    fx_conn(&cur, 2, "app", "pgwarden-inspect", CONN_STATE_IDLE, 900);
    fx_conn(&cur, 3, "app", "", CONN_STATE_IDLE, 900); /* PgBouncer after its reset query */
    cur.conns[2].client_addr = snapshot_name(&cur, "10.0.0.7", SNAPSHOT_ADDR_LEN);
    fx_conn(&cur, 4, "app", "", CONN_STATE_IDLE, 900);
    cur.conns[3].client_addr = snapshot_name(&cur, "10.0.1.7", SNAPSHOT_ADDR_LEN);
    fx_conn(&cur, 5, "app", "", CONN_STATE_IDLE_IN_XACT, 900);
    cur.conns[4].client_addr = snapshot_name(&cur, "::ffff:10.0.0.8", SNAPSHOT_ADDR_LEN);
    fx_conn(&cur, 6, "app", "", CONN_STATE_IDLE, 900);
    cur.conns[5].client_addr = snapshot_name(&cur, "2001:db8::7", SNAPSHOT_ADDR_LEN);
    fx_conn(&cur, 7, "app", "", CONN_STATE_IDLE, 900); /* unix socket: no address */
    fx_conn(&cur, 8, "app", "my-pgwardenish-app", CONN_STATE_IDLE, 900);

    assert_true(snapshot_is_pgwarden_conn(&cur.conns[0]));
    assert_true(snapshot_is_pgwarden_conn(&cur.conns[1]));
    assert_false(snapshot_is_pgwarden_conn(&cur.conns[2]));
    assert_false(snapshot_is_pgwarden_conn(&cur.conns[7]));

    struct kill_plan plan;
    assert_true(reaper_plan(&cur, &o, &plan));
    assert_int_equal(action_of(&plan, 1)->result, KILL_SKIPPED_PROTECTED);
    assert_non_null(strstr(action_of(&plan, 1)->reason, "a pgwarden connection"));
    assert_int_equal(action_of(&plan, 2)->result, KILL_SKIPPED_PROTECTED);
    static const int64_t by_addr[] = {3, 5, 6};
    for (size_t i = 0; i < sizeof(by_addr) / sizeof(by_addr[0]); i++) {
        assert_int_equal(action_of(&plan, by_addr[i])->result, KILL_SKIPPED_PROTECTED);
        assert_non_null(strstr(action_of(&plan, by_addr[i])->reason, "exclude_addr"));
    }
    assert_int_equal(action_of(&plan, 4)->result, KILL_PLANNED);
    assert_int_equal(action_of(&plan, 7)->result, KILL_PLANNED);
    assert_int_equal(action_of(&plan, 8)->result, KILL_PLANNED);
    assert_int_equal(plan.candidates, 3);
    reaper_kill_plan_free(&plan);
    snapshot_free(&cur);
    options_free(&o);
}

static void test_exclude_addr_parsing_and_matching(void **state)
{
    (void)state;
    struct manager_options o;
    fx_options(&o);
    char err[200];
    assert_int_equal(options_set(&o, "exclude_addr", "192.168.1.10", err, sizeof(err)), OPTIONS_OK);
    assert_string_equal(o.exclude_addrs[0].text, "192.168.1.10/32");
    /* Host bits past the prefix are cleared; duplicates after that are dropped. */
    assert_int_equal(options_set(&o, "exclude_addr", "10.1.2.3/16,10.1.0.0/16", err, sizeof(err)),
                     OPTIONS_OK);
    assert_int_equal(o.n_exclude_addrs, 2);
    assert_string_equal(o.exclude_addrs[1].text, "10.1.0.0/16");
    assert_int_equal(
        options_set(&o, "exclude_addr", "fd00::/8, ::ffff:172.16.0.0/108", err, sizeof(err)),
        OPTIONS_OK);
    assert_string_equal(o.exclude_addrs[2].text, "fd00::/8");
    assert_string_equal(o.exclude_addrs[3].text, "172.16.0.0/12"); /* mapped: matched as IPv4 */
    assert_int_equal(o.n_exclude_addrs, 4);

    assert_true(options_addr_excluded(&o, "192.168.1.10"));
    assert_false(options_addr_excluded(&o, "192.168.1.11"));
    assert_true(options_addr_excluded(&o, "10.1.255.254"));
    assert_false(options_addr_excluded(&o, "10.2.0.1"));
    assert_true(options_addr_excluded(&o, "fd12:3456::1"));
    assert_false(options_addr_excluded(&o, "fe80::1"));
    assert_true(options_addr_excluded(&o, "172.31.0.1"));
    assert_true(options_addr_excluded(&o, "::ffff:172.20.0.1"));
    assert_false(options_addr_excluded(&o, "172.32.0.1"));
    assert_false(options_addr_excluded(&o, ""));
    assert_false(options_addr_excluded(&o, NULL));
    assert_false(options_addr_excluded(&o, "not an address"));

    static const char *const bad[] = {"10.0.0.1/33", "10.0.0.1/",   "10.0.0/8",   "host.example",
                                      "::1/129",     "10.0.0.1/-1", "10.0.0.1/8x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(options_set(&o, "exclude_addr", bad[i], err, sizeof(err)),
                         OPTIONS_BAD_VALUE);
        assert_non_null(strstr(err, "is not an IP address or CIDR block"));
    }
    assert_int_equal(o.n_exclude_addrs, 4);
    /* /0 matches every address of its family. */
    assert_int_equal(options_set(&o, "exclude_addr", "0.0.0.0/0", err, sizeof(err)), OPTIONS_OK);
    assert_true(options_addr_excluded(&o, "8.8.8.8"));
    assert_false(options_addr_excluded(&o, "2001:db8::1"));
    options_free(&o);
    assert_int_equal(o.n_exclude_addrs, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utilization_rule_and_its_boundaries),
        cmocka_unit_test(test_leak_risk_enum_names_and_status),
        cmocka_unit_test(test_quick_status_is_the_worse_of_both_rules),
        cmocka_unit_test(test_health_reason_carries_no_status_name),
        cmocka_unit_test(test_leak_scope_and_analysis_agree),
        cmocka_unit_test(test_kill_idle_spares_pgwarden_and_excluded_addresses),
        cmocka_unit_test(test_exclude_addr_parsing_and_matching),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

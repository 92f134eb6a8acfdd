/* Unit tests for manager/health: latency statistics, failure rate, headroom, status, and the
 * error classifier. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <math.h>

#include "manager/health.h"
#include "test_manager_fixture.h"

static struct health_probe probe(int64_t id, bool healthy, double latency)
{
    struct health_probe p;
    memset(&p, 0, sizeof(p));
    p.id = id;
    p.healthy = healthy;
    p.latency_ms = latency;
    return p;
}

static void test_latency_stats_nearest_rank(void **state)
{
    (void)state;
    struct manager_options o;
    fx_options(&o);
    struct health_probe probes[20];
    for (int i = 0; i < 20; i++)
        probes[i] = probe(i, true, (double)(20 - i)); /* 1..20 ms, unsorted */
    struct health_report r;
    health_summarize(probes, 20, NULL, &o, &r);
    assert_int_equal(r.total_checked, 20);
    assert_int_equal(r.healthy, 20);
    assert_int_equal(r.unhealthy, 0);
    assert_true(r.avg_latency_ms == 10.5);
    assert_true(r.p95_latency_ms == 19.0); /* ceil(0.95 * 20) = 19th smallest */
    assert_true(r.max_latency_ms == 20.0);
    assert_true(r.failure_rate == 0.0);
    assert_int_equal(r.used_slots, -1);
    assert_int_equal(r.usable_slots, -1);
    assert_int_equal(r.free_slots, -1);
    assert_int_equal(r.status, REPORT_OK);
    assert_string_equal(r.reason, "all probes succeeded");

    /* A single probe is its own p95; a failed probe's latency counts too. */
    struct health_probe two[2] = {probe(1, true, 5.0), probe(2, false, 3000.0)};
    health_summarize(two, 1, NULL, &o, &r);
    assert_true(r.p95_latency_ms == 5.0);
    health_summarize(two, 2, NULL, &o, &r);
    assert_true(r.p95_latency_ms == 3000.0);
    assert_true(r.max_latency_ms == 3000.0);
    assert_true(r.failure_rate == 0.5);
    assert_int_equal(r.status, REPORT_WARNING);
    assert_string_equal(r.reason, "1 of 2 probes failed");

    /* Unmeasured latencies (negative, NaN) are left out of the statistics. */
    struct health_probe odd[3] = {probe(1, true, 4.0), probe(2, false, -1.0), probe(3, false, NAN)};
    health_summarize(odd, 3, NULL, &o, &r);
    assert_true(r.avg_latency_ms == 4.0);
    assert_true(fabs(r.failure_rate - 2.0 / 3.0) < 1e-12);
    options_free(&o);
}

static void test_status_rules(void **state)
{
    (void)state;
    struct manager_options o;
    fx_options(&o);
    struct health_report r;
    struct health_probe bad[2] = {probe(1, false, 10), probe(2, false, 12)};
    health_summarize(bad, 2, NULL, &o, &r);
    assert_int_equal(r.status, REPORT_CRITICAL);
    assert_true(r.failure_rate == 1.0);
    assert_string_equal(r.reason, "every probe failed (2 of 2)");

    struct snapshot cur;
    fx_snapshot(&cur, SNAPSHOT_MODE_INSPECT, FX_NOW);
    struct health_probe ok[1] = {probe(1, true, 2)};
    for (int i = 0; i < 50; i++)
        fx_conn(&cur, i + 1, "app", "api", CONN_STATE_IDLE, 1);
    health_summarize(ok, 1, &cur, &o, &r);
    assert_int_equal(r.used_slots, 50);
    assert_int_equal(r.usable_slots, 97);
    assert_int_equal(r.free_slots, 47);
    assert_int_equal(r.status, REPORT_OK);

    /* Fewer than 10% free: warning. 97 - 88 = 9 free. */
    for (int i = 0; i < 38; i++)
        fx_conn(&cur, 100 + i, "app", "api", CONN_STATE_IDLE, 1);
    health_summarize(ok, 1, &cur, &o, &r);
    assert_int_equal(r.free_slots, 9);
    assert_int_equal(r.status, REPORT_WARNING);
    assert_string_equal(r.reason, "only 9 of 97 usable slots are free");

    /* No free slot at all (and more connections than usable, e.g. superusers): critical. */
    for (int i = 0; i < 12; i++)
        fx_conn(&cur, 200 + i, "postgres", "psql", CONN_STATE_IDLE, 1);
    health_summarize(ok, 1, &cur, &o, &r);
    assert_int_equal(r.free_slots, 0);
    assert_int_equal(r.status, REPORT_CRITICAL);
    assert_string_equal(r.reason, "no free connection slots (100 of 97 used)");
    snapshot_free(&cur);

    /* Recovery is a warning; no probes and no snapshot leave the status alone. */
    fx_snapshot(&cur, SNAPSHOT_MODE_INSPECT, FX_NOW);
    cur.server.in_recovery = true;
    health_summarize(ok, 1, &cur, &o, &r);
    assert_true(r.in_recovery);
    assert_int_equal(r.status, REPORT_WARNING);
    health_summarize(NULL, 0, NULL, &o, &r);
    assert_int_equal(r.total_checked, 0);
    assert_true(r.failure_rate == 0.0 && r.p95_latency_ms == 0.0);
    assert_int_equal(r.status, REPORT_OK);
    assert_string_equal(r.reason, "no probes were run");
    snapshot_free(&cur);
    options_free(&o);
}

static void test_classify_errors(void **state)
{
    (void)state;
    assert_string_equal(health_classify_error("53300", "sorry, too many clients already"),
                        "db_slots_exhausted");
    assert_string_equal(health_classify_error(NULL, "FATAL:  remaining connection slots are "
                                                    "reserved for non-replication superuser "
                                                    "connections"),
                        "db_slots_exhausted");
    assert_string_equal(health_classify_error("", "remaining connection slots are reserved for "
                                                  "roles with the SUPERUSER attribute"),
                        "db_slots_exhausted");
    assert_string_equal(health_classify_error(NULL, "remaining connection slots are reserved "
                                                    "for roles with privileges of the "
                                                    "pg_use_reserved_connections role"),
                        "db_slots_exhausted");
    assert_string_equal(health_classify_error("53300", "too many connections for role \"app\""),
                        "connection_limit");
    assert_string_equal(health_classify_error("XX000", "(EMAXCONN) Max client connections "
                                                       "reached"),
                        "pooler_clients_exhausted");
    assert_string_equal(health_classify_error(NULL, "EMAXCONNSESSION: too many sessions"),
                        "pooler_clients_exhausted");
    assert_string_equal(health_classify_error(NULL, "Max client connections reached"),
                        "pooler_clients_exhausted");
    assert_string_equal(health_classify_error("28P01", "password authentication failed"), "auth");
    assert_string_equal(health_classify_error("28000", "no pg_hba.conf entry"), "auth");
    assert_string_equal(health_classify_error("57P01", "terminating connection due to "
                                                       "administrator command"),
                        "admin_shutdown");
    assert_string_equal(health_classify_error("57P02", NULL), "admin_shutdown");
    assert_string_equal(health_classify_error("57P03", "the database system is starting up"),
                        "starting_up");
    assert_string_equal(health_classify_error(NULL, "timeout expired"), "timeout");
    assert_string_equal(health_classify_error(NULL, "connection to server at \"db\" "
                                                    "(10.0.0.1), port 5432 failed: Connection "
                                                    "refused"),
                        "network");
    assert_string_equal(health_classify_error(NULL, "could not translate host name \"nope\" to "
                                                    "address"),
                        "network");
    assert_string_equal(health_classify_error(NULL, "could not connect to server"), "network");
    assert_string_equal(health_classify_error("08006", "connection lost"), "network");
    assert_string_equal(health_classify_error("25P03", NULL), "idle_in_transaction_timeout");
    assert_string_equal(health_classify_error("57P05", NULL), "idle_session_timeout");
    assert_string_equal(health_classify_error("42P01", "relation does not exist"), "error");
    assert_string_equal(health_classify_error(NULL, NULL), "error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_latency_stats_nearest_rank),
        cmocka_unit_test(test_status_rules),
        cmocka_unit_test(test_classify_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

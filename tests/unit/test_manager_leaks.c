/* Unit tests for manager/leaks: per-connection scores, exclusions, growth, pressure, the
 * overall confidence and risk, ordering and the recommendation. Expected numbers follow the
 * weights in docs/LEAKS.md. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>

#include "manager/leaks.h"
#include "test_manager_fixture.h"

static int score_of(struct snapshot *cur, struct conn_record *rec, struct manager_options *o,
                    struct leak_suspect *s)
{
    return leaks_score_connection(cur, rec, o, s);
}

static void test_scores_per_evidence(void **state)
{
    (void)state;
    struct snapshot cur;
    struct manager_options o;
    struct leak_suspect s;
    fx_snapshot(&cur, SNAPSHOT_MODE_INSPECT, FX_NOW);
    fx_options(&o);
    struct conn_record *iit120 = fx_conn(&cur, 1, "app", "api", CONN_STATE_IDLE_IN_XACT, 120);
    struct conn_record *iit30 = fx_conn(&cur, 2, "app", "api", CONN_STATE_IDLE_IN_XACT, 30);
    struct conn_record *iit600 = fx_conn(&cur, 3, "app", "api", CONN_STATE_IDLE_IN_XACT, 600);
    struct conn_record *aborted =
        fx_conn(&cur, 4, "app", "api", CONN_STATE_IDLE_IN_XACT_ABORTED, 120);
    struct conn_record *idle120 = fx_conn(&cur, 5, "app", "api", CONN_STATE_IDLE, 120);
    struct conn_record *idle600 = fx_conn(&cur, 6, "app", "api", CONN_STATE_IDLE, 600);
    struct conn_record *blocker = fx_conn(&cur, 7, "app", "api", CONN_STATE_IDLE, 10);
    blocker->blocking_others = true;
    struct conn_record *old = fx_conn_at(&cur, 8, "app", "api", CONN_STATE_IDLE, 400, 4000);
    struct conn_record *iit_hold = fx_conn(&cur, 9, "app", "api", CONN_STATE_IDLE_IN_XACT, 60);

    /* Idle in transaction 2x the hold threshold: 45 + 15 * 1/9 = 46.7 -> 47, + 5 xact age. */
    assert_int_equal(score_of(&cur, iit120, &o, &s), 52);
    assert_int_equal(s.score, 52);
    assert_int_equal(s.n_reasons, 2);
    assert_string_equal(s.reasons[0], "idle in transaction for 2m (leak_hold_threshold 1m) (+47)");
    assert_string_equal(s.reasons[1], "transaction open for 2m (+5)");
    assert_int_equal(s.idle_ms, FX_S(120));
    assert_int_equal(s.xact_age_ms, FX_S(120));
    assert_int_equal(s.held_ms, FX_S(130));
    assert_ptr_equal(s.conn, iit120);

    /* At exactly the threshold it is already a suspect. */
    assert_int_equal(score_of(&cur, iit_hold, &o, &s), 50);
    assert_true(s.score >= LEAK_SUSPECT_MIN_SCORE);
    /* Below the threshold: 25 * 0.5 = 12.5 -> 13, not a suspect on its own. */
    assert_int_equal(score_of(&cur, iit30, &o, &s), 13);
    assert_true(s.score < LEAK_SUSPECT_MIN_SCORE);
    /* 10x the threshold: 45 + 15, and the transaction is 10x old: + 10. */
    assert_int_equal(score_of(&cur, iit600, &o, &s), 70);
    /* Aborted adds 10. */
    assert_int_equal(score_of(&cur, aborted, &o, &s), 62);
    /* Plain idle below idle_timeout scores nothing; 2x idle_timeout: 10 + 10 * 1/5 = 12. */
    assert_int_equal(score_of(&cur, idle120, &o, &s), 0);
    assert_int_equal(s.n_reasons, 0);
    assert_int_equal(score_of(&cur, idle600, &o, &s), 12);
    /* Same age, idle in transaction scores clearly higher than plain idle. */
    assert_true(score_of(&cur, iit600, &o, NULL) >= score_of(&cur, idle600, &o, NULL) + 30);
    assert_true(score_of(&cur, iit120, &o, NULL) > score_of(&cur, idle120, &o, NULL));
    /* Holding locks others wait on. */
    assert_int_equal(score_of(&cur, blocker, &o, &s), 20);
    assert_string_equal(s.reasons[0], "holds locks other sessions are waiting on (+20)");
    /* Older than max_connection_age (1h): 400/300 idle -> 11, + 10 age. */
    assert_int_equal(score_of(&cur, old, &o, &s), 21);
    assert_string_equal(s.reasons[1],
                        "connected for 1h 6m, longer than max_connection_age 1h (+10)");
    /* max_connection_age 0 turns the age check off. */
    o.max_connection_age_ms = 0;
    assert_int_equal(score_of(&cur, old, &o, &s), 11);
    snapshot_free(&cur);
    options_free(&o);
}

static void test_never_suspected(void **state)
{
    (void)state;
    struct snapshot cur;
    struct manager_options o;
    struct leak_suspect s;
    fx_snapshot(&cur, SNAPSHOT_MODE_INSPECT, FX_NOW);
    fx_options(&o);
    fx_conn(&cur, 1, "app", "api", CONN_STATE_IDLE_IN_XACT, 900)->is_self = true;
    fx_conn(&cur, 2, "app", "api", CONN_STATE_IDLE_IN_XACT, 900)->visible = false;
    fx_conn(&cur, 3, "authenticator", "PostgREST", CONN_STATE_IDLE_IN_XACT, 900)
        ->is_infrastructure = true;
    fx_conn(&cur, 4, "repl", "walreceiver", CONN_STATE_IDLE_IN_XACT, 900)->is_replication = true;
    struct conn_record *active = fx_conn(&cur, 5, "app", "report", CONN_STATE_ACTIVE, 900);
    active->blocking_others = true;
    fx_conn(&cur, 6, "app", "api", CONN_STATE_WAITING, 900);
    fx_conn(&cur, 7, "app", "api", CONN_STATE_OTHER, 900);
    fx_conn(&cur, 8, "app", "api", CONN_STATE_FASTPATH, 900);
    for (size_t i = 0; i < cur.n_conns; i++)
        assert_int_equal(leaks_score_connection(&cur, &cur.conns[i], &o, NULL), 0);
    /* A long active query is noted, not scored. */
    assert_int_equal(leaks_score_connection(&cur, active, &o, &s), 0);
    assert_int_equal(s.n_reasons, 1);
    assert_string_equal(s.reasons[0], "active for 15m: a long query, not a leak (+0)");

    struct leak_report r;
    assert_true(leaks_detect(NULL, &cur, &o, &r));
    assert_false(r.detected);
    assert_int_equal(r.total_suspected, 0);
    assert_int_equal(r.confidence, 0);
    assert_int_equal(r.risk_level, LEAK_RISK_NONE);
    assert_string_equal(r.recommendation, "No leak suspects among 8 connections.");
    leaks_report_free(&r);
    snapshot_free(&cur);
    options_free(&o);
}

static void test_detect_orders_and_recommends(void **state)
{
    (void)state;
    struct snapshot cur;
    struct manager_options o;
    struct leak_report r;
    fx_snapshot(&cur, SNAPSHOT_MODE_INSPECT, FX_NOW);
    fx_options(&o);
    fx_conn(&cur, 1, "app", "api", CONN_STATE_IDLE, 600);         /* 12 */
    fx_conn(&cur, 2, "app", "api", CONN_STATE_IDLE_IN_XACT, 120); /* 52 */
    fx_conn(&cur, 3, "bob", "etl", CONN_STATE_IDLE_IN_XACT, 30);  /* 13 */
    fx_conn(&cur, 4, "app", "api", CONN_STATE_IDLE_IN_XACT, 600); /* 70 */
    fx_conn(&cur, 5, "app", "api", CONN_STATE_ACTIVE, 5);
    assert_true(leaks_detect(NULL, &cur, &o, &r));
    assert_true(r.detected);
    assert_int_equal(r.total_suspected, 2);
    assert_int_equal(r.suspects[0].conn->id, 4);
    assert_int_equal(r.suspects[0].score, 70);
    assert_int_equal(r.suspects[1].conn->id, 2);
    assert_int_equal(r.suspects[1].score, 52);
    /* Strongest 70 + 3 for one corroborating suspect. */
    assert_int_equal(r.confidence, 73);
    assert_int_equal(r.risk_level, LEAK_RISK_MEDIUM);
    assert_true(r.utilization_pct > 5.1 && r.utilization_pct < 5.2);
    assert_string_equal(r.recommendation,
                        "2 suspected connections from application 'api' (user 'app') sit idle "
                        "in a transaction for up to 10m: commit or roll back on every code path "
                        "and release connections in a finally block; set ALTER ROLE \"app\" SET "
                        "idle_in_transaction_session_timeout = '1min' so the server ends them.");
    leaks_report_free(&r);

    /* With the server timeout already set the advice says so instead. */
    cur.server.idle_in_xact_session_timeout_ms = 300000;
    assert_true(leaks_detect(NULL, &cur, &o, &r));
    assert_non_null(strstr(r.recommendation, "idle_in_transaction_session_timeout (5min) will"));
    leaks_report_free(&r);

    /* A third suspect lifts the confidence to high. */
    fx_conn(&cur, 6, "app", "api", CONN_STATE_IDLE_IN_XACT, 600);
    assert_true(leaks_detect(NULL, &cur, &o, &r));
    assert_int_equal(r.total_suspected, 3);
    assert_int_equal(r.confidence, 76);
    assert_int_equal(r.risk_level, LEAK_RISK_HIGH);
    /* Equal scores: longer idle first, then id. */
    assert_int_equal(r.suspects[0].conn->id, 4);
    assert_int_equal(r.suspects[1].conn->id, 6);
    leaks_report_free(&r);

    /* Filters apply: only bob's connections are looked at. */
    assert_int_equal(options_set(&o, "user", "bob", NULL, 0), OPTIONS_OK);
    assert_true(leaks_detect(NULL, &cur, &o, &r));
    assert_false(r.detected);
    leaks_report_free(&r);
    snapshot_free(&cur);
    options_free(&o);
}

static void test_pressure_raises_scores_and_risk(void **state)
{
    (void)state;
    struct snapshot cur;
    struct manager_options o;
    struct leak_report r;
    fx_snapshot(&cur, SNAPSHOT_MODE_INSPECT, FX_NOW);
    fx_options(&o);
    fx_conn(&cur, 1, "app", "api", CONN_STATE_IDLE_IN_XACT, 120); /* 52 on its own */
    fx_conn(&cur, 2, "app", "api", CONN_STATE_IDLE, 600);         /* 12 on its own */
    for (int i = 0; i < 88; i++)                                  /* 90 of 97: 92.8% */
        fx_conn(&cur, 100 + i, "app", "api", CONN_STATE_ACTIVE, 1);
    assert_true(leaks_detect(NULL, &cur, &o, &r));
    assert_int_equal(r.total_suspected, 1);
    assert_int_equal(r.suspects[0].score, 62);
    assert_string_equal(r.suspects[0].reasons[2],
                        "utilisation 93% is above leak_detection_threshold 80% (+10)");
    /* 62 + 5 pressure = 67 -> medium, raised one level by pressure. */
    assert_int_equal(r.confidence, 67);
    assert_int_equal(r.risk_level, LEAK_RISK_HIGH);
    assert_non_null(strstr(r.recommendation, "above leak_detection_threshold 80%: act now."));
    leaks_report_free(&r);

    /* Full server (100%): the bump is 15, and plain idle past the timeout still stays below a
     * suspect (12 + 15 = 27). */
    for (int i = 0; i < 7; i++)
        fx_conn(&cur, 300 + i, "app", "api", CONN_STATE_ACTIVE, 1);
    assert_true(leaks_detect(NULL, &cur, &o, &r));
    assert_true(r.utilization_pct == 100.0);
    assert_int_equal(r.total_suspected, 1);
    assert_int_equal(r.suspects[0].score, 67);
    leaks_report_free(&r);
    snapshot_free(&cur);
    options_free(&o);
}

static void add_pair(struct snapshot *prev, struct snapshot *cur, int64_t id, const char *user,
                     const char *app, int64_t connected_ms, enum conn_state state)
{
    struct conn_record *a = fx_conn(prev, id, user, app, state, 600);
    a->connected_ms = connected_ms;
    struct conn_record *b = fx_conn(cur, id, user, app, state, 600);
    b->connected_ms = connected_ms;
}

static void test_growth_flagged(void **state)
{
    (void)state;
    struct snapshot prev, cur;
    struct manager_options o;
    struct leak_report r;
    fx_options(&o);
    fx_snapshot(&prev, SNAPSHOT_MODE_INSPECT, FX_NOW - 10000);
    fx_snapshot(&cur, SNAPSHOT_MODE_INSPECT, FX_NOW);
    /* "leaky" keeps its 3 connections and opens 3 more. */
    for (int i = 0; i < 3; i++)
        add_pair(&prev, &cur, 10 + i, "u", "leaky", FX_NOW - 900000, CONN_STATE_IDLE);
    for (int i = 0; i < 3; i++)
        fx_conn(&cur, 20 + i, "u", "leaky", CONN_STATE_IDLE, 600);
    /* "steady" grows from 2 to 3 but one of its connections was replaced: not only growing. */
    add_pair(&prev, &cur, 30, "u", "steady", FX_NOW - 900000, CONN_STATE_IDLE);
    fx_conn(&prev, 31, "u", "steady", CONN_STATE_IDLE, 600);
    fx_conn(&cur, 32, "u", "steady", CONN_STATE_IDLE, 600);
    fx_conn(&cur, 33, "u", "steady", CONN_STATE_IDLE, 600);
    /* A pid reused by a new backend is a new connection: "reuse" closed one. */
    add_pair(&prev, &cur, 40, "u", "reuse", FX_NOW - 900000, CONN_STATE_IDLE);
    fx_conn(&prev, 41, "u", "reuse", CONN_STATE_IDLE, 600)->connected_ms = FX_NOW - 800000;
    fx_conn(&cur, 41, "u", "reuse", CONN_STATE_IDLE, 600)->connected_ms = FX_NOW - 5000;
    fx_conn(&cur, 42, "u", "reuse", CONN_STATE_IDLE, 600);
    /* A brand-new application is not growth either. */
    fx_conn(&cur, 50, "u", "newapp", CONN_STATE_IDLE, 600);
    fx_conn(&cur, 51, "u", "newapp", CONN_STATE_IDLE, 600);

    assert_true(leaks_detect(&prev, &cur, &o, &r));
    assert_int_equal(r.n_growth, 1);
    assert_string_equal(r.growth[0].application, "leaky");
    assert_string_equal(r.growth[0].user, "u");
    assert_int_equal(r.growth[0].before, 3);
    assert_int_equal(r.growth[0].after, 6);
    /* Its idle members get +10 over the 12 that idle 600 s earns: still not suspects alone. */
    assert_false(r.detected);
    assert_non_null(strstr(r.recommendation, "application 'leaky' (user 'u') grew from 3 to 6"));
    leaks_report_free(&r);

    /* Same data under pressure: growth + idle + pressure (12 + 10 + 10) crosses the line for
     * the growing app only. */
    cur.capacity.usable = 12; /* 14 connections: 117% */
    assert_true(leaks_detect(&prev, &cur, &o, &r));
    assert_int_equal(r.total_suspected, 6);
    for (size_t i = 0; i < r.total_suspected; i++) {
        assert_string_equal(r.suspects[i].conn->application, "leaky");
        assert_int_equal(r.suspects[i].score, 12 + 10 + 15);
    }
    assert_non_null(strstr(r.suspects[0].reasons[1], "grew from 3 to 6 connections and closed "
                                                     "none (+10)"));
    assert_non_null(strstr(r.recommendation, "held idle for up to 10m"));
    leaks_report_free(&r);
    snapshot_free(&prev);
    snapshot_free(&cur);
    options_free(&o);
}

static void test_clock_and_scale_edges(void **state)
{
    (void)state;
    struct snapshot prev, cur;
    struct manager_options o;
    struct leak_report r;
    fx_options(&o);
    /* prev taken after cur (clock went backwards) and record times in the future. */
    fx_snapshot(&prev, SNAPSHOT_MODE_INSPECT, FX_NOW + 60000);
    fx_snapshot(&cur, SNAPSHOT_MODE_INSPECT, FX_NOW);
    struct conn_record *rec = fx_conn(&cur, 1, "app", "api", CONN_STATE_IDLE_IN_XACT, 600);
    rec->state_change_ms = rec->xact_start_ms = rec->connected_ms = FX_NOW + 5000;
    assert_true(leaks_detect(&prev, &cur, &o, &r));
    assert_false(r.detected);
    assert_int_equal(r.total_suspected, 0);
    leaks_report_free(&r);
    snapshot_free(&prev);
    snapshot_free(&cur);

    /* 5000 connections, every 50th idle in transaction for 2-11 minutes. */
    fx_snapshot(&cur, SNAPSHOT_MODE_INSPECT, FX_NOW);
    cur.capacity.usable = 10000;
    for (int i = 0; i < 5000; i++) {
        bool leak = i % 50 == 0;
        fx_conn(&cur, i + 1, "app", "api", leak ? CONN_STATE_IDLE_IN_XACT : CONN_STATE_ACTIVE,
                leak ? 120 + (i / 50) * 5 : 1);
    }
    assert_true(leaks_detect(NULL, &cur, &o, &r));
    assert_int_equal(r.total_suspected, 100);
    for (size_t i = 1; i < r.total_suspected; i++)
        assert_true(r.suspects[i - 1].score >= r.suspects[i].score);
    assert_int_equal(r.suspects[0].conn->id, 4951); /* the longest idle */
    assert_int_equal(r.confidence, 85);             /* 70 + 15 corroboration (capped) */
    assert_int_equal(r.risk_level, LEAK_RISK_HIGH);
    leaks_report_free(&r);
    snapshot_free(&cur);

    /* Empty server. */
    fx_snapshot(&cur, SNAPSHOT_MODE_INSPECT, FX_NOW);
    assert_true(leaks_detect(NULL, &cur, &o, &r));
    assert_false(r.detected);
    assert_int_equal(r.risk_level, LEAK_RISK_NONE);
    leaks_report_free(&r);
    snapshot_free(&cur);
    options_free(&o);
}

/* Serve mode: a session-pooling client that holds its server without traffic while clients
 * of its pool wait, and one that stopped reading its results, are suspects; without waiters
 * the holder is plain idle; an idle transaction-pooling client (no server) is not a suspect,
 * and neither rule applies to inspect mode's idle sessions. */
static void test_serve_holding_and_not_reading(void **state)
{
    (void)state;
    struct manager_options o;
    fx_options(&o); /* leak_hold_threshold 60 s */
    struct snapshot cur;
    fx_snapshot(&cur, SNAPSHOT_MODE_SERVE, FX_NOW);
    struct conn_record *holder = fx_conn(&cur, 1, "app", "session-app", CONN_STATE_IDLE, 61);
    struct conn_record *no_server = fx_conn(&cur, 2, "app", "tx-app", CONN_STATE_IDLE, 600);
    no_server->pid = 0;
    struct conn_record *stuck = fx_conn(&cur, 3, "app", "slow-reader", CONN_STATE_ACTIVE, 90);
    stuck->output_blocked_ms = FX_S(90);
    struct leak_suspect sus;
    /* Nobody waits for a server: holding one between transactions is session pooling. */
    assert_true(leaks_score_connection(&cur, holder, &o, &sus) < LEAK_SUSPECT_MIN_SCORE);
    struct pool_record *pool = snapshot_add_pool(&cur);
    assert_non_null(pool);
    snprintf(pool->database, sizeof(pool->database), "appdb");
    snprintf(pool->user, sizeof(pool->user), "app");
    pool->cl_waiting = 2;
    int s_holder = leaks_score_connection(&cur, holder, &o, &sus);
    assert_true(s_holder >= LEAK_SUSPECT_MIN_SCORE);
    assert_non_null(strstr(sus.reasons[0], "holds a server connection without traffic"));
    assert_non_null(strstr(sus.reasons[0], "while 2 clients of its pool wait"));
    assert_true(leaks_score_connection(&cur, no_server, &o, &sus) < LEAK_SUSPECT_MIN_SCORE);
    int s_stuck = leaks_score_connection(&cur, stuck, &o, &sus);
    assert_true(s_stuck >= LEAK_SUSPECT_MIN_SCORE);
    assert_non_null(strstr(sus.reasons[0], "has not read its results"));
    assert_int_equal(sus.n_reasons, 1);
    /* The report lists both, the stalled one although it is "active". */
    struct leak_report rep;
    assert_true(leaks_detect(NULL, &cur, &o, &rep));
    assert_int_equal(rep.total_suspected, 2);
    leaks_report_free(&rep);
    /* Below the threshold: not yet. */
    stuck->output_blocked_ms = FX_S(30);
    assert_int_equal(leaks_score_connection(&cur, stuck, &o, &sus), 0);
    snapshot_free(&cur);

    struct snapshot insp;
    fx_snapshot(&insp, SNAPSHOT_MODE_INSPECT, FX_NOW);
    struct conn_record *idle = fx_conn(&insp, 4, "app", "session-app", CONN_STATE_IDLE, 61);
    assert_true(leaks_score_connection(&insp, idle, &o, &sus) < LEAK_SUSPECT_MIN_SCORE);
    snapshot_free(&insp);
    options_free(&o);
}

/* Serve mode: a client idle in a transaction for 3 s, far below leak_hold_threshold, is a
 * suspect when its application usually holds a server for 5 ms; the same hold is ordinary for
 * an application whose transactions take a second, and unknown norms change nothing. */
static void test_serve_hold_far_above_usual(void **state)
{
    (void)state;
    struct manager_options o;
    fx_options(&o); /* leak_hold_threshold 60 s */
    struct snapshot cur;
    fx_snapshot(&cur, SNAPSHOT_MODE_SERVE, FX_NOW);
    struct conn_record *quick = fx_conn(&cur, 1, "app", "web", CONN_STATE_IDLE_IN_XACT, 3);
    quick->app_usual_hold_ms = 5; /* 600x */
    struct conn_record *batch = fx_conn(&cur, 2, "app", "batch", CONN_STATE_IDLE_IN_XACT, 3);
    batch->app_usual_hold_ms = 1000; /* 3x */
    struct conn_record *unknown = fx_conn(&cur, 3, "app", "new", CONN_STATE_IDLE_IN_XACT, 3);
    struct conn_record *edge = fx_conn(&cur, 4, "app", "web", CONN_STATE_IDLE_IN_XACT, 1);
    edge->app_usual_hold_ms = 100; /* exactly 10x the usual, at the 1 s floor */
    struct leak_suspect sus;
    int s_quick = leaks_score_connection(&cur, quick, &o, &sus);
    assert_true(s_quick >= LEAK_SUSPECT_MIN_SCORE);
    assert_int_equal(sus.n_reasons, 2);
    assert_non_null(strstr(sus.reasons[1], "600x what application 'web' usually holds (5ms)"));
    assert_non_null(strstr(sus.reasons[1], "(+30)"));
    assert_true(leaks_score_connection(&cur, batch, &o, &sus) < LEAK_SUSPECT_MIN_SCORE);
    assert_int_equal(sus.n_reasons, 1);
    assert_true(leaks_score_connection(&cur, unknown, &o, &sus) < LEAK_SUSPECT_MIN_SCORE);
    leaks_score_connection(&cur, edge, &o, &sus);
    assert_int_equal(sus.n_reasons, 2);
    assert_non_null(strstr(sus.reasons[1], "(+20)"));
    /* Below the 1 s floor nothing counts, however short the usual hold. */
    edge->state_change_ms = edge->xact_start_ms = FX_NOW - 900;
    leaks_score_connection(&cur, edge, &o, &sus);
    assert_int_equal(sus.n_reasons, 1);
    /* A client without a server (it cannot hold one) gets no such points. */
    quick->pid = 0;
    leaks_score_connection(&cur, quick, &o, &sus);
    assert_int_equal(sus.n_reasons, 1);
    snapshot_free(&cur);
    options_free(&o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scores_per_evidence),
        cmocka_unit_test(test_never_suspected),
        cmocka_unit_test(test_detect_orders_and_recommends),
        cmocka_unit_test(test_pressure_raises_scores_and_risk),
        cmocka_unit_test(test_growth_flagged),
        cmocka_unit_test(test_clock_and_scale_edges),
        cmocka_unit_test(test_serve_holding_and_not_reading),
        cmocka_unit_test(test_serve_hold_far_above_usual),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for manager/reaper: which idle sessions kill-idle plans, every protection rule,
 * the percentage limit and its rounding, and the order of the plan. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "manager/reaper.h"
#include "test_manager_fixture.h"

static const struct kill_action *action_for(const struct kill_plan *p, int64_t id)
{
    for (size_t i = 0; i < p->n_actions; i++) {
        if (p->actions[i].conn->id == id)
            return &p->actions[i];
    }
    return NULL;
}

static void test_candidates_and_order(void **state)
{
    (void)state;
    struct snapshot cur;
    struct manager_options o;
    struct kill_plan p;
    fx_options(&o);
    o.max_kill_percentage = 100;
    fx_snapshot(&cur, SNAPSHOT_MODE_INSPECT, FX_NOW);
    fx_conn(&cur, 1, "app", "api", CONN_STATE_IDLE, 400);        /* idle > 300 s */
    fx_conn(&cur, 2, "app", "api", CONN_STATE_IDLE, 900);        /* idle, older */
    fx_conn(&cur, 3, "app", "api", CONN_STATE_IDLE, 300);        /* exactly 300: not longer */
    fx_conn(&cur, 4, "app", "api", CONN_STATE_IDLE_IN_XACT, 61); /* > 60 s hold */
    fx_conn(&cur, 5, "app", "api", CONN_STATE_IDLE_IN_XACT_ABORTED, 120);
    fx_conn(&cur, 6, "app", "api", CONN_STATE_IDLE_IN_XACT, 30); /* too young */
    fx_conn(&cur, 7, "app", "api", CONN_STATE_ACTIVE, 5000);
    fx_conn(&cur, 8, "app", "api", CONN_STATE_FASTPATH, 5000);
    fx_conn(&cur, 9, "app", "api", CONN_STATE_WAITING, 5000);
    fx_conn(&cur, 10, "app", "api", CONN_STATE_OTHER, 5000);
    assert_true(reaper_plan(&cur, &o, &p));
    assert_true(p.dry_run);
    assert_int_equal(p.client_connections, 10);
    assert_int_equal(p.limit, 10);
    assert_int_equal(p.candidates, 4);
    assert_int_equal(p.skipped, 0);
    assert_int_equal(p.killed, 0);
    assert_int_equal(p.n_actions, 4);
    /* Idle in transaction first (longest first), then plain idle, longest first. */
    assert_int_equal(p.actions[0].conn->id, 5);
    assert_int_equal(p.actions[1].conn->id, 4);
    assert_int_equal(p.actions[2].conn->id, 2);
    assert_int_equal(p.actions[3].conn->id, 1);
    for (size_t i = 0; i < p.n_actions; i++)
        assert_int_equal(p.actions[i].result, KILL_PLANNED);
    assert_int_equal(p.actions[2].idle_ms, FX_S(900));
    assert_string_equal(p.actions[2].reason, "idle for 15m (> idle_timeout 5m)");
    assert_string_equal(p.actions[1].reason,
                        "idle in transaction for 1m 1s (> leak_hold_threshold 1m); terminating "
                        "frees its slot and its locks");
    assert_string_equal(p.actions[0].reason,
                        "idle in transaction (aborted) for 2m (> leak_hold_threshold 1m); "
                        "terminating frees its slot");
    assert_string_equal(reaper_kill_result_name(KILL_PLANNED), "planned");
    reaper_kill_plan_free(&p);

    o.execute = true;
    assert_true(reaper_plan(&cur, &o, &p));
    assert_false(p.dry_run);
    reaper_kill_plan_free(&p);
    snapshot_free(&cur);
    options_free(&o);
}

static void test_every_protection(void **state)
{
    (void)state;
    struct snapshot cur;
    struct manager_options o;
    struct kill_plan p;
    fx_options(&o);
    o.max_kill_percentage = 100;
    assert_int_equal(options_set(&o, "exclude_user", "batch", NULL, 0), OPTIONS_OK);
    assert_int_equal(options_set(&o, "exclude_app", "PostgREST*", NULL, 0), OPTIONS_OK);
    fx_snapshot(&cur, SNAPSHOT_MODE_INSPECT, FX_NOW);
    fx_conn(&cur, 1, "me", "pgwarden-inspect", CONN_STATE_IDLE, 900)->is_self = true;
    fx_conn(&cur, 2, "", "", CONN_STATE_IDLE, 900)->visible = false;
    fx_conn(&cur, 3, "postgres", "psql", CONN_STATE_IDLE, 900)->is_superuser = true;
    fx_conn(&cur, 4, "repl", "standby", CONN_STATE_IDLE, 900)->is_replication = true;
    fx_conn(&cur, 5, "supabase_admin", "Supavisor", CONN_STATE_IDLE, 900)->is_infrastructure = true;
    fx_conn(&cur, 6, "batch", "etl", CONN_STATE_IDLE_IN_XACT, 900);
    fx_conn(&cur, 7, "app", "PostgREST 12", CONN_STATE_IDLE, 900);
    fx_conn(&cur, 8, "app", "api", CONN_STATE_IDLE, 900);
    /* Protected but not idle long enough: not listed at all. */
    fx_conn(&cur, 9, "postgres", "psql", CONN_STATE_IDLE, 10)->is_superuser = true;
    assert_true(reaper_plan(&cur, &o, &p));
    assert_int_equal(p.candidates, 1);
    assert_int_equal(p.skipped, 7);
    assert_int_equal(p.n_actions, 8);
    assert_int_equal(p.hidden, 1); /* the invisible row, counted as well as listed */
    assert_int_equal(p.actions[0].conn->id, 8);
    assert_int_equal(p.actions[0].result, KILL_PLANNED);
    for (size_t i = 1; i < p.n_actions; i++)
        assert_int_equal(p.actions[i].result, KILL_SKIPPED_PROTECTED);
    assert_null(action_for(&p, 9));
    assert_string_equal(action_for(&p, 1)->reason,
                        "protected: the inspecting session itself (idle for 15m)");
    assert_non_null(strstr(action_for(&p, 2)->reason, "not visible"));
    assert_non_null(strstr(action_for(&p, 3)->reason, "superuser"));
    assert_non_null(strstr(action_for(&p, 4)->reason, "replication"));
    assert_non_null(strstr(action_for(&p, 5)->reason, "infrastructure"));
    assert_string_equal(action_for(&p, 6)->reason,
                        "protected: user is excluded (exclude_user) (idle in transaction for "
                        "15m)");
    assert_non_null(strstr(action_for(&p, 7)->reason, "exclude_app"));
    /* Protected ones never consume the limit. */
    reaper_kill_plan_free(&p);
    snapshot_free(&cur);
    options_free(&o);
}

/* pgwarden's own sessions are protected by their application_name in inspect mode only: in
 * serve mode the name is a pooled client's choice, and honouring it let a client exempt
 * itself. */
static void test_pgwarden_name_protects_in_inspect_mode_only(void **state)
{
    (void)state;
    struct manager_options o;
    fx_options(&o);
    o.max_kill_percentage = 100;
    static const struct {
        enum snapshot_mode mode;
        enum kill_result result;
    } cases[] = {{SNAPSHOT_MODE_INSPECT, KILL_SKIPPED_PROTECTED},
                 {SNAPSHOT_MODE_SERVE, KILL_PLANNED}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct snapshot cur;
        struct kill_plan p;
        fx_snapshot(&cur, cases[i].mode, FX_NOW);
        fx_conn(&cur, 1, "app", "pgwarden-lookalike", CONN_STATE_IDLE, 900);
        assert_true(reaper_plan(&cur, &o, &p));
        assert_int_equal(p.n_actions, 1);
        assert_int_equal(p.actions[0].result, cases[i].result);
        reaper_kill_plan_free(&p);
        snapshot_free(&cur);
    }
    options_free(&o);
}

/* Platform roles are infrastructure in both modes; platform application names only where
 * they are not the client's own choice (inspect mode). */
static void test_infrastructure_by_role_everywhere_by_name_in_inspect_only(void **state)
{
    (void)state;
    static const struct {
        const char *user, *application;
        bool inspect, serve;
    } cases[] = {
        {"authenticator", "anything", true, true},
        {"supabase_admin", "", true, true},
        {"app", "PostgREST 12.0.2", true, false},
        {"app", "Supavisor", true, false},
        {"app", "pgwarden-inspect", true, false},
        {"app", "pgwardenish", false, false},
        {"app", "psql", false, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(
            snapshot_is_infrastructure(SNAPSHOT_MODE_INSPECT, cases[i].user, cases[i].application),
            cases[i].inspect);
        assert_int_equal(
            snapshot_is_infrastructure(SNAPSHOT_MODE_SERVE, cases[i].user, cases[i].application),
            cases[i].serve);
    }
}

static void test_limit_rounding(void **state)
{
    (void)state;
    struct snapshot cur;
    struct manager_options o;
    struct kill_plan p;
    fx_options(&o); /* 25% */
    fx_snapshot(&cur, SNAPSHOT_MODE_INSPECT, FX_NOW);
    for (int i = 0; i < 7; i++)
        fx_conn(&cur, i + 1, "app", "api", CONN_STATE_IDLE, 400 + i);
    /* floor(25% of 7 = 1.75) = 1. */
    assert_true(reaper_plan(&cur, &o, &p));
    assert_int_equal(p.limit, 1);
    assert_int_equal(p.candidates, 7);
    assert_int_equal(p.skipped, 6);
    assert_int_equal(p.actions[0].conn->id, 7); /* the longest idle */
    assert_int_equal(p.actions[0].result, KILL_PLANNED);
    assert_int_equal(p.actions[1].result, KILL_SKIPPED_LIMIT);
    assert_string_equal(p.actions[1].reason,
                        "over the per-run limit of 1 (max_kill_percentage 25% of 7 client "
                        "connections); idle for 6m 45s");
    reaper_kill_plan_free(&p);

    /* The base counts every client connection, busy, filtered out or invisible. */
    fx_conn(&cur, 100, "app", "api", CONN_STATE_ACTIVE, 1); /* 8 -> 25% = 2 */
    assert_true(reaper_plan(&cur, &o, &p));
    assert_int_equal(p.limit, 2);
    reaper_kill_plan_free(&p);
    assert_int_equal(options_set(&o, "application", "nothing-matches", NULL, 0), OPTIONS_OK);
    assert_true(reaper_plan(&cur, &o, &p));
    assert_int_equal(p.limit, 2);
    assert_int_equal(p.candidates, 0);
    assert_int_equal(p.n_actions, 0);
    reaper_kill_plan_free(&p);
    assert_int_equal(options_set(&o, "application", "", NULL, 0), OPTIONS_OK);

    /* 10% of 30 is exactly 3 (no binary rounding down to 2). */
    for (int i = 0; i < 22; i++)
        fx_conn(&cur, 200 + i, "app", "api", CONN_STATE_ACTIVE, 1);
    o.max_kill_percentage = 10;
    assert_true(reaper_plan(&cur, &o, &p));
    assert_int_equal(p.client_connections, 30);
    assert_int_equal(p.limit, 3);
    reaper_kill_plan_free(&p);
    /* 0% kills nothing; small servers round down to 0. */
    o.max_kill_percentage = 0;
    assert_true(reaper_plan(&cur, &o, &p));
    assert_int_equal(p.limit, 0);
    assert_int_equal(p.skipped, 7);
    assert_int_equal(p.actions[0].result, KILL_SKIPPED_LIMIT);
    reaper_kill_plan_free(&p);
    snapshot_free(&cur);

    fx_snapshot(&cur, SNAPSHOT_MODE_INSPECT, FX_NOW);
    fx_conn(&cur, 1, "app", "api", CONN_STATE_IDLE, 900);
    fx_conn(&cur, 2, "app", "api", CONN_STATE_IDLE, 900);
    fx_conn(&cur, 3, "app", "api", CONN_STATE_IDLE, 900);
    o.max_kill_percentage = 25; /* 0.75 -> 0 */
    assert_true(reaper_plan(&cur, &o, &p));
    assert_int_equal(p.limit, 0);
    assert_int_equal(p.candidates, 3);
    assert_int_equal(p.skipped, 3);
    reaper_kill_plan_free(&p);
    snapshot_free(&cur);
    options_free(&o);
}

static void test_empty_future_and_many(void **state)
{
    (void)state;
    struct snapshot cur;
    struct manager_options o;
    struct kill_plan p;
    fx_options(&o);
    fx_snapshot(&cur, SNAPSHOT_MODE_INSPECT, FX_NOW);
    assert_true(reaper_plan(&cur, &o, &p));
    assert_int_equal(p.limit, 0);
    assert_int_equal(p.n_actions, 0);
    reaper_kill_plan_free(&p);
    /* A state change in the future (clock skew) is age 0: never a candidate. */
    fx_conn(&cur, 1, "app", "api", CONN_STATE_IDLE, 900)->state_change_ms = FX_NOW + 1000;
    assert_true(reaper_plan(&cur, &o, &p));
    assert_int_equal(p.n_actions, 0);
    reaper_kill_plan_free(&p);
    snapshot_free(&cur);

    /* 5000 connections, all idle long enough: 1250 planned, 3750 over the limit. */
    fx_snapshot(&cur, SNAPSHOT_MODE_INSPECT, FX_NOW);
    for (int i = 0; i < 5000; i++)
        fx_conn(&cur, i + 1, "app", "api", CONN_STATE_IDLE, 301 + i);
    assert_true(reaper_plan(&cur, &o, &p));
    assert_int_equal(p.limit, 1250);
    assert_int_equal(p.candidates, 5000);
    assert_int_equal(p.skipped, 3750);
    assert_int_equal(p.actions[0].conn->id, 5000);
    assert_int_equal(p.actions[1249].result, KILL_PLANNED);
    assert_int_equal(p.actions[1250].result, KILL_SKIPPED_LIMIT);
    for (size_t i = 1; i < p.n_actions; i++)
        assert_true(p.actions[i - 1].idle_ms >= p.actions[i].idle_ms);
    reaper_kill_plan_free(&p);
    snapshot_free(&cur);
    options_free(&o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_candidates_and_order),
        cmocka_unit_test(test_every_protection),
        cmocka_unit_test(test_pgwarden_name_protects_in_inspect_mode_only),
        cmocka_unit_test(test_infrastructure_by_role_everywhere_by_name_in_inspect_only),
        cmocka_unit_test(test_limit_rounding),
        cmocka_unit_test(test_empty_future_and_many),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for the live manager's pure parts: graduated reclaim steps and the event ring. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "manager/events.h"
#include "manager/options.h"
#include "manager/reclaim.h"
#include "test_manager_fixture.h"

static void test_level_names_round_trip(void **state)
{
    (void)state;
    for (int i = 0; i < RECLAIM_LEVEL_COUNT; i++) {
        enum reclaim_level l;
        assert_true(reclaim_level_from_text(reclaim_level_name((enum reclaim_level)i), &l));
        assert_int_equal(l, i);
    }
    enum reclaim_level l;
    assert_true(reclaim_level_from_text("ROLLBACK", &l));
    assert_int_equal(l, RECLAIM_ROLLBACK);
    assert_false(reclaim_level_from_text("maybe", &l));
    assert_false(reclaim_level_from_text(NULL, &l));
}

/* Connections of excluded users, applications and addresses get at most the notice; a name
 * a client picks itself ("pgwarden…") protects nothing here. */
static void test_protected_suspects_only_get_the_notice(void **state)
{
    (void)state;
    struct manager_options o;
    struct snapshot snap;
    options_init_defaults(&o);
    fx_snapshot(&snap, SNAPSHOT_MODE_SERVE, FX_NOW);
    assert_int_equal(options_set(&o, "leak_reclaim", "disconnect", NULL, 0), OPTIONS_OK);
    assert_int_equal(options_set(&o, "exclude_app", "batch-*", NULL, 0), OPTIONS_OK);
    assert_int_equal(options_set(&o, "exclude_user", "etl", NULL, 0), OPTIONS_OK);
    struct conn_record *plain = fx_conn(&snap, 1, "app", "web", CONN_STATE_IDLE_IN_XACT, 10);
    struct conn_record *app = fx_conn(&snap, 2, "app", "batch-1", CONN_STATE_IDLE_IN_XACT, 10);
    struct conn_record *user = fx_conn(&snap, 3, "etl", "web", CONN_STATE_IDLE_IN_XACT, 10);
    assert_int_equal(reclaim_allowed(&o, plain), RECLAIM_DISCONNECT);
    assert_int_equal(reclaim_allowed(&o, app), RECLAIM_NOTICE);
    assert_int_equal(reclaim_allowed(&o, user), RECLAIM_NOTICE);
    struct reclaim_track t = {RECLAIM_NOTICE, FX_NOW - 60000};
    assert_int_equal(
        reclaim_next_step(reclaim_allowed(&o, app), &t, CONN_STATE_IDLE_IN_XACT, FX_NOW, 1000),
        RECLAIM_OFF);
    assert_int_equal(options_set(&o, "leak_reclaim", "off", NULL, 0), OPTIONS_OK);
    assert_int_equal(reclaim_allowed(&o, app), RECLAIM_OFF); /* never raised */
    assert_int_equal(options_set(&o, "leak_reclaim", "disconnect", NULL, 0), OPTIONS_OK);
    struct conn_record *named =
        fx_conn(&snap, 4, "app", "pgwarden-lookalike", CONN_STATE_IDLE_IN_XACT, 10);
    assert_int_equal(reclaim_allowed(&o, named), RECLAIM_DISCONNECT);
    snapshot_free(&snap);
    options_free(&o);
}

static void test_option_default_off_and_parsed(void **state)
{
    (void)state;
    struct manager_options o;
    options_init_defaults(&o);
    assert_int_equal(o.leak_reclaim, RECLAIM_OFF);
    char err[200];
    assert_int_equal(options_set(&o, "leak-reclaim", "cancel", err, sizeof(err)), OPTIONS_OK);
    assert_int_equal(o.leak_reclaim, RECLAIM_CANCEL);
    assert_int_equal(options_set(&o, "leak_reclaim", "kill", err, sizeof(err)), OPTIONS_BAD_VALUE);
    assert_non_null(strstr(err, "leak_reclaim"));
    options_free(&o);
}

static void test_steps_climb_one_at_a_time(void **state)
{
    (void)state;
    struct reclaim_track t = {RECLAIM_OFF, 0};
    int64_t gap = 1000;
    /* Idle in transaction: notice, then rollback (cancel has nothing to cancel), then
     * disconnect; never above the allowed level. */
    assert_int_equal(reclaim_next_step(RECLAIM_DISCONNECT, &t, CONN_STATE_IDLE_IN_XACT, 0, gap),
                     RECLAIM_NOTICE);
    t = (struct reclaim_track){RECLAIM_NOTICE, 0};
    assert_int_equal(reclaim_next_step(RECLAIM_DISCONNECT, &t, CONN_STATE_IDLE_IN_XACT, 999, gap),
                     RECLAIM_OFF); /* too soon */
    assert_int_equal(reclaim_next_step(RECLAIM_DISCONNECT, &t, CONN_STATE_IDLE_IN_XACT, 1000, gap),
                     RECLAIM_ROLLBACK);
    assert_int_equal(reclaim_next_step(RECLAIM_CANCEL, &t, CONN_STATE_IDLE_IN_XACT, 5000, gap),
                     RECLAIM_OFF); /* cancel allowed but useless; rollback not allowed */
    assert_int_equal(reclaim_next_step(RECLAIM_CANCEL, &t, CONN_STATE_ACTIVE, 5000, gap),
                     RECLAIM_CANCEL);
    t = (struct reclaim_track){RECLAIM_ROLLBACK, 0};
    assert_int_equal(reclaim_next_step(RECLAIM_DISCONNECT, &t, CONN_STATE_IDLE, 5000, gap),
                     RECLAIM_DISCONNECT);
    assert_int_equal(reclaim_next_step(RECLAIM_ROLLBACK, &t, CONN_STATE_IDLE_IN_XACT, 5000, gap),
                     RECLAIM_OFF);
    t = (struct reclaim_track){RECLAIM_OFF, 0};
    assert_int_equal(reclaim_next_step(RECLAIM_OFF, &t, CONN_STATE_IDLE_IN_XACT, 0, gap),
                     RECLAIM_OFF);
    /* Plain idle (session mode holding a server): only notice and disconnect apply. */
    assert_true(reclaim_step_applies(RECLAIM_NOTICE, CONN_STATE_IDLE));
    assert_false(reclaim_step_applies(RECLAIM_ROLLBACK, CONN_STATE_IDLE));
    assert_false(reclaim_step_applies(RECLAIM_CANCEL, CONN_STATE_IDLE));
    assert_true(reclaim_step_applies(RECLAIM_ROLLBACK, CONN_STATE_IDLE_IN_XACT_ABORTED));
}

static void test_step_gap_bounds(void **state)
{
    (void)state;
    assert_int_equal(reclaim_step_gap_ms(100), 1000);
    assert_int_equal(reclaim_step_gap_ms(10000), 5000);
    assert_int_equal(reclaim_step_gap_ms(3600000), 60000);
}

static void test_event_ring_keeps_newest(void **state)
{
    (void)state;
    struct event_ring r;
    assert_true(events_ring_init(&r, 3));
    for (int i = 0; i < 5; i++)
        events_ring_push(&r, EVENT_LEAK_SUSPECTED, 1000 + i)->after = i;
    assert_int_equal(r.n, 3);
    for (size_t i = 0; i < 3; i++) {
        const struct event *e = events_ring_at(&r, i);
        assert_int_equal(e->seq, 3 + i);
        assert_int_equal(e->after, 2 + (int64_t)i);
        assert_int_equal(e->at_ms, 1002 + (int64_t)i);
    }
    assert_null(events_ring_at(&r, 3));
    struct conn_record rec;
    memset(&rec, 0, sizeof(rec));
    rec.id = 9;
    rec.pid = 77;
    rec.user = rec.application = rec.client_addr = "";
    rec.database = "app";
    struct event *e = events_ring_push(&r, EVENT_RECLAIM_ROLLBACK, 2000);
    events_set_conn(e, &rec);
    assert_string_equal(events_ring_at(&r, 2)->database, "app");
    assert_int_equal(events_ring_at(&r, 2)->pid, 77);
    assert_string_equal(events_kind_name(EVENT_RECLAIM_ROLLBACK), "reclaim_rollback");
    assert_string_equal(events_kind_name(EVENT_KIND_COUNT), "unknown");
    events_ring_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_level_names_round_trip),
        cmocka_unit_test(test_option_default_off_and_parsed),
        cmocka_unit_test(test_protected_suspects_only_get_the_notice),
        cmocka_unit_test(test_steps_climb_one_at_a_time),
        cmocka_unit_test(test_step_gap_bounds),
        cmocka_unit_test(test_event_ring_keeps_newest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

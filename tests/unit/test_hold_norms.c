/* Unit tests for manager/hold_norms: learning from snapshot pairs, decay, the trust threshold
 * and the bound on applications. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "manager/hold_norms.h"
#include "test_manager_fixture.h"

static struct conn_record *client(struct snapshot *snap, int64_t id, const char *app,
                                  int64_t requests, int64_t hold_ms)
{
    struct conn_record *rec = fx_conn(snap, id, "u", app, CONN_STATE_IDLE, 1);
    rec->connected_ms = FX_NOW - FX_S(100); /* the same connection in every snapshot */
    rec->requests = requests;
    rec->hold_total_ms = hold_ms;
    return rec;
}

static void test_learns_only_what_finished_between_snapshots(void **state)
{
    (void)state;
    struct hold_norms hn;
    hold_norms_init(&hn);
    struct snapshot prev, cur;
    fx_snapshot(&prev, SNAPSHOT_MODE_SERVE, FX_NOW);
    client(&prev, 1, "web", 1000, 900000); /* history before the manager looked: ignored */
    fx_snapshot(&cur, SNAPSHOT_MODE_SERVE, FX_NOW + 1000);
    client(&cur, 1, "web", 1030, 900000 + 150); /* 30 transactions, 5 ms each */
    client(&cur, 2, "web", 0, 0);               /* nothing finished */
    client(&cur, 3, "batch", 10, 20000);        /* new: all of its 10 count, too few */
    assert_true(hold_norms_observe(&hn, &prev, &cur));
    assert_int_equal(hold_norms_usual_ms(&hn, "web"), 5);
    assert_int_equal(hold_norms_usual_ms(&hn, "batch"), 0); /* 10 < HOLD_NORMS_MIN_XACTS */
    assert_int_equal(hold_norms_usual_ms(&hn, "other"), 0);
    hold_norms_annotate(&hn, &cur);
    assert_int_equal(cur.conns[0].app_usual_hold_ms, 5);
    assert_int_equal(cur.conns[1].app_usual_hold_ms, 5);
    assert_int_equal(cur.conns[2].app_usual_hold_ms, 0);
    snapshot_free(&prev);

    /* The next run: batch reaches the threshold (10 decayed to 9.5, plus 20 new). A client
     * whose connection is new under a reused id counts from zero. */
    fx_snapshot(&prev, SNAPSHOT_MODE_SERVE, FX_NOW + 2000);
    client(&prev, 3, "batch", 30, 20000 + 40000);
    struct conn_record *reused = client(&prev, 1, "web", 2, 4);
    reused->connected_ms = FX_NOW + 1500;
    assert_true(hold_norms_observe(&hn, &cur, &prev));
    assert_int_equal(hold_norms_usual_ms(&hn, "batch"), 2000);
    /* web: (150 * 0.95 + 4) / (30 * 0.95 + 2) */
    assert_int_equal(hold_norms_usual_ms(&hn, "web"), 5);
    /* Without a previous snapshot every record is new. */
    assert_true(hold_norms_observe(&hn, NULL, &prev));
    snapshot_free(&prev);
    snapshot_free(&cur);
    hold_norms_free(&hn);
}

static void test_bounded_forgets_least_recently_seen(void **state)
{
    (void)state;
    struct hold_norms hn;
    hold_norms_init(&hn);
    struct snapshot snap;
    char app[32];
    /* HOLD_NORMS_MAX applications, each seen at its own time; then one more. */
    for (int round = 0; round < 2; round++) {
        fx_snapshot(&snap, SNAPSHOT_MODE_SERVE, FX_NOW + round);
        for (int i = 0; i < HOLD_NORMS_MAX / 2; i++) {
            snprintf(app, sizeof(app), "app-%04d", round * (HOLD_NORMS_MAX / 2) + i);
            client(&snap, i, app, 100, 100);
        }
        assert_true(hold_norms_observe(&hn, NULL, &snap));
        snapshot_free(&snap);
    }
    assert_int_equal(hn.n, HOLD_NORMS_MAX);
    fx_snapshot(&snap, SNAPSHOT_MODE_SERVE, FX_NOW + 5);
    client(&snap, 1, "zz-late", 100, 300);
    assert_true(hold_norms_observe(&hn, NULL, &snap));
    snapshot_free(&snap);
    assert_int_equal(hn.n, HOLD_NORMS_MAX);
    assert_int_equal(hold_norms_usual_ms(&hn, "zz-late"), 3);
    /* One of the oldest round is gone; the newer round and the order are intact. */
    int gone = 0;
    for (int i = 0; i < HOLD_NORMS_MAX / 2; i++) {
        snprintf(app, sizeof(app), "app-%04d", i);
        gone += hold_norms_usual_ms(&hn, app) == 0;
    }
    assert_int_equal(gone, 1);
    snprintf(app, sizeof(app), "app-%04d", HOLD_NORMS_MAX - 1);
    assert_int_equal(hold_norms_usual_ms(&hn, app), 1);
    for (size_t i = 1; i < hn.n; i++)
        assert_true(strcmp(hn.norms[i - 1].application, hn.norms[i].application) < 0);
    hold_norms_free(&hn);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_learns_only_what_finished_between_snapshots),
        cmocka_unit_test(test_bounded_forgets_least_recently_seen),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for OWED_KEPT in the owed-answer model: a Parse that re-creates a statement the
 * server holds (a Close of its name went first) is reported as a Close when an earlier error
 * makes the server skip both (the statement stays), and as a Parse when it fails itself (the
 * Close ran: the statement is gone). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proto/owed.h"

struct report {
    enum owed_msg msg;
    uint64_t id;
};

static struct report reports[8];
static int n_reports;

static void forget(void *ctx, enum owed_msg msg, uint64_t id)
{
    (void)ctx;
    if (n_reports < 8)
        reports[n_reports++] = (struct report){msg, id};
}

static void feed(struct owed_queue *q, const char *answers, enum owed_verdict last)
{
    enum owed_verdict v = OWED_OK;
    for (const char *t = answers; *t; t++)
        v = owed_on_backend(q, (uint8_t)*t);
    assert_int_equal(v, last);
}

/* The pooler's Close + Parse of statement 5 in front of a client's Bind, Execute, Sync. */
static void recreate(struct owed_queue *q, uint8_t parse_flags)
{
    assert_true(owed_note_frontend(q, 'C', OWED_SWALLOW, 0));
    assert_true(owed_note_frontend(q, 'P', parse_flags, 5));
    assert_true(owed_note_frontend(q, 'B', 0, 0));
    assert_true(owed_note_frontend(q, 'E', 0, 0));
    assert_true(owed_note_frontend(q, 'S', 0, 0));
}

static void test_skipped_recreation_keeps_the_statement(void **state)
{
    (void)state;
    struct owed_queue q;
    owed_init(&q, forget, NULL);
    n_reports = 0;
    /* An error earlier in the pipeline: everything up to Sync is skipped. */
    assert_true(owed_note_frontend(&q, 'E', 0, 0));
    recreate(&q, OWED_SWALLOW | OWED_KEPT);
    feed(&q, "EZ", OWED_IDLE);
    assert_int_equal(n_reports, 1);
    assert_int_equal(reports[0].msg, OWED_CLOSE); /* it stays */
    assert_int_equal(reports[0].id, 5);
    /* The client's own Parse, marked the same way: the same. */
    n_reports = 0;
    assert_true(owed_note_frontend(&q, 'E', 0, 0));
    recreate(&q, OWED_KEPT);
    feed(&q, "EZ", OWED_IDLE);
    assert_int_equal(n_reports, 1);
    assert_int_equal(reports[0].msg, OWED_CLOSE);
    owed_reset(&q);
}

static void test_failed_recreation_loses_the_statement(void **state)
{
    (void)state;
    struct owed_queue q;
    owed_init(&q, forget, NULL);
    n_reports = 0;
    /* The Close ran (CloseComplete, swallowed), the Parse itself failed. */
    recreate(&q, OWED_SWALLOW | OWED_KEPT);
    feed(&q, "3EZ", OWED_IDLE);
    assert_int_equal(n_reports, 1);
    assert_int_equal(reports[0].msg, OWED_PARSE);
    assert_int_equal(reports[0].id, 5);
    /* Without OWED_KEPT a skipped Parse did not create its statement. */
    n_reports = 0;
    assert_true(owed_note_frontend(&q, 'E', 0, 0));
    recreate(&q, OWED_SWALLOW);
    feed(&q, "EZ", OWED_IDLE);
    assert_int_equal(n_reports, 1);
    assert_int_equal(reports[0].msg, OWED_PARSE);
    owed_reset(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_skipped_recreation_keeps_the_statement),
        cmocka_unit_test(test_failed_recreation_loses_the_statement),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for the owed-answer model: for each message order the protocol allows, the
 * ReadyForQuery that ends the last request is the only one reported idle, and answers that
 * fit nowhere are violations. Streams are written as strings of message type bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proto/owed.h"

static void send_fe(struct owed_queue *q, const char *types)
{
    for (const char *t = types; *t; t++)
        if (*t != ' ')
            assert_true(owed_note_frontend(q, (uint8_t)*t, 0, 0));
}

/* Feeds backend messages; every verdict but the last must be OK, the last is returned. */
static enum owed_verdict recv_be(struct owed_queue *q, const char *types)
{
    enum owed_verdict v = OWED_OK;
    for (const char *t = types; *t; t++) {
        if (*t == ' ')
            continue;
        if (v != OWED_OK)
            fail_msg("verdict %d before '%c' of \"%s\"", v, *t, types);
        v = owed_on_backend(q, (uint8_t)*t);
    }
    return v;
}

static void test_simple_query(void **state)
{
    (void)state;
    struct owed_queue q;
    owed_init(&q, NULL, NULL);
    assert_true(owed_is_idle(&q));
    send_fe(&q, "Q");
    assert_false(owed_is_idle(&q));
    assert_int_equal(recv_be(&q, "T D D C Z"), OWED_IDLE);
    assert_true(owed_is_idle(&q));
    /* Pipelined simple queries: only the last ReadyForQuery ends them. */
    send_fe(&q, "QQQ");
    assert_int_equal(recv_be(&q, "C Z"), OWED_OK);
    assert_int_equal(recv_be(&q, "E Z"), OWED_OK);
    assert_int_equal(recv_be(&q, "I Z"), OWED_IDLE);
    owed_reset(&q);
}

static void test_ready_nobody_asked_for(void **state)
{
    (void)state;
    struct owed_queue q;
    owed_init(&q, NULL, NULL);
    assert_int_equal(owed_on_backend(&q, 'Z'), OWED_VIOLATION);
    send_fe(&q, "Q");
    assert_int_equal(owed_on_backend(&q, 'Z'), OWED_VIOLATION); /* no completion first */
    owed_reset(&q);
    send_fe(&q, "Q");
    assert_int_equal(recv_be(&q, "C Z"), OWED_IDLE);
    assert_int_equal(owed_on_backend(&q, 'D'), OWED_VIOLATION);
    /* A ReadyForQuery while an extended batch without Sync is open is a lie. */
    send_fe(&q, "PB");
    assert_int_equal(owed_on_backend(&q, 'Z'), OWED_VIOLATION);
    owed_reset(&q);
}

static void test_extended_batches(void **state)
{
    (void)state;
    struct owed_queue q;
    owed_init(&q, NULL, NULL);
    send_fe(&q, "PBDES PBDES");
    assert_int_equal(recv_be(&q, "1 2 T D C Z"), OWED_OK);
    assert_int_equal(recv_be(&q, "1 2 n C Z"), OWED_IDLE);
    /* Describe of a statement: ParameterDescription then RowDescription. */
    send_fe(&q, "PDS");
    assert_int_equal(recv_be(&q, "1 t T Z"), OWED_IDLE);
    /* Flush answers nothing; PortalSuspended ends an Execute. */
    send_fe(&q, "BEH");
    assert_int_equal(recv_be(&q, "2 D s"), OWED_OK);
    assert_false(owed_is_idle(&q)); /* implicit transaction open until Sync */
    send_fe(&q, "ES");
    assert_int_equal(recv_be(&q, "D C Z"), OWED_IDLE);
    owed_reset(&q);
}

static void test_error_skips_to_sync(void **state)
{
    (void)state;
    struct owed_queue q;
    owed_init(&q, NULL, NULL);
    /* Bind fails: Execute and the Query before Sync are ignored by the backend. */
    send_fe(&q, "PBEQS QS");
    assert_int_equal(recv_be(&q, "1 E Z"), OWED_OK);
    assert_int_equal(recv_be(&q, "C Z"), OWED_OK);
    assert_int_equal(recv_be(&q, "Z"), OWED_IDLE); /* the bare Sync */
    /* The error arrives before the Sync was even sent. */
    send_fe(&q, "PB");
    assert_int_equal(recv_be(&q, "E"), OWED_OK);
    assert_false(owed_is_idle(&q));
    send_fe(&q, "EQ"); /* skipped */
    send_fe(&q, "S");
    assert_int_equal(recv_be(&q, "Z"), OWED_IDLE);
    /* Anything but ReadyForQuery while skipping is a violation. */
    send_fe(&q, "PB");
    assert_int_equal(recv_be(&q, "E"), OWED_OK);
    assert_int_equal(owed_on_backend(&q, 'C'), OWED_VIOLATION);
    owed_reset(&q);
}

static void test_errors_that_end_with_ready(void **state)
{
    (void)state;
    struct owed_queue q;
    owed_init(&q, NULL, NULL);
    /* A simple query's error, a function call's and a Sync's commit error. */
    send_fe(&q, "Q F PBES");
    assert_int_equal(recv_be(&q, "E Z"), OWED_OK);
    assert_int_equal(recv_be(&q, "E Z"), OWED_OK);
    assert_int_equal(recv_be(&q, "1 2 C E Z"), OWED_IDLE);
    send_fe(&q, "F");
    assert_int_equal(recv_be(&q, "V Z"), OWED_IDLE);
    owed_reset(&q);
}

/* The defect a hostile review found: CopyData and CopyDone pipelined with the COPY Query,
 * then Sync, a stray CopyDone and a Query. The Sync is answered (the server is out of COPY),
 * so two more ReadyForQuery are owed after the COPY's own. */
static void test_pipelined_copy_then_sync(void **state)
{
    (void)state;
    struct owed_queue q;
    owed_init(&q, NULL, NULL);
    send_fe(&q, "Q d d c");
    assert_int_equal(recv_be(&q, "G"), OWED_OK);
    send_fe(&q, "S c Q");
    assert_int_equal(recv_be(&q, "C Z"), OWED_OK);
    assert_int_equal(recv_be(&q, "Z"), OWED_OK);
    assert_int_equal(recv_be(&q, "T D C Z"), OWED_IDLE);
    owed_reset(&q);
}

static void test_copy_sent_after_copy_in_response(void **state)
{
    (void)state;
    struct owed_queue q;
    owed_init(&q, NULL, NULL);
    send_fe(&q, "Q");
    assert_int_equal(recv_be(&q, "G"), OWED_OK);
    send_fe(&q, "d H d S d c");
    assert_int_equal(recv_be(&q, "C Z"), OWED_IDLE); /* the Sync was read by COPY */
    /* CopyFail: error, then ReadyForQuery of the Query. */
    send_fe(&q, "Q");
    assert_int_equal(recv_be(&q, "G"), OWED_OK);
    send_fe(&q, "d f");
    assert_int_equal(recv_be(&q, "E Z"), OWED_IDLE);
    /* Two COPY in one Query string. */
    send_fe(&q, "Q d c d c");
    assert_int_equal(recv_be(&q, "G C G C Z"), OWED_IDLE);
    owed_reset(&q);
}

static void test_copy_errors(void **state)
{
    (void)state;
    struct owed_queue q;
    owed_init(&q, NULL, NULL);
    /* A bad row: the rest of the copy data is ignored outside COPY. */
    send_fe(&q, "Q d d");
    assert_int_equal(recv_be(&q, "G E Z"), OWED_IDLE);
    send_fe(&q, "d c");
    assert_true(owed_is_idle(&q));
    send_fe(&q, "Q");
    assert_int_equal(recv_be(&q, "C Z"), OWED_IDLE);
    /* Another message inside the copy data and a failure: whether PostgreSQL ran it depends
     * on its read-ahead, so the model gives up. */
    send_fe(&q, "Q d Q d c S");
    assert_int_equal(recv_be(&q, "G E"), OWED_OK);
    assert_true(owed_is_lost(&q));
    assert_int_equal(recv_be(&q, "Z Z Z"), OWED_OK);
    assert_false(owed_is_idle(&q));
    owed_reset(&q);
    assert_true(owed_is_idle(&q));
    /* CommandComplete before CopyDone was sent. */
    send_fe(&q, "Q d");
    assert_int_equal(recv_be(&q, "G"), OWED_OK);
    assert_int_equal(owed_on_backend(&q, 'C'), OWED_VIOLATION);
    owed_reset(&q);
    /* ReadyForQuery in the middle of COPY. */
    send_fe(&q, "Q");
    assert_int_equal(recv_be(&q, "G"), OWED_OK);
    assert_int_equal(owed_on_backend(&q, 'Z'), OWED_VIOLATION);
    owed_reset(&q);
}

static void test_extended_copy(void **state)
{
    (void)state;
    struct owed_queue q;
    owed_init(&q, NULL, NULL);
    /* libpq's way: the Sync sent with Execute is read (and ignored) by COPY; the client sends
     * another after CopyDone. */
    send_fe(&q, "P B D E S");
    assert_int_equal(recv_be(&q, "1 2 n G"), OWED_OK);
    send_fe(&q, "d d c S");
    assert_int_equal(recv_be(&q, "C Z"), OWED_IDLE);
    /* CopyFail through the extended protocol: skip to the Sync after it. */
    send_fe(&q, "P B E");
    assert_int_equal(recv_be(&q, "1 2 G"), OWED_OK);
    send_fe(&q, "d f Q S");
    assert_int_equal(recv_be(&q, "E Z"), OWED_IDLE);
    owed_reset(&q);
}

/* libpq's COPY with parameters fails on a bad row: whether COPY had read the Sync sent with
 * the Execute is unknown until the answers show it. Both ways must come out right. */
static void test_failed_copy_with_sync_inside(void **state)
{
    (void)state;
    struct owed_queue q;
    owed_init(&q, NULL, NULL);
    /* COPY read the Sync, then failed on the data: one ReadyForQuery (the second Sync). */
    send_fe(&q, "P B D E S");
    assert_int_equal(recv_be(&q, "1 2 n G"), OWED_OK);
    send_fe(&q, "d c S");
    assert_int_equal(recv_be(&q, "E"), OWED_OK);
    assert_int_equal(q.n_alts, 1);
    assert_int_equal(recv_be(&q, "Z"), OWED_OK); /* hypothesis 1 still owes one */
    assert_false(owed_is_idle(&q));
    send_fe(&q, "Q");
    assert_int_equal(recv_be(&q, "T"), OWED_OK); /* rules hypothesis 1 out */
    assert_int_equal(q.n_alts, 0);
    assert_int_equal(recv_be(&q, "D C Z"), OWED_IDLE);
    /* A BEFORE STATEMENT trigger failed before COPY read anything: the first Sync ends the
     * skip and answers, then the second. */
    send_fe(&q, "P B D E S");
    assert_int_equal(recv_be(&q, "1 2 n G"), OWED_OK);
    send_fe(&q, "d c S");
    assert_int_equal(recv_be(&q, "E Z"), OWED_OK);
    assert_false(owed_is_idle(&q));
    assert_int_equal(recv_be(&q, "Z"), OWED_IDLE); /* only hypothesis 1 explains this one */
    assert_true(owed_is_idle(&q));
    assert_int_equal(q.n_alts, 0);
    /* The client waits for nothing more: the pooler's probe tells the hypotheses apart. */
    send_fe(&q, "P B D E S");
    assert_int_equal(recv_be(&q, "1 2 n G"), OWED_OK);
    send_fe(&q, "d c S");
    assert_int_equal(recv_be(&q, "E Z"), OWED_OK);
    assert_true(owed_probe_due(&q));
    assert_true(owed_note_probe(&q));
    assert_false(owed_probe_due(&q));
    assert_true(owed_answer_swallowed(&q, 'I')); /* only hypothesis 0 can take it */
    assert_int_equal(recv_be(&q, "I"), OWED_OK);
    assert_int_equal(q.n_alts, 0);
    assert_true(owed_answer_swallowed(&q, 'Z'));
    assert_int_equal(recv_be(&q, "Z"), OWED_IDLE);
    /* Simple-protocol COPY with a Sync inside: ReadyForQuery of the Query first. */
    send_fe(&q, "Q d S d");
    assert_int_equal(recv_be(&q, "G E Z"), OWED_OK);
    assert_false(owed_is_idle(&q));
    send_fe(&q, "c Q");
    assert_int_equal(recv_be(&q, "Z C Z"), OWED_IDLE); /* the Sync was not read by COPY */
    owed_reset(&q);
}

static void test_copy_out(void **state)
{
    (void)state;
    struct owed_queue q;
    owed_init(&q, NULL, NULL);
    send_fe(&q, "Q");
    assert_int_equal(recv_be(&q, "H d d c C Z"), OWED_IDLE);
    send_fe(&q, "BES");
    assert_int_equal(recv_be(&q, "2 H d c C Z"), OWED_IDLE);
    /* COPY BOTH is replication only, which pgwarden refuses. */
    send_fe(&q, "Q");
    assert_int_equal(owed_on_backend(&q, 'W'), OWED_VIOLATION);
    owed_reset(&q);
}

static void test_async_messages_anytime(void **state)
{
    (void)state;
    struct owed_queue q;
    owed_init(&q, NULL, NULL);
    assert_int_equal(recv_be(&q, "N S A"), OWED_OK);
    send_fe(&q, "Q");
    assert_int_equal(recv_be(&q, "N C S A Z"), OWED_IDLE);
    /* An error nobody asked for (FATAL termination): the server is never reused. */
    assert_int_equal(owed_on_backend(&q, 'E'), OWED_OK);
    assert_true(owed_is_lost(&q));
    owed_reset(&q);
}

static void test_not_allowed_types(void **state)
{
    (void)state;
    struct owed_queue q;
    owed_init(&q, NULL, NULL);
    for (const char *t = "QPBEDCSHFdcf"; *t; t++)
        assert_int_not_equal(owed_msg_of((uint8_t)*t), OWED_NOT_ALLOWED);
    assert_int_equal(owed_msg_of('Z'), OWED_NOT_ALLOWED);
    assert_int_equal(owed_msg_of('T'), OWED_NOT_ALLOWED);
    assert_false(owed_note_frontend(&q, 'p', 0, 0));
    assert_false(owed_note_frontend(&q, 'X', 0, 0));
    assert_false(owed_note_frontend(&q, 0, 0, 0));
    owed_reset(&q);
}

static uint64_t forgotten[8];
static enum owed_msg forgotten_msg[8];
static int n_forgotten;

static void forget(void *ctx, enum owed_msg msg, uint64_t id)
{
    (void)ctx;
    if (n_forgotten < 8) {
        forgotten_msg[n_forgotten] = msg;
        forgotten[n_forgotten++] = id;
    }
}

static void test_swallow_and_forget(void **state)
{
    (void)state;
    struct owed_queue q;
    owed_init(&q, forget, NULL);
    n_forgotten = 0;
    /* An injected Parse before a client's Bind: its ParseComplete is swallowed. */
    assert_true(owed_note_frontend(&q, 'P', OWED_SWALLOW, 7));
    send_fe(&q, "BES");
    assert_true(owed_answer_swallowed(&q, '1'));
    assert_false(owed_answer_swallowed(&q, '2'));
    assert_int_equal(recv_be(&q, "1"), OWED_OK);
    assert_false(owed_answer_swallowed(&q, '2'));
    assert_int_equal(recv_be(&q, "2 C Z"), OWED_IDLE);
    /* A skipped Parse did not create its statement. */
    assert_true(owed_note_frontend(&q, 'P', 0, 8));
    assert_true(owed_note_frontend(&q, 'P', OWED_SWALLOW, 9));
    send_fe(&q, "BS");
    assert_int_equal(recv_be(&q, "E Z"), OWED_IDLE);
    assert_int_equal(n_forgotten, 2);
    assert_int_equal(forgotten[0], 8);
    assert_int_equal(forgotten[1], 9);
    assert_int_equal(forgotten_msg[0], OWED_PARSE);
    /* A skipped Close (the pooler's eviction of statement 3) did not remove it. */
    n_forgotten = 0;
    assert_true(owed_note_frontend(&q, 'E', 0, 0));
    assert_true(owed_note_frontend(&q, 'C', OWED_SWALLOW, 3));
    assert_true(owed_note_frontend(&q, 'C', OWED_SWALLOW, 0));
    send_fe(&q, "S");
    assert_int_equal(recv_be(&q, "E Z"), OWED_IDLE);
    assert_int_equal(n_forgotten, 1);
    assert_int_equal(forgotten[0], 3);
    assert_int_equal(forgotten_msg[0], OWED_CLOSE);
    owed_reset(&q);
}

static void test_bounded(void **state)
{
    (void)state;
    struct owed_queue q;
    owed_init(&q, NULL, NULL);
    /* Runs of one message merge: a Sync flood takes one entry. */
    for (int i = 0; i < 100000; i++)
        assert_true(owed_note_frontend(&q, 'S', 0, 0));
    assert_int_equal(q.n, 1);
    owed_reset(&q);
    /* Alternating messages fill the queue; the caller must wait for room. */
    int sent = 0;
    while (owed_has_room(&q)) {
        assert_true(owed_note_frontend(&q, sent % 2 ? 'H' : 'S', 0, 0));
        sent++;
    }
    assert_true(sent <= OWED_MAX_ENTRIES);
    assert_true(sent >= OWED_MAX_ENTRIES - OWED_RESERVE);
    for (int i = 0; i < (sent + 1) / 2 - 1; i++)
        assert_int_equal(owed_on_backend(&q, 'Z'), OWED_OK);
    assert_int_equal(owed_on_backend(&q, 'Z'), OWED_IDLE);
    owed_reset(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_query),
        cmocka_unit_test(test_ready_nobody_asked_for),
        cmocka_unit_test(test_extended_batches),
        cmocka_unit_test(test_error_skips_to_sync),
        cmocka_unit_test(test_errors_that_end_with_ready),
        cmocka_unit_test(test_pipelined_copy_then_sync),
        cmocka_unit_test(test_copy_sent_after_copy_in_response),
        cmocka_unit_test(test_copy_errors),
        cmocka_unit_test(test_extended_copy),
        cmocka_unit_test(test_failed_copy_with_sync_inside),
        cmocka_unit_test(test_copy_out),
        cmocka_unit_test(test_async_messages_anytime),
        cmocka_unit_test(test_not_allowed_types),
        cmocka_unit_test(test_swallow_and_forget),
        cmocka_unit_test(test_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

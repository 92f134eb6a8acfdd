/* Unit tests for pool/params' slots: the five fixed ones, track_extra_parameters, names
 * clients bring, the bound on slots, slots recycled once no value refers to them, and SET
 * statements for values a client's own SET gave (SQL text) next to quoted strings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool/params.h"

static void test_fixed_and_default_slots(void **state)
{
    (void)state;
    for (int i = 0; i < PARAM_FIXED_COUNT; i++) {
        assert_true(params_tracked(i));
        assert_true(params_reported(i));
    }
    /* track_extra_parameters starts as IntervalStyle. */
    int id = params_lookup("intervalstyle");
    assert_int_equal(id, PARAM_FIXED_COUNT);
    assert_true(params_tracked(id));
    assert_true(params_reported(id));
    assert_false(params_tracked(-1));
    assert_false(params_reported(PARAM_COUNT));
    assert_string_equal(params_name(-1), "");
}

static void test_names(void **state)
{
    (void)state;
    const char *good[] = {"extra_float_digits", "a", "_x", "myapp.flag", "a$b", "x.y.z1"};
    const char *bad[] = {"",   "1abc", "a-b", "a..b", "a.",
                         ".a", "a b",  "a'b", "a\"b", "\xc3\xa9t\xc3\xa9"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        assert_true(params_valid_name(good[i]));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_false(params_valid_name(bad[i]));
        assert_int_equal(params_register(bad[i]), -1);
    }
    char longest[64];
    memset(longest, 'a', 63);
    longest[63] = '\0';
    assert_true(params_valid_name(longest));
    char too_long[65];
    memset(too_long, 'a', 64);
    too_long[64] = '\0';
    assert_false(params_valid_name(too_long));
}

static void test_register_and_track(void **state)
{
    (void)state;
    int a = params_register("extra_float_digits");
    assert_true(a >= PARAM_FIXED_COUNT);
    assert_int_equal(params_register("EXTRA_FLOAT_DIGITS"), a); /* case-insensitive */
    assert_false(params_tracked(a));
    assert_false(params_reported(a));
    params_mark_reported(a); /* a server named it in its login report */
    assert_true(params_reported(a));
    /* track_extra_parameters replaces the list; dropped names keep their slots. */
    params_track_extra("search_path, statement_timeout");
    int sp = params_lookup("search_path");
    assert_true(sp >= 0 && params_tracked(sp) && params_reported(sp));
    assert_false(params_tracked(params_lookup("IntervalStyle")));
    assert_true(params_tracked(PARAM_TIMEZONE)); /* the five stay */
    params_track_extra("IntervalStyle");
    assert_false(params_tracked(sp));
    assert_int_equal(params_lookup("search_path"), sp);
    /* Slots run out; names already given one still find it. */
    char name[32];
    int last = -1;
    for (int i = 0; i < 2 * PARAM_COUNT; i++) {
        snprintf(name, sizeof(name), "filler_%d", i);
        int id = params_register(name);
        if (id < 0)
            break;
        last = id;
    }
    assert_int_equal(last, PARAM_COUNT - 1);
    assert_int_equal(params_register("one_too_many"), -1);
    assert_int_equal(params_register("search_path"), sp);
}

/* Runs after test_register_and_track: every slot is taken. */
static void test_recycle(void **state)
{
    (void)state;
    assert_int_equal(params_register("late_name"), -1);
    int sp = params_lookup("search_path");
    int held = params_lookup("filler_0"), freed = params_lookup("filler_1");
    int tracked = params_lookup("IntervalStyle");
    assert_true(held >= 0 && freed >= 0 && tracked >= 0 && sp >= 0);
    bool in_use[PARAM_COUNT] = {false};
    in_use[held] = true;
    in_use[sp] = true;
    /* Every slot but the held ones, the five and the tracked one goes. */
    int n = params_recycle(in_use);
    assert_int_equal(n, PARAM_COUNT - PARAM_FIXED_COUNT - 3);
    assert_int_equal(params_lookup("filler_1"), -1);
    assert_string_equal(params_name(freed), "");
    assert_false(params_reported(freed));
    assert_int_equal(params_lookup("filler_0"), held);
    assert_int_equal(params_lookup("IntervalStyle"), tracked);
    assert_true(params_tracked(tracked));
    assert_int_equal(params_lookup("client_encoding"), PARAM_CLIENT_ENCODING);
    /* A new name takes a free slot, the lowest first; nothing is recycled twice. */
    int late = params_register("late_name");
    assert_true(late >= PARAM_FIXED_COUNT && late != held && late != sp && late != tracked);
    assert_false(params_reported(late));
    assert_false(params_tracked(late));
    assert_int_equal(params_register("LATE_NAME"), late);
    in_use[late] = true;
    assert_int_equal(params_recycle(in_use), 0);
}

static void test_set_statements(void **state)
{
    (void)state;
    int efd = params_register("extra_float_digits");
    assert_true(efd >= 0);
    struct pstr *want[PARAM_COUNT] = {0}, *have[PARAM_COUNT] = {0};
    want[efd] = params_intern_sql("3", 1);
    have[efd] = params_intern("3"); /* the same text as a string is another value */
    assert_ptr_not_equal(want[efd], have[efd]);
    want[PARAM_APPLICATION_NAME] = params_intern("it's");
    have[PARAM_TIMEZONE] = params_intern("UTC");
    const struct pstr *const *w = (const struct pstr *const *)want;
    const struct pstr *const *h = (const struct pstr *const *)have;
    size_t need = params_set_len(w, h);
    char *sql = malloc(need);
    assert_int_equal(params_build_set(w, h, sql, need), 3);
    /* No backslash: a plain '' literal (what PgBouncer's log shows); SQL text as it is. */
    assert_string_equal(sql, "RESET TimeZone;SET application_name='it''s';"
                             "SET extra_float_digits=3;");
    assert_int_equal(strlen(sql) + 1, need);
    free(sql);
    for (int i = 0; i < PARAM_COUNT; i++) {
        params_unref(want[i]);
        params_unref(have[i]);
    }
    /* params_assign takes a reference and drops the old one. */
    struct pstr *slot = NULL, *v = params_intern("x");
    params_assign(&slot, v);
    assert_int_equal(v->refs, 2);
    params_assign(&slot, v);
    assert_int_equal(v->refs, 2);
    params_assign(&slot, NULL);
    assert_int_equal(v->refs, 1);
    params_unref(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixed_and_default_slots), cmocka_unit_test(test_names),
        cmocka_unit_test(test_register_and_track),      cmocka_unit_test(test_recycle),
        cmocka_unit_test(test_set_statements),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

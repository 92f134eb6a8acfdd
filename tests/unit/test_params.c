/* Unit tests for pool/params: name lookup, interning with reference counts, and the SET
 * statement that brings a server's session parameters in line with a client's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool/params.h"

static void test_lookup_is_case_insensitive_and_bounded(void **state)
{
    (void)state;
    assert_int_equal(params_lookup("application_name"), PARAM_APPLICATION_NAME);
    assert_int_equal(params_lookup("TIMEZONE"), PARAM_TIMEZONE);
    assert_int_equal(params_lookup("datestyle"), PARAM_DATESTYLE);
    assert_int_equal(params_lookup("search_path"), -1);
    assert_int_equal(params_lookup(""), -1);
    assert_string_equal(params_name(PARAM_DATESTYLE), "DateStyle");
    assert_string_equal(params_name(PARAM_COUNT - 1), ""); /* no name there yet */
}

static void test_interning_shares_and_frees(void **state)
{
    (void)state;
    struct pstr *a = params_intern("UTF8");
    struct pstr *b = params_intern("UTF8");
    struct pstr *c = params_intern("LATIN1");
    assert_non_null(a);
    assert_ptr_equal(a, b); /* the same value is one object: comparing is a pointer compare */
    assert_ptr_not_equal(a, c);
    assert_int_equal(a->refs, 2);
    assert_ptr_equal(params_ref(a), a);
    assert_int_equal(a->refs, 3);
    params_unref(a);
    params_unref(b);
    params_unref(a);
    /* The last reference freed it: interning again gives a fresh object with one ref. */
    struct pstr *again = params_intern("UTF8");
    assert_int_equal(again->refs, 1);
    params_unref(again);
    params_unref(c);
    params_unref(NULL);
    assert_null(params_ref(NULL));

    struct pstr *slot = NULL;
    params_set(&slot, "x");
    params_set(&slot, "y");
    assert_string_equal(slot->str, "y");
    assert_int_equal(slot->refs, 1);
    params_unref(slot);

    /* Many distinct values (more than the table's buckets) all intern and free. */
    struct pstr *many[3000];
    char name[32];
    for (int i = 0; i < 3000; i++) {
        snprintf(name, sizeof(name), "value-%d", i);
        many[i] = params_intern(name);
        assert_non_null(many[i]);
    }
    for (int i = 0; i < 3000; i++) {
        snprintf(name, sizeof(name), "value-%d", i);
        assert_string_equal(many[i]->str, name);
        params_unref(many[i]);
    }
}

static void test_set_statement_only_for_differences_and_quoted(void **state)
{
    (void)state;
    struct pstr *want[PARAM_COUNT] = {0}, *have[PARAM_COUNT] = {0};
    want[PARAM_TIMEZONE] = params_intern("UTC");
    have[PARAM_TIMEZONE] = params_ref(want[PARAM_TIMEZONE]); /* same: nothing to set */
    want[PARAM_APPLICATION_NAME] = params_intern("it's a \\ test");
    have[PARAM_APPLICATION_NAME] = params_intern("other");
    want[PARAM_DATESTYLE] = NULL; /* the server's default: what it had at login */
    have[PARAM_DATESTYLE] = params_intern("ISO, MDY");
    const struct pstr *const *w = (const struct pstr *const *)want;
    const struct pstr *const *h = (const struct pstr *const *)have;
    size_t need = params_set_len(w, h);
    char *sql = malloc(need);
    assert_int_equal(params_build_set(w, h, sql, need), 2);
    /* E'' literal with quotes and backslashes doubled: safe under any
     * standard_conforming_strings. */
    assert_string_equal(sql, "RESET DateStyle;SET application_name=E'it''s a \\\\ test';");
    assert_int_equal(strlen(sql) + 1, need);
    /* Too small a buffer is refused, never overrun. */
    assert_int_equal(params_build_set(w, h, sql, need - 1), -1);
    free(sql);
    /* Nothing differs: an empty statement of length 1 (the NUL). */
    params_unref(have[PARAM_APPLICATION_NAME]);
    have[PARAM_APPLICATION_NAME] = params_ref(want[PARAM_APPLICATION_NAME]);
    params_unref(have[PARAM_DATESTYLE]);
    have[PARAM_DATESTYLE] = NULL;
    assert_int_equal(params_set_len(w, h), 1);
    char empty[1];
    assert_int_equal(params_build_set(w, h, empty, 1), 0);
    assert_string_equal(empty, "");
    for (int i = 0; i < PARAM_COUNT; i++) {
        params_unref(want[i]);
        params_unref(have[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lookup_is_case_insensitive_and_bounded),
        cmocka_unit_test(test_interning_shares_and_frees),
        cmocka_unit_test(test_set_statement_only_for_differences_and_quoted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

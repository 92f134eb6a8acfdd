/* Unit tests for common/utf8: the validity rules of Unicode's table 3-7 and the repair. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "common/utf8.h"

static bool valid(const char *s)
{
    return utf8_is_valid(s, strlen(s));
}

static void test_valid_and_invalid_sequences(void **state)
{
    (void)state;
    assert_true(valid(""));
    assert_true(valid("plain ascii"));
    assert_true(valid("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x90\x98")); /* é € 🐘 */
    assert_true(valid("\xed\x9f\xbf"));                              /* U+D7FF */
    assert_true(valid("\xf4\x8f\xbf\xbf"));                          /* U+10FFFF */
    assert_false(valid("\xff"));
    assert_false(valid("\x80"));             /* stray continuation */
    assert_false(valid("\xc0\xaf"));         /* overlong '/' */
    assert_false(valid("\xe0\x80\xaf"));     /* overlong */
    assert_false(valid("\xed\xa0\x80"));     /* surrogate U+D800 */
    assert_false(valid("\xf4\x90\x80\x80")); /* past U+10FFFF */
    assert_false(valid("\xf5\x80\x80\x80"));
    assert_false(valid("\xe2\x82"));     /* cut short */
    assert_false(valid("ok\xc3"));       /* cut short at the end */
    assert_false(valid("\xe2\x28\xa1")); /* bad continuation */
}

static void test_repair_replaces_each_bad_byte(void **state)
{
    (void)state;
    size_t n;
    char *r = utf8_repair("app\xff\xfe", 5, &n);
    assert_non_null(r);
    assert_string_equal(r, "app\xef\xbf\xbd\xef\xbf\xbd");
    assert_int_equal(n, strlen(r));
    assert_true(utf8_is_valid(r, n));
    free(r);
    r = utf8_repair("\xe2\x82x\xc3\xa9", 5, &n); /* cut-short sequence, then valid text */
    assert_string_equal(r, "\xef\xbf\xbd\xef\xbf\xbdx\xc3\xa9");
    free(r);
    r = utf8_repair("fine", 4, &n);
    assert_string_equal(r, "fine");
    free(r);
}

static void test_make_valid_keeps_or_replaces(void **state)
{
    (void)state;
    char *s = strdup("{\"a\":\"ok\"}");
    char *same = utf8_make_valid(s);
    assert_ptr_equal(same, s); /* valid: the same string, no copy */
    free(same);
    char *fixed = utf8_make_valid(strdup("{\"a\":\"\xff\"}"));
    assert_string_equal(fixed, "{\"a\":\"\xef\xbf\xbd\"}");
    free(fixed);
    assert_null(utf8_make_valid(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_and_invalid_sequences),
        cmocka_unit_test(test_repair_replaces_each_bad_byte),
        cmocka_unit_test(test_make_valid_keeps_or_replaces),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for the admin console's SET parser (console_parse_set). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "admin/console.h"

static void test_forms_that_parse(void **state)
{
    (void)state;
    char key[64], value[64];
    assert_true(
        console_parse_set("SET default_pool_size = 20", key, sizeof(key), value, sizeof(value)));
    assert_string_equal(key, "default_pool_size");
    assert_string_equal(value, "20");
    assert_true(
        console_parse_set("  set query_timeout TO 5s;", key, sizeof(key), value, sizeof(value)));
    assert_string_equal(key, "query_timeout");
    assert_string_equal(value, "5s");
    assert_true(console_parse_set("SET server_reset_query='DISCARD ALL' ;", key, sizeof(key), value,
                                  sizeof(value)));
    assert_string_equal(value, "DISCARD ALL");
    assert_true(console_parse_set("SET application_name_add_host = 'it''s'", key, sizeof(key),
                                  value, sizeof(value)));
    assert_string_equal(value, "it's");
    assert_true(console_parse_set("SET x = ''", key, sizeof(key), value, sizeof(value)));
    assert_string_equal(value, "");
}

static void test_forms_that_do_not(void **state)
{
    (void)state;
    char key[8], value[8];
    const char *bad[] = {
        "SET",
        "SET x",
        "SET x =",
        "SET = 1",
        "SET x 1",
        "SET x = 'open",
        "SET x = 1 2",
        "SETx = 1",
        "SHOW x = 1",
        "SET x = 'a' b",
        "SET toolongkey = 1",
        "SET x = 123456789",
        "SET x = 'a''",
        "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(console_parse_set(bad[i], key, sizeof(key), value, sizeof(value)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forms_that_parse),
        cmocka_unit_test(test_forms_that_do_not),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for common/units: parsing durations, sizes, percentages; formatting durations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "common/units.h"

static int64_t ms_of(const char *text)
{
    int64_t ms = -12345;
    char err[160] = "";
    assert_true(units_parse_duration_ms(text, &ms, err, sizeof(err)));
    assert_string_equal(err, "");
    return ms;
}

static void bad_duration(const char *text)
{
    int64_t ms = -7;
    char err[160] = "";
    assert_false(units_parse_duration_ms(text, &ms, err, sizeof(err)));
    assert_int_equal(ms, -7); /* untouched on failure */
    assert_true(strlen(err) > 0);
}

static void test_duration_units(void **state)
{
    (void)state;
    assert_int_equal(ms_of("300s"), 300000);
    assert_int_equal(ms_of("5min"), 300000);
    assert_int_equal(ms_of("5m"), 300000);
    assert_int_equal(ms_of("250ms"), 250);
    assert_int_equal(ms_of("1h"), 3600000);
    assert_int_equal(ms_of("2d"), 172800000);
    assert_int_equal(ms_of("30"), 30000); /* bare = seconds */
    assert_int_equal(ms_of("0"), 0);
    assert_int_equal(ms_of("1.5s"), 1500);
    assert_int_equal(ms_of(" 10 s "), 10000);
    assert_int_equal(ms_of("2500us"), 2);
    assert_int_equal(ms_of("500us"), 1); /* never rounds a non-zero duration to 0 */
    assert_int_equal(ms_of("4m 12s"), 252000);
    assert_int_equal(ms_of("1h30min"), 5400000);
    assert_int_equal(ms_of("2 hours"), 7200000);

    int64_t us = 0;
    assert_true(units_parse_duration_us("250us", &us, NULL, 0));
    assert_int_equal(us, 250);
    assert_true(units_parse_duration_us("1.5ms", &us, NULL, 0));
    assert_int_equal(us, 1500);
}

static void test_duration_rejects(void **state)
{
    (void)state;
    bad_duration("5x");
    bad_duration("");
    bad_duration("   ");
    bad_duration(NULL);
    bad_duration("-5s");
    bad_duration("s");
    bad_duration("1e3");
    bad_duration("inf");
    bad_duration("0x10");
    bad_duration("1h 5"); /* a bare number only on its own */
    bad_duration("5 5");
    bad_duration("5MIN"); /* units are case-sensitive, like PostgreSQL */
    bad_duration("99999999999999999999d");
    char err[160];
    int64_t ms;
    assert_false(units_parse_duration_ms("5x", &ms, err, sizeof(err)));
    assert_string_equal(err, "'5x' is not a duration (use 300s, 5min, 250ms)");
}

static void test_size(void **state)
{
    (void)state;
    int64_t b = 0;
    char err[160] = "";
    assert_true(units_parse_size("8kB", &b, err, sizeof(err)));
    assert_int_equal(b, 8192);
    assert_true(units_parse_size("1MB", &b, err, sizeof(err)));
    assert_int_equal(b, 1048576);
    assert_true(units_parse_size("1mb", &b, err, sizeof(err)));
    assert_int_equal(b, 1048576);
    assert_true(units_parse_size("2GB", &b, err, sizeof(err)));
    assert_int_equal(b, 2147483648LL);
    assert_true(units_parse_size("512", &b, err, sizeof(err)));
    assert_int_equal(b, 512);
    assert_true(units_parse_size("1.5 kB", &b, err, sizeof(err)));
    assert_int_equal(b, 1536);
    assert_false(units_parse_size("8kX", &b, err, sizeof(err)));
    assert_non_null(strstr(err, "'8kX' is not a size"));
    assert_false(units_parse_size("-1", &b, err, sizeof(err)));
    assert_false(units_parse_size("1MB extra", &b, err, sizeof(err)));
    assert_false(units_parse_size("", &b, err, sizeof(err)));
}

static void test_percent(void **state)
{
    (void)state;
    double p = -1;
    char err[160] = "";
    assert_true(units_parse_percent("80%", &p, err, sizeof(err)));
    assert_true(p == 80.0);
    assert_true(units_parse_percent("80", &p, err, sizeof(err)));
    assert_true(p == 80.0);
    assert_true(units_parse_percent("12.5 %", &p, err, sizeof(err)));
    assert_true(p == 12.5);
    assert_true(units_parse_percent("0", &p, err, sizeof(err)));
    assert_true(p == 0.0);
    assert_true(units_parse_percent("100%", &p, err, sizeof(err)));
    assert_true(p == 100.0);
    assert_false(units_parse_percent("101%", &p, err, sizeof(err)));
    assert_non_null(strstr(err, "outside 0-100%"));
    assert_false(units_parse_percent("-5%", &p, err, sizeof(err)));
    assert_false(units_parse_percent("80%%", &p, err, sizeof(err)));
    assert_false(units_parse_percent("abc", &p, err, sizeof(err)));
    assert_non_null(strstr(err, "'abc' is not a percentage"));
}

static void test_format_duration(void **state)
{
    (void)state;
    char buf[32];
    assert_string_equal(units_format_duration(350, buf, sizeof(buf)), "350ms");
    assert_string_equal(units_format_duration(0, buf, sizeof(buf)), "0ms");
    assert_string_equal(units_format_duration(42000, buf, sizeof(buf)), "42s");
    assert_string_equal(units_format_duration(42999, buf, sizeof(buf)), "42s");
    assert_string_equal(units_format_duration(252000, buf, sizeof(buf)), "4m 12s");
    assert_string_equal(units_format_duration(300000, buf, sizeof(buf)), "5m");
    assert_string_equal(units_format_duration(7500000, buf, sizeof(buf)), "2h 5m");
    assert_string_equal(units_format_duration(3 * 86400000LL + 4 * 3600000LL, buf, sizeof(buf)),
                        "3d 4h");
    assert_string_equal(units_format_duration(-1500, buf, sizeof(buf)), "-1s");
    assert_string_equal(units_format_duration(INT64_MIN, buf, sizeof(buf)), "-106751991167d 7h");
    char tiny[4];
    assert_string_equal(units_format_duration(252000, tiny, sizeof(tiny)), "4m ");

    /* What it prints parses back to the same whole seconds. */
    int64_t ms;
    assert_true(
        units_parse_duration_ms(units_format_duration(252000, buf, sizeof(buf)), &ms, NULL, 0));
    assert_int_equal(ms, 252000);
}

static void test_format_pg_and_size(void **state)
{
    (void)state;
    char buf[32];
    assert_string_equal(units_format_pg_duration(60000, buf, sizeof(buf)), "1min");
    assert_string_equal(units_format_pg_duration(90000, buf, sizeof(buf)), "90s");
    assert_string_equal(units_format_pg_duration(250, buf, sizeof(buf)), "250ms");
    assert_string_equal(units_format_pg_duration(7200000, buf, sizeof(buf)), "2h");
    assert_string_equal(units_format_pg_duration(0, buf, sizeof(buf)), "0ms");
    assert_string_equal(units_format_size(512, buf, sizeof(buf)), "512 B");
    assert_string_equal(units_format_size(8192, buf, sizeof(buf)), "8 kB");
    assert_string_equal(units_format_size(1572864, buf, sizeof(buf)), "1.5 MB");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duration_units),
        cmocka_unit_test(test_duration_rejects),
        cmocka_unit_test(test_size),
        cmocka_unit_test(test_percent),
        cmocka_unit_test(test_format_duration),
        cmocka_unit_test(test_format_pg_and_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

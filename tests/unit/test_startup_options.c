/* Unit tests for proto/startup_options: libpq's PGOPTIONS as PostgreSQL splits it, the
 * switches PgBouncer accepts, and the refusals. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "proto/startup_options.h"

struct seen {
    char text[512];
    int n;
    int stop_after; /* 0 = never */
};

static bool collect(void *ctx, const char *name, const char *value)
{
    struct seen *s = ctx;
    size_t used = strlen(s->text);
    snprintf(s->text + used, sizeof(s->text) - used, "%s[%s]=[%s]", s->n ? " " : "", name, value);
    return ++s->n != s->stop_after;
}

static enum startup_options_result parse(const char *options, struct seen *s)
{
    char scratch[256];
    memset(s, 0, sizeof(*s));
    return startup_options_parse(options, scratch, sizeof(scratch), collect, s);
}

static void test_settings(void **state)
{
    (void)state;
    struct seen s;
    assert_int_equal(parse("  -c    datestyle=German,\\ YMD", &s), STARTUP_OPTIONS_OK);
    assert_string_equal(s.text, "[datestyle]=[German, YMD]");
    assert_int_equal(parse("-c timezone=Europe/Lisbon  -c    datestyle=German,\\ YMD", &s),
                     STARTUP_OPTIONS_OK);
    assert_string_equal(s.text, "[timezone]=[Europe/Lisbon] [datestyle]=[German, YMD]");
    assert_int_equal(parse("-ctimezone=Europe/Lisbon\t-cdatestyle=ISO", &s), STARTUP_OPTIONS_OK);
    assert_string_equal(s.text, "[timezone]=[Europe/Lisbon] [datestyle]=[ISO]");
    assert_int_equal(parse("--timezone=Europe/Lisbon  --search-path=a\\,b", &s),
                     STARTUP_OPTIONS_OK);
    assert_string_equal(s.text, "[timezone]=[Europe/Lisbon] [search_path]=[a,b]");
    assert_int_equal(
        parse("-c t\\imezone=\\E\\u\\r\\o\\pe/Lisbon  -c dat\\estyle\\=\\Ge\\rman,\\ YMD", &s),
        STARTUP_OPTIONS_OK);
    assert_string_equal(s.text, "[timezone]=[Europe/Lisbon] [datestyle]=[German, YMD]");
    /* Empty values, '=' in a value, an escaped backslash, a lone one at the end (dropped). */
    assert_int_equal(parse("-c a= -c b=x=y -c c=\\\\ -c d=e\\", &s), STARTUP_OPTIONS_OK);
    assert_string_equal(s.text, "[a]=[] [b]=[x=y] [c]=[\\] [d]=[e]");
    assert_int_equal(parse("", &s), STARTUP_OPTIONS_OK);
    assert_int_equal(parse("   ", &s), STARTUP_OPTIONS_OK);
    assert_int_equal(s.n, 0);
}

static void test_refusals(void **state)
{
    (void)state;
    struct seen s;
    const char *bad[] = {"-d",           "-c timezone", "-c",    "-c ",        "-B 100",
                         "timezone=UTC", "--",          "-c =x", "-c a=1 -d 2"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(parse(bad[i], &s), STARTUP_OPTIONS_UNSUPPORTED);
    assert_string_equal(s.text, "[a]=[1]"); /* the settings before the bad switch were read */
    assert_non_null(strstr(startup_options_error(STARTUP_OPTIONS_UNSUPPORTED),
                           "only '-c config=val' and '--config=val' are allowed"));
    /* A word longer than the scratch buffer is refused, never cut. */
    char longer[400] = "-c x=";
    memset(longer + 5, 'v', 300);
    assert_int_equal(parse(longer, &s), STARTUP_OPTIONS_TOO_LONG);
    assert_non_null(startup_options_error(STARTUP_OPTIONS_TOO_LONG));
    /* The callback stops the parse. */
    memset(&s, 0, sizeof(s));
    s.stop_after = 1;
    char scratch[64];
    assert_int_equal(startup_options_parse("-c a=1 -c b=2", scratch, sizeof(scratch), collect, &s),
                     STARTUP_OPTIONS_STOPPED);
    assert_int_equal(s.n, 1);
    assert_int_equal(startup_options_parse("-c a=1", scratch, 0, collect, &s),
                     STARTUP_OPTIONS_TOO_LONG);
}

/* "replication" as PostgreSQL reads it: "database", or a boolean with its prefixes. */
static void test_replication(void **state)
{
    (void)state;
    const struct {
        const char *value;
        enum startup_replication kind;
    } cases[] = {
        {"database", STARTUP_REPLICATION_LOGICAL}, {"true", STARTUP_REPLICATION_PHYSICAL},
        {"yes", STARTUP_REPLICATION_PHYSICAL},     {"On", STARTUP_REPLICATION_PHYSICAL},
        {"1", STARTUP_REPLICATION_PHYSICAL},       {"t", STARTUP_REPLICATION_PHYSICAL},
        {"false", STARTUP_REPLICATION_NONE},       {"off", STARTUP_REPLICATION_NONE},
        {"no", STARTUP_REPLICATION_NONE},          {"0", STARTUP_REPLICATION_NONE},
        {"o", STARTUP_REPLICATION_INVALID},        {"Database", STARTUP_REPLICATION_INVALID},
        {"", STARTUP_REPLICATION_INVALID},         {"truest", STARTUP_REPLICATION_INVALID},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_int_equal(startup_options_replication_parse(cases[i].value), cases[i].kind);
    assert_string_equal(startup_options_replication_value(STARTUP_REPLICATION_LOGICAL), "database");
    assert_string_equal(startup_options_replication_value(STARTUP_REPLICATION_PHYSICAL), "true");
    assert_null(startup_options_replication_value(STARTUP_REPLICATION_NONE));
    assert_string_equal(startup_options_replication_name(STARTUP_REPLICATION_NONE), "none");
    assert_string_equal(startup_options_replication_name(STARTUP_REPLICATION_PHYSICAL), "physical");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_settings),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_replication),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

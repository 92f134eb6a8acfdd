/* Unit tests for proto/sql_effects: which statements of a Query or Parse text set, reset or
 * drop something the pooler follows, and what the tokenizer must not mistake for one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "proto/sql_effects.h"

/* The effects of a text, one line each: "kind tag name=value". */
struct found {
    char text[1024];
    int n;
};

static const char *kind_name(enum sql_effect_kind k)
{
    static const char *const names[] = {"set",         "default",    "other",         "reset_all",
                                        "discard_all", "deallocate", "deallocate_all"};
    return names[k];
}

static void collect(void *ctx, const struct sql_effect *e)
{
    struct found *f = ctx;
    size_t used = strlen(f->text);
    snprintf(f->text + used, sizeof(f->text) - used, "%s%s/%d %s=%.*s", f->n ? "; " : "",
             kind_name(e->kind), (int)e->tag, e->name, (int)e->value_len, e->value ? e->value : "");
    f->n++;
}

static const char *scan(const char *sql, bool backslash_escapes)
{
    static struct found f;
    memset(&f, 0, sizeof(f));
    sql_effects_scan(sql, strlen(sql), backslash_escapes, collect, &f);
    return f.text;
}

static void test_set_forms(void **state)
{
    (void)state;
    assert_string_equal(scan("SET extra_float_digits = 3", false), "set/1 extra_float_digits=3");
    assert_string_equal(scan("set SESSION Extra_Float_Digits TO '3';", false),
                        "set/1 extra_float_digits='3'");
    assert_string_equal(scan("SET search_path = \"My\", public, 'x y'", false),
                        "set/1 search_path=\"My\", public, 'x y'");
    assert_string_equal(scan("SET statement_timeout=-1", false), "set/1 statement_timeout=-1");
    assert_string_equal(scan("SET myapp.Flag TO on", false), "set/1 myapp.flag=on");
    assert_string_equal(scan("SET \"MyApp\".x = 1e-3", false), "set/1 MyApp.x=1e-3");
    assert_string_equal(scan("SET x TO DEFAULT", false), "default/1 x=");
    assert_string_equal(scan("SET x = default", false), "default/1 x=");
    assert_string_equal(scan("SET TIME ZONE LOCAL", false), "default/1 timezone=");
    assert_string_equal(scan("SET TIME ZONE 'UTC'", false), "set/1 timezone='UTC'");
    assert_string_equal(scan("SET x = local", false), "set/1 x=local"); /* a value here */
    assert_string_equal(scan("SET NAMES 'UTF8'", false), "set/1 client_encoding='UTF8'");
    assert_string_equal(scan("SET SCHEMA 'app'", false), "set/1 search_path='app'");
    /* SETs that change nothing followed still answer SET. */
    assert_string_equal(scan("SET LOCAL x = 1", false), "other/1 =");
    assert_string_equal(scan("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", false), "other/1 =");
    assert_string_equal(scan("SET SESSION AUTHORIZATION bob", false), "other/1 =");
    assert_string_equal(scan("SET ROLE bob", false), "other/1 =");
    assert_string_equal(scan("SET x = now()", false), "other/1 x=");
    assert_string_equal(scan("SET x = $1", false), "other/1 x=");
    assert_string_equal(scan("SET x = 1 2", false), "other/1 x=");
    /* ... and SET CONSTRAINTS answers SET CONSTRAINTS. */
    assert_string_equal(scan("SET CONSTRAINTS ALL DEFERRED", false), "");
}

static void test_reset_discard_deallocate(void **state)
{
    (void)state;
    assert_string_equal(scan("RESET ALL", false), "reset_all/2 =");
    assert_string_equal(scan("reset extra_float_digits", false), "default/2 extra_float_digits=");
    assert_string_equal(scan("RESET TIME ZONE", false), "default/2 timezone=");
    assert_string_equal(scan("RESET SESSION AUTHORIZATION", false), "other/2 =");
    assert_string_equal(scan("DISCARD ALL", false), "discard_all/3 =");
    assert_string_equal(scan("DISCARD PLANS", false), "");
    assert_string_equal(scan("DEALLOCATE ALL", false), "deallocate_all/5 =");
    assert_string_equal(scan("DEALLOCATE PREPARE ALL", false), "deallocate_all/5 =");
    assert_string_equal(scan("DEALLOCATE \"S_1\"", false), "deallocate/4 S_1=");
    assert_string_equal(scan("deallocate prepare _pg3_0", false), "deallocate/4 _pg3_0=");
    assert_string_equal(scan("DEALLOCATE prepare", false), "deallocate/4 prepare=");
}

static void test_statements_and_quoting(void **state)
{
    (void)state;
    /* asyncpg's pool reset, one Query. */
    assert_string_equal(scan("SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\n"
                             "RESET ALL;",
                             false),
                        "reset_all/2 =");
    assert_string_equal(scan("SET a = 1; SELECT 1; SET b TO 'x;y'", false),
                        "set/1 a=1; set/1 b='x;y'");
    /* Semicolons and key words inside strings, identifiers and comments are not statements. */
    assert_string_equal(scan("SELECT 'a; SET x = 1'; SELECT \"b;RESET ALL\"", false), "");
    assert_string_equal(scan("SELECT $$; SET x=1; $$; SELECT $t$ $$; RESET ALL $t$", false), "");
    assert_string_equal(
        scan("SELECT 1 -- ; SET x = 1\n; /* ; /* nested; */ SET y = 2 */ SET z=3", false),
        "set/1 z=3");
    assert_string_equal(scan("SELECT E'\\'; SET x = 1'", false), "");
    /* standard_conforming_strings off: a backslash escapes in '' strings too. */
    assert_string_equal(scan("SELECT 'it\\'s; SET x=1;'; SET y = 2", true), "set/1 y=2");
    assert_string_equal(scan("SELECT 'it\\'; SET x=1", false), "set/1 x=1");
    /* A text that ends inside a string or comment: its last statement has no effect. */
    assert_string_equal(scan("SET a = 1; SET b = 'open", false), "set/1 a=1");
    assert_string_equal(scan("SET a = 1; SET b = 2 /* open", false), "set/1 a=1");
    /* Parameters are not dollar quotes. */
    assert_string_equal(scan("SELECT $1; SET x = 1", false), "set/1 x=1");
    assert_string_equal(scan("", false), "");
    assert_string_equal(scan(";;;", false), "");
    assert_string_equal(scan("SELECT 1", false), "");
    /* Names longer than PostgreSQL's are not followed. */
    char longname[200] = "SET ";
    memset(longname + 4, 'n', 100);
    strcpy(longname + 104, " = 1");
    assert_string_equal(scan(longname, false), "other/1 =");
}

static void test_tags(void **state)
{
    (void)state;
    assert_int_equal(sql_effects_tag_of("SET", 4), SQL_TAG_SET);
    assert_int_equal(sql_effects_tag_of("SET", 3), SQL_TAG_SET);
    assert_int_equal(sql_effects_tag_of("RESET", 6), SQL_TAG_RESET);
    assert_int_equal(sql_effects_tag_of("DISCARD ALL", 12), SQL_TAG_DISCARD_ALL);
    assert_int_equal(sql_effects_tag_of("DEALLOCATE", 11), SQL_TAG_DEALLOCATE);
    assert_int_equal(sql_effects_tag_of("DEALLOCATE ALL", 15), SQL_TAG_DEALLOCATE_ALL);
    assert_int_equal(sql_effects_tag_of("SET CONSTRAINTS", 16), SQL_TAG_NONE);
    assert_int_equal(sql_effects_tag_of("SELECT 1", 9), SQL_TAG_NONE);
    assert_int_equal(sql_effects_tag_of("", 0), SQL_TAG_NONE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_forms),
        cmocka_unit_test(test_reset_discard_deallocate),
        cmocka_unit_test(test_statements_and_quoting),
        cmocka_unit_test(test_tags),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

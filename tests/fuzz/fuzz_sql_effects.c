/* libFuzzer target: SQL text a client sends in a Query or Parse (sql_effects_scan), read with
 * standard_conforming_strings on and off (the first input byte chooses). Every effect has a
 * tag that fits its kind and a name where it needs one; a SET's value lies inside the text,
 * and "SET x = <value>" scanned alone gives back the same value (so the text the pooler
 * re-sends for a parameter is exactly what the client's statement said). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/sql_effects.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
    if (!ok)
        __builtin_trap();
}

struct ctx {
    const char *text;
    size_t len;
    bool backslash;
    int n;
};

static void again(void *arg, const struct sql_effect *e)
{
    struct sql_effect *want = arg;
    check(e->kind == SQL_EFFECT_SET && e->value_len == want->value_len &&
          !memcmp(e->value, want->value, want->value_len));
    want->kind = SQL_EFFECT_SET_OTHER; /* seen once */
}

static void effect(void *arg, const struct sql_effect *e)
{
    struct ctx *x = arg;
    x->n++;
    check(strlen(e->name) < SQL_NAME_MAX);
    switch (e->kind) {
    case SQL_EFFECT_SET:
    case SQL_EFFECT_SET_DEFAULT:
        check(e->name[0] != '\0');
        check(e->tag == SQL_TAG_SET ||
              (e->tag == SQL_TAG_RESET && e->kind == SQL_EFFECT_SET_DEFAULT));
        break;
    case SQL_EFFECT_SET_OTHER:
        check(e->tag == SQL_TAG_SET || e->tag == SQL_TAG_RESET);
        break;
    case SQL_EFFECT_RESET_ALL:
        check(e->tag == SQL_TAG_RESET);
        break;
    case SQL_EFFECT_DISCARD_ALL:
        check(e->tag == SQL_TAG_DISCARD_ALL);
        break;
    case SQL_EFFECT_DEALLOCATE:
        check(e->tag == SQL_TAG_DEALLOCATE && e->name[0] != '\0');
        break;
    case SQL_EFFECT_DEALLOCATE_ALL:
        check(e->tag == SQL_TAG_DEALLOCATE_ALL);
        break;
    }
    if (e->kind != SQL_EFFECT_SET) {
        check(e->value == NULL && e->value_len == 0);
        return;
    }
    check(e->value >= x->text && e->value_len > 0 && e->value + e->value_len <= x->text + x->len);
    size_t n = e->value_len + 16;
    char *sql = malloc(n);
    check(sql != NULL);
    memcpy(sql, "SET x = ", 8);
    memcpy(sql + 8, e->value, e->value_len);
    struct sql_effect want = *e;
    sql_effects_scan(sql, 8 + e->value_len, x->backslash, again, &want);
    check(want.kind == SQL_EFFECT_SET_OTHER);
    free(sql);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    struct ctx x = {(const char *)data + 1, size - 1, data[0] & 1, 0};
    sql_effects_scan(x.text, x.len, x.backslash, effect, &x);
    char tag[32];
    size_t t = x.len < sizeof(tag) ? x.len : sizeof(tag);
    memcpy(tag, x.text, t);
    (void)sql_effects_tag_of(tag, t);
    return 0;
}

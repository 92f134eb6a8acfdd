/* Tracked session parameters: names, the interning table and SET generation. The table is
 * process-wide (single-threaded loop); entries die when their last reference goes. */
#include "pool/params.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const NAMES[PARAM_COUNT] = {
    [PARAM_CLIENT_ENCODING] = "client_encoding",
    [PARAM_DATESTYLE] = "DateStyle",
    [PARAM_TIMEZONE] = "TimeZone",
    [PARAM_STANDARD_CONFORMING_STRINGS] = "standard_conforming_strings",
    [PARAM_APPLICATION_NAME] = "application_name",
};

#define TABLE_SIZE 1024
static struct pstr *table[TABLE_SIZE];

int params_lookup(const char *name)
{
    for (int i = 0; i < PARAM_COUNT; i++)
        if (!strcasecmp(NAMES[i], name))
            return i;
    return -1;
}

const char *params_name(enum param_id id)
{
    return NAMES[id];
}

static uint32_t hash_str(const char *s, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= 16777619u;
    }
    return h;
}

struct pstr *pstr_intern(const char *s)
{
    size_t len = strlen(s);
    uint32_t h = hash_str(s, len);
    struct pstr **bucket = &table[h % TABLE_SIZE];
    for (struct pstr *p = *bucket; p; p = p->next) {
        if (p->hash == h && p->len == len && !memcmp(p->str, s, len)) {
            p->refs++;
            return p;
        }
    }
    struct pstr *p = malloc(sizeof(*p) + len + 1);
    if (!p)
        return NULL;
    p->refs = 1;
    p->hash = h;
    p->len = len;
    memcpy(p->str, s, len + 1);
    p->next = *bucket;
    *bucket = p;
    return p;
}

struct pstr *pstr_ref(struct pstr *p)
{
    if (p)
        p->refs++;
    return p;
}

void pstr_unref(struct pstr *p)
{
    if (!p || --p->refs > 0)
        return;
    struct pstr **link = &table[p->hash % TABLE_SIZE];
    while (*link != p)
        link = &(*link)->next;
    *link = p->next;
    free(p);
}

void pstr_set(struct pstr **slot, const char *value)
{
    struct pstr *n = pstr_intern(value);
    if (!n)
        return;
    pstr_unref(*slot);
    *slot = n;
}

/* 'value' as an E'' literal: quotes and backslashes doubled, so the result means the same
 * whatever standard_conforming_strings is. */
static size_t quoted_len(const struct pstr *v)
{
    size_t n = 3; /* E'' */
    for (size_t i = 0; i < v->len; i++)
        n += (v->str[i] == '\'' || v->str[i] == '\\') ? 2 : 1;
    return n;
}

size_t params_set_len(const struct pstr *const want[PARAM_COUNT],
                      const struct pstr *const have[PARAM_COUNT])
{
    size_t n = 1;
    for (int i = 0; i < PARAM_COUNT; i++)
        if (want[i] && want[i] != have[i])
            n += strlen("SET  = ;") + strlen(NAMES[i]) + quoted_len(want[i]);
    return n;
}

int params_build_set(const struct pstr *const want[PARAM_COUNT],
                     const struct pstr *const have[PARAM_COUNT], char *sql, size_t cap)
{
    if (cap < params_set_len(want, have))
        return -1;
    int count = 0;
    size_t pos = 0;
    sql[0] = '\0';
    for (int i = 0; i < PARAM_COUNT; i++) {
        if (!want[i] || want[i] == have[i])
            continue;
        pos += (size_t)sprintf(sql + pos, "SET %s = E'", NAMES[i]);
        for (size_t k = 0; k < want[i]->len; k++) {
            char ch = want[i]->str[k];
            if (ch == '\'' || ch == '\\')
                sql[pos++] = ch;
            sql[pos++] = ch;
        }
        sql[pos++] = '\'';
        sql[pos++] = ';';
        sql[pos] = '\0';
        count++;
    }
    return count;
}

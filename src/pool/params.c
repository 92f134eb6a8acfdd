/* Session parameters: the process-wide slots, the interning table and SET generation. Both
 * tables are process-wide (single-threaded loop); interned values die with their last
 * reference, a slot lives until a new name needs it and nothing holds a value for it any more
 * (params_recycle). */
#include "pool/params.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct slot {
    char name[64]; /* "" while the slot is free (recycled) */
    bool tracked;  /* one of the five, or listed in track_extra_parameters */
    bool seen;     /* a server reported it at login */
};

static struct slot slots[PARAM_COUNT] = {
    [PARAM_CLIENT_ENCODING] = {"client_encoding", true, true},
    [PARAM_DATESTYLE] = {"DateStyle", true, true},
    [PARAM_TIMEZONE] = {"TimeZone", true, true},
    [PARAM_STANDARD_CONFORMING_STRINGS] = {"standard_conforming_strings", true, true},
    [PARAM_APPLICATION_NAME] = {"application_name", true, true},
    [PARAM_FIXED_COUNT] = {"IntervalStyle", true, false}, /* track_extra_parameters' default */
};
static int n_slots = PARAM_FIXED_COUNT + 1;

#define TABLE_SIZE 1024
static struct pstr *table[TABLE_SIZE];

int params_lookup(const char *name)
{
    for (int i = 0; i < n_slots; i++)
        if (slots[i].name[0] && !strcasecmp(slots[i].name, name))
            return i;
    return -1;
}

static bool name_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

bool params_valid_name(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len >= sizeof(slots[0].name))
        return false;
    bool part_start = true;
    for (const char *c = name; *c; c++) {
        if (part_start) {
            if (!name_start(*c))
                return false;
            part_start = false;
        } else if (*c == '.') {
            part_start = true;
        } else if (!name_start(*c) && !(*c >= '0' && *c <= '9') && *c != '$') {
            return false;
        }
    }
    return !part_start;
}

int params_register(const char *name)
{
    int id = params_lookup(name);
    if (id >= 0)
        return id;
    if (!params_valid_name(name))
        return -1;
    /* A recycled slot first, so that the slots in use stay within the first n_slots. */
    for (id = PARAM_FIXED_COUNT; id < n_slots && slots[id].name[0]; id++)
        ;
    if (id == PARAM_COUNT)
        return -1;
    struct slot *s = &slots[id];
    memset(s, 0, sizeof(*s));
    memcpy(s->name, name, strlen(name) + 1);
    if (id == n_slots)
        n_slots++;
    return id;
}

int params_recycle(const bool in_use[PARAM_COUNT])
{
    int freed = 0;
    for (int i = PARAM_FIXED_COUNT; i < n_slots; i++) {
        if (!slots[i].name[0] || slots[i].tracked || in_use[i])
            continue;
        memset(&slots[i], 0, sizeof(slots[i]));
        freed++;
    }
    return freed;
}

const char *params_name(int id)
{
    return id >= 0 && id < n_slots ? slots[id].name : "";
}

bool params_reported(int id)
{
    return id >= 0 && id < n_slots && (slots[id].tracked || slots[id].seen);
}

void params_mark_reported(int id)
{
    if (id >= 0 && id < n_slots)
        slots[id].seen = true;
}

bool params_tracked(int id)
{
    return id >= 0 && id < n_slots && slots[id].tracked;
}

void params_track_extra(const char *list)
{
    for (int i = PARAM_FIXED_COUNT; i < n_slots; i++)
        slots[i].tracked = false;
    const char *p = list ? list : "";
    while (*p) {
        p += strspn(p, ", \t");
        size_t n = strcspn(p, ", \t");
        char name[sizeof(slots[0].name)];
        if (n > 0 && n < sizeof(name)) {
            memcpy(name, p, n);
            name[n] = '\0';
            int id = params_register(name);
            if (id >= 0)
                slots[id].tracked = true;
        }
        p += n;
    }
}

static uint32_t hash_str(const char *s, size_t len, bool sql)
{
    uint32_t h = sql ? 0x811c9dc5u ^ 0x5a : 2166136261u; /* FNV-1a; SQL text hashes apart */
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= 16777619u;
    }
    return h;
}

static struct pstr *intern(const char *s, size_t len, bool sql)
{
    uint32_t h = hash_str(s, len, sql);
    struct pstr **bucket = &table[h % TABLE_SIZE];
    for (struct pstr *p = *bucket; p; p = p->next) {
        if (p->hash == h && p->sql == sql && p->len == len && !memcmp(p->str, s, len)) {
            p->refs++;
            return p;
        }
    }
    struct pstr *p = malloc(sizeof(*p) + len + 1);
    if (!p)
        return NULL;
    p->refs = 1;
    p->hash = h;
    p->sql = sql;
    p->len = len;
    memcpy(p->str, s, len);
    p->str[len] = '\0';
    p->next = *bucket;
    *bucket = p;
    return p;
}

struct pstr *params_intern(const char *s)
{
    return intern(s, strlen(s), false);
}

struct pstr *params_intern_sql(const char *s, size_t len)
{
    return intern(s, len, true);
}

struct pstr *params_ref(struct pstr *p)
{
    if (p)
        p->refs++;
    return p;
}

void params_unref(struct pstr *p)
{
    if (!p || --p->refs > 0)
        return;
    struct pstr **link = &table[p->hash % TABLE_SIZE];
    while (*link != p)
        link = &(*link)->next;
    *link = p->next;
    free(p);
}

void params_set(struct pstr **slot, const char *value)
{
    struct pstr *n = params_intern(value);
    if (!n)
        return;
    params_unref(*slot);
    *slot = n;
}

void params_assign(struct pstr **slot, struct pstr *value)
{
    if (*slot == value)
        return;
    params_unref(*slot);
    *slot = params_ref(value);
}

/* A value as SQL: the text of an SQL value as it is; a string as a literal, '' quoted, or E''
 * with backslashes doubled too when it has one, so that it means the same whatever
 * standard_conforming_strings is. */
static size_t value_len(const struct pstr *v)
{
    if (v->sql)
        return v->len;
    bool backslash = memchr(v->str, '\\', v->len) != NULL;
    size_t n = backslash ? 3 : 2;
    for (size_t i = 0; i < v->len; i++)
        n += (v->str[i] == '\'' || (backslash && v->str[i] == '\\')) ? 2 : 1;
    return n;
}

static size_t put_value(char *out, const struct pstr *v)
{
    if (v->sql) {
        memcpy(out, v->str, v->len);
        return v->len;
    }
    bool backslash = memchr(v->str, '\\', v->len) != NULL;
    size_t n = 0;
    if (backslash)
        out[n++] = 'E';
    out[n++] = '\'';
    for (size_t i = 0; i < v->len; i++) {
        char ch = v->str[i];
        if (ch == '\'' || (backslash && ch == '\\'))
            out[n++] = ch;
        out[n++] = ch;
    }
    out[n++] = '\'';
    return n;
}

size_t params_set_len(const struct pstr *const want[PARAM_COUNT],
                      const struct pstr *const have[PARAM_COUNT])
{
    size_t n = 1;
    for (int i = 0; i < n_slots; i++) {
        if (want[i] == have[i])
            continue;
        if (want[i])
            n += strlen("SET =;") + strlen(slots[i].name) + value_len(want[i]);
        else
            n += strlen("RESET ;") + strlen(slots[i].name);
    }
    return n;
}

int params_build_set(const struct pstr *const want[PARAM_COUNT],
                     const struct pstr *const have[PARAM_COUNT], char *sql, size_t cap)
{
    if (cap < params_set_len(want, have))
        return -1;
    int count = 0;
    size_t pos = 0;
    for (int i = 0; i < n_slots; i++) {
        if (want[i] == have[i])
            continue;
        if (want[i]) {
            pos += (size_t)sprintf(sql + pos, "SET %s=", slots[i].name);
            pos += put_value(sql + pos, want[i]);
            sql[pos++] = ';';
        } else {
            pos += (size_t)sprintf(sql + pos, "RESET %s;", slots[i].name);
        }
        count++;
    }
    sql[pos] = '\0';
    return count;
}

/* Session parameters the pooler keeps in step between a client and whichever server it is
 * given (PgBouncer's varcache). Values are interned, so "does the server already have the
 * client's value" is a pointer comparison and a client costs one pointer per parameter. */
#ifndef PGWARDEN_POOL_PARAMS_H
#define PGWARDEN_POOL_PARAMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/wire.h"

enum param_id {
    PARAM_CLIENT_ENCODING,
    PARAM_DATESTYLE,
    PARAM_TIMEZONE,
    PARAM_STANDARD_CONFORMING_STRINGS,
    PARAM_APPLICATION_NAME,
    PARAM_COUNT,
};

/* An interned, reference-counted string. */
struct pstr {
    struct pstr *next; /* borrowed: hash chain */
    uint32_t refs;
    uint32_t hash;
    size_t len;
    char str[];
};

/* The parameter's index for a name (case-insensitive, as GUC names are), or -1. */
int params_lookup(const char *name);
const char *params_name(enum param_id id);

/* Interned copy with one reference taken (NULL on out of memory); release with pstr_unref. */
struct pstr *pstr_intern(const char *s);
struct pstr *pstr_ref(struct pstr *p);
void pstr_unref(struct pstr *p);
/* Replaces *slot with an interned value (keeps the old one on out of memory). */
void pstr_set(struct pstr **slot, const char *value);

/* Appends to sql "SET name = 'value';" for every parameter where want differs from have
 * (want NULL = no preference). Returns how many were added, or -1 when sql is too small. */
int params_build_set(const struct pstr *const want[PARAM_COUNT],
                     const struct pstr *const have[PARAM_COUNT], char *sql, size_t cap);
/* Length needed for params_build_set's output (with NUL). */
size_t params_set_len(const struct pstr *const want[PARAM_COUNT],
                      const struct pstr *const have[PARAM_COUNT]);

#endif

/* Session parameters the pooler keeps in step between a client and whichever server it is
 * given (PgBouncer's varcache). Values are interned, so "does the server already have the
 * client's value" is a pointer comparison and a client costs one pointer per parameter.
 *
 * Parameters have process-wide slots: the five PgBouncer tracks have fixed ones; the names of
 * track_extra_parameters and of any parameter a client sends at startup (or in "options") get
 * the next free slot; a client's name keeps it until no value refers to it any more and a new
 * name needs the room (params_recycle). A parameter the server reports
 * (ParameterStatus: the five, track_extra_parameters, and any name in a server's login
 * report) is followed through the server's reports; for the others the pooler knows what it
 * set itself and what the client's own SET statements set (client.c). */
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
    PARAM_FIXED_COUNT,
};

/* Slots in all: the arrays of values per client, server and pool have this many entries. */
#define PARAM_COUNT 24

/* An interned, reference-counted string. sql: the text is an SQL value list to be sent as it
 * is (what a client's own SET said), not a string to be quoted. */
struct pstr {
    struct pstr *next; /* borrowed: hash chain */
    uint32_t refs;
    uint32_t hash;
    bool sql;
    size_t len;
    char str[];
};

/* The slot of a name (case-insensitive, as GUC names are), or -1 when it has none. */
int params_lookup(const char *name);
/* The slot of a name, given one when it has none yet. -1 when the name is not a parameter
 * name (letters, digits, '_' and '$', parts joined by '.', at most 63 bytes) or every slot is
 * taken. */
int params_register(const char *name);
/* Frees the slots that are not tracked and that nothing holds a value for (in_use false: no
 * client, server, pool or pending statement of any client names the slot), so that a new name
 * can take one; returns how many. Called when a new name finds every slot taken: names that
 * clients brought and left behind must not keep other clients' names out for good. Only a
 * slot no value refers to may go to another name, or a server would keep a value the pooler
 * no longer knows of (and never RESET it for the next client). */
int params_recycle(const bool in_use[PARAM_COUNT]);
bool params_valid_name(const char *name);
const char *params_name(int id);
/* The server reports the parameter's changes (ParameterStatus). */
bool params_reported(int id);
void params_mark_reported(int id);
/* One of the five, or named in track_extra_parameters: a client's value is always used, even
 * when ignore_startup_parameters lists the name. */
bool params_tracked(int id);
/* Makes the comma-separated names of track_extra_parameters tracked (and reported); names no
 * longer listed keep their slots but are tracked no more. Starts as "IntervalStyle". */
void params_track_extra(const char *list);

/* Interned copy with one reference taken (NULL on out of memory); release with params_unref. */
struct pstr *params_intern(const char *s);
/* The same for SQL text of len bytes (an SQL value list). */
struct pstr *params_intern_sql(const char *s, size_t len);
struct pstr *params_ref(struct pstr *p);
void params_unref(struct pstr *p);
/* Replaces *slot with an interned value (keeps the old one on out of memory). */
void params_set(struct pstr **slot, const char *value);
/* Replaces *slot with another reference (NULL allowed). */
void params_assign(struct pstr **slot, struct pstr *value);

/* Appends to sql what takes a session from have to want: "SET name='value';" where want has a
 * value that differs from have, "RESET name;" where want has none and have has one. Returns
 * how many statements were added, or -1 when sql is too small. */
int params_build_set(const struct pstr *const want[PARAM_COUNT],
                     const struct pstr *const have[PARAM_COUNT], char *sql, size_t cap);
/* Length needed for params_build_set's output (with NUL). */
size_t params_set_len(const struct pstr *const want[PARAM_COUNT],
                      const struct pstr *const have[PARAM_COUNT]);

#endif

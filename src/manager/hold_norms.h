/* What each application usually holds a server for: a running estimate of the mean server
 * hold per transaction, per application_name, learned from successive serve-mode snapshots.
 * detect-leaks compares a client's current hold with its application's usual one (a client
 * idle in a transaction for 2 s is ordinary for a batch job and a leak for an app whose
 * transactions take 5 ms). Pure: fed snapshots, no I/O. Bounded: at most HOLD_NORMS_MAX
 * applications (client-chosen names), the least recently seen is forgotten first. */
#ifndef PGWARDEN_MANAGER_HOLD_NORMS_H
#define PGWARDEN_MANAGER_HOLD_NORMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "manager/snapshot.h"

#define HOLD_NORMS_MAX 1024
/* Each observation keeps this share of the history: about 20 runs of memory at one run a
 * second, so a changed workload is learned within half a minute. */
#define HOLD_NORMS_DECAY 0.95
/* An estimate is trusted after this many (decayed) transactions. */
#define HOLD_NORMS_MIN_XACTS 20.0

struct hold_norm {
    char application[SNAPSHOT_NAME_LEN];
    double hold_ms;  /* decayed sum of hold time */
    double xacts;    /* decayed count of transactions */
    int64_t seen_ms; /* last observation that had transactions of this application */
};

struct hold_norms {
    struct hold_norm *norms; /* owned, sorted by application */
    size_t n, cap;
};

void hold_norms_init(struct hold_norms *hn);
void hold_norms_free(struct hold_norms *hn);

/* Learns from the transactions finished between prev and cur: per record, the growth of
 * `requests` and `hold_total_ms` since the same connection (id and connect time) in prev, or
 * all of them for a connection new in cur. prev may be NULL (everything is new). False when
 * memory ran out (the estimates are then unchanged). */
bool hold_norms_observe(struct hold_norms *hn, const struct snapshot *prev,
                        const struct snapshot *cur) __attribute__((warn_unused_result));

/* The application's usual hold per transaction in milliseconds (at least 1 when known), or
 * 0 while it has fewer than HOLD_NORMS_MIN_XACTS transactions behind it. */
int64_t hold_norms_usual_ms(const struct hold_norms *hn, const char *application);

/* Sets every record's app_usual_hold_ms from the estimates. */
void hold_norms_annotate(const struct hold_norms *hn, struct snapshot *snap);

#endif

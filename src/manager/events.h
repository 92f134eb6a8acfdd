/* The event log: one record per manager decision or action (what, why, the numbers before
 * and after), kept in a bounded ring so the newest events are always at hand for SHOW EVENTS
 * and the API while memory stays fixed. Pure data; the live manager fills it and writes each
 * event to the log as well. */
#ifndef PGWARDEN_MANAGER_EVENTS_H
#define PGWARDEN_MANAGER_EVENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "manager/snapshot.h"

enum event_kind {
    EVENT_LEAK_SUSPECTED,     /* a client became a leak suspect */
    EVENT_LEAK_CLEARED,       /* a suspect is no longer one (it moved on or left) */
    EVENT_RECLAIM_NOTICE,     /* the suspect was sent a notice */
    EVENT_RECLAIM_CANCEL,     /* its running query was cancelled */
    EVENT_RECLAIM_ROLLBACK,   /* its transaction was rolled back and its server reclaimed */
    EVENT_RECLAIM_DISCONNECT, /* it was disconnected */
    EVENT_SCALE_GROW,         /* a pool's size was raised */
    EVENT_SCALE_SHRINK,       /* a pool's size was lowered */
    EVENT_SCALE_RECOMMEND,    /* auto_scaling = off: a resize the manager would have made */
    EVENT_HEALTH_CHANGED,     /* a pool's health status changed (before/after: report_status) */
    EVENT_KILL_IDLE,          /* kill-idle disconnected a client (before: idle seconds) */
    EVENT_KILL_IDLE_PLANNED,  /* a dry run of kill-idle would have */
    EVENT_KIND_COUNT,
};

#define EVENT_REASON_LEN 256

struct event {
    uint64_t seq;  /* 1, 2, ... in the order recorded */
    int64_t at_ms; /* wall clock, ms since the epoch */
    enum event_kind kind;
    char database[SNAPSHOT_NAME_LEN];
    char user[SNAPSHOT_NAME_LEN];
    char application[SNAPSHOT_NAME_LEN];
    char client_addr[SNAPSHOT_ADDR_LEN];
    int64_t client_id; /* 0 when the event is about a pool, not a client */
    int32_t pid;       /* server backend pid, 0 when none */
    int64_t before;    /* the number the decision moved (a score, a size), or 0 */
    int64_t after;
    char reason[EVENT_REASON_LEN];
};

struct event_ring {
    struct event *e; /* owned: cap slots */
    size_t cap;
    size_t n;     /* events held, at most cap */
    size_t first; /* slot of the oldest */
    uint64_t next_seq;
};

#define EVENT_RING_DEFAULT_CAP 1000

bool events_ring_init(struct event_ring *r, size_t cap);
void events_ring_free(struct event_ring *r);
/* A new zeroed event with its seq, kind and time set, overwriting the oldest when full. */
struct event *events_ring_push(struct event_ring *r, enum event_kind kind, int64_t at_ms);
/* The i-th event held, oldest first (i < r->n). */
const struct event *events_ring_at(const struct event_ring *r, size_t i);
/* Fills pool and client identity from a snapshot record. */
void events_set_conn(struct event *e, const struct conn_record *rec);

/* A client's identity as events name it, kept by a caller that reports on the client after
 * the snapshot its record was in is gone (a suspect cleared once it disconnected). */
struct event_subject {
    char database[SNAPSHOT_NAME_LEN];
    char user[SNAPSHOT_NAME_LEN];
    char application[SNAPSHOT_NAME_LEN];
    char client_addr[SNAPSHOT_ADDR_LEN];
    int64_t client_id;
    int32_t pid;
};
void events_subject_from_conn(struct event_subject *s, const struct conn_record *rec);
void events_set_subject(struct event *e, const struct event_subject *s);
/* Copies text into the reason, cut at EVENT_REASON_LEN - 1 bytes. */
void events_set_reason(struct event *e, const char *text);
const char *events_kind_name(enum event_kind kind);

#endif

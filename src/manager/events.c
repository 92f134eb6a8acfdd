/* Bounded ring of manager events. */
#include "manager/events.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const KIND_NAMES[EVENT_KIND_COUNT] = {
    [EVENT_LEAK_SUSPECTED] = "leak_suspected",
    [EVENT_LEAK_CLEARED] = "leak_cleared",
    [EVENT_RECLAIM_NOTICE] = "reclaim_notice",
    [EVENT_RECLAIM_CANCEL] = "reclaim_cancel",
    [EVENT_RECLAIM_ROLLBACK] = "reclaim_rollback",
    [EVENT_RECLAIM_DISCONNECT] = "reclaim_disconnect",
    [EVENT_SCALE_GROW] = "scale_grow",
    [EVENT_SCALE_SHRINK] = "scale_shrink",
    [EVENT_SCALE_RECOMMEND] = "scale_recommend",
    [EVENT_HEALTH_CHANGED] = "health_changed",
    [EVENT_KILL_IDLE] = "kill_idle",
    [EVENT_KILL_IDLE_PLANNED] = "kill_idle_planned",
};

const char *events_kind_name(enum event_kind kind)
{
    return (unsigned)kind < EVENT_KIND_COUNT ? KIND_NAMES[kind] : "unknown";
}

bool events_ring_init(struct event_ring *r, size_t cap)
{
    memset(r, 0, sizeof(*r));
    r->e = calloc(cap ? cap : 1, sizeof(*r->e));
    r->cap = cap ? cap : 1;
    r->next_seq = 1;
    return r->e != NULL;
}

void events_ring_free(struct event_ring *r)
{
    free(r->e);
    memset(r, 0, sizeof(*r));
}

struct event *events_ring_push(struct event_ring *r, enum event_kind kind, int64_t at_ms)
{
    size_t slot;
    if (r->n < r->cap) {
        slot = (r->first + r->n) % r->cap;
        r->n++;
    } else {
        slot = r->first;
        r->first = (r->first + 1) % r->cap;
    }
    struct event *e = &r->e[slot];
    memset(e, 0, sizeof(*e));
    e->seq = r->next_seq++;
    e->at_ms = at_ms;
    e->kind = kind;
    return e;
}

const struct event *events_ring_at(const struct event_ring *r, size_t i)
{
    return i < r->n ? &r->e[(r->first + i) % r->cap] : NULL;
}

void events_subject_from_conn(struct event_subject *s, const struct conn_record *rec)
{
    snprintf(s->database, sizeof(s->database), "%s", rec->database);
    snprintf(s->user, sizeof(s->user), "%s", rec->user);
    snprintf(s->application, sizeof(s->application), "%s", rec->application);
    snprintf(s->client_addr, sizeof(s->client_addr), "%s", rec->client_addr);
    s->client_id = rec->id;
    s->pid = rec->pid;
}

void events_set_subject(struct event *e, const struct event_subject *s)
{
    memcpy(e->database, s->database, sizeof(e->database));
    memcpy(e->user, s->user, sizeof(e->user));
    memcpy(e->application, s->application, sizeof(e->application));
    memcpy(e->client_addr, s->client_addr, sizeof(e->client_addr));
    e->client_id = s->client_id;
    e->pid = s->pid;
}

void events_set_conn(struct event *e, const struct conn_record *rec)
{
    struct event_subject s;
    events_subject_from_conn(&s, rec);
    events_set_subject(e, &s);
}

void events_set_reason(struct event *e, const char *text)
{
    size_t n = strlen(text);
    if (n >= sizeof(e->reason))
        n = sizeof(e->reason) - 1;
    memcpy(e->reason, text, n);
    e->reason[n] = '\0';
}

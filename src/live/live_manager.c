/* The live manager's periodic run: snapshot → detect-leaks → events and reclaim steps. */
#include "live/live_manager.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "manager/autoscale.h"
#include "manager/health.h"
#include "manager/hold_norms.h"
#include "manager/reaper.h"
#include "live/pool_executor.h"
#include "live/pool_source.h"
#include "net/loop.h"
#include "pool/objects.h"

/* What the manager remembers about a client that was a suspect, for as long as the client is
 * connected: one that leaks again after a reclaim step continues from that step. */
struct suspect_track {
    int64_t client_id;
    struct reclaim_track reclaim;
    bool suspected;           /* a suspect in the latest run */
    bool seen;                /* a suspect in the current run */
    struct event_subject who; /* as it was last suspected: its leak_cleared event names it */
};

/* A client a kill-idle dry run planned, and since when it had been idle. A dry run is a read
 * that anyone allowed to read may repeat in a loop: recording (and logging) every planned
 * client at every run let such a loop push every other event out of the ring and write the
 * log full, so a client is recorded once per idle period. */
struct planned_mark {
    int64_t client_id;
    int64_t since_ms; /* its record's state_change_ms */
};

/* What the manager keeps about one pool between runs: auto-scaling and health. */
struct pool_watch {
    const struct pool *pool; /* borrowed: forgotten before the pool is freed */
    struct autoscale_state state;
    struct snapshot_counters prev; /* counters at the previous decision (rates) */
    int64_t prev_ms;               /* 0 = no previous decision */
    struct scaling_decision last;
    int lo, hi;                  /* bounds of the last decision */
    char hold[160];              /* what held the last decision back, or that it went ahead */
    struct health_report health; /* summary of the pool's recent probes */
    bool have_health;
    /* The last recommendation a dry run recorded: AUTO_SCALE DRY RUN is a read any stats
     * user may repeat in a loop, and recording the same recommendation at every call let
     * such a loop push every other event out of the ring and write the log full. */
    int dry_before, dry_after; /* sizes; dry_after 0 = none recorded */
};

struct live_manager {
    struct pooler *pooler; /* borrowed */
    struct net_timer *timer;
    struct snapshot prev, cur; /* owned; prev gives growth between runs */
    /* owned: a requested kill-idle's own look at the pools, outside the prev/cur rotation so
     * that a request never shortens the periodic run's window; its plan points into it, and
     * it is emptied at the next periodic run (callers render the plan at once). */
    struct snapshot look;
    struct hold_norms norms; /* what each application usually holds a server for */
    bool have_cur;
    struct leak_report leaks; /* owned; suspects point into cur */
    bool have_leaks;
    struct suspect_track *tracks; /* owned */
    size_t n_tracks, cap_tracks;
    size_t n_tracks_sorted; /* tracks[0..n_tracks_sorted) are in client_id order */
    struct event_ring events;
    struct pool_watch *watch; /* owned */
    size_t n_watch, cap_watch;
    int64_t last_scaling_ms;
    bool scaling_was_on; /* auto_scaling at the last run: turning it off undoes its sizes */
    int64_t last_probe_ms;
    struct planned_mark *planned; /* owned: the last dry run's, sorted by client id */
    size_t n_planned;
};

static void run_cb(void *arg)
{
    live_manager_run(arg);
}

struct live_manager *live_manager_new(struct pooler *p)
{
    struct live_manager *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->pooler = p;
    snapshot_init(&m->prev, SNAPSHOT_MODE_SERVE, 0);
    snapshot_init(&m->cur, SNAPSHOT_MODE_SERVE, 0);
    snapshot_init(&m->look, SNAPSHOT_MODE_SERVE, 0);
    hold_norms_init(&m->norms);
    if (!events_ring_init(&m->events, EVENT_RING_DEFAULT_CAP) ||
        !(m->timer = net_timer_new(p->loop, run_cb, m))) {
        live_manager_free(m);
        return NULL;
    }
    net_timer_start(m->timer, LIVE_MANAGER_PERIOD_MS, true);
    return m;
}

void live_manager_free(struct live_manager *m)
{
    if (!m)
        return;
    if (m->timer)
        net_timer_free(m->timer);
    if (m->have_leaks)
        leaks_report_free(&m->leaks);
    snapshot_free(&m->prev);
    snapshot_free(&m->cur);
    snapshot_free(&m->look);
    hold_norms_free(&m->norms);
    events_ring_free(&m->events);
    free(m->tracks);
    free(m->watch);
    free(m->planned);
    free(m);
}

void live_manager_forget_pool(struct live_manager *m, const struct pool *pool)
{
    /* The order is kept: the watches follow the pool list, so that a run finds each pool's
     * at its own position (watch_for) instead of searching for it. */
    for (size_t i = 0; m && i < m->n_watch; i++) {
        if (m->watch[i].pool == pool) {
            memmove(&m->watch[i], &m->watch[i + 1], (m->n_watch - i - 1) * sizeof(*m->watch));
            m->n_watch--;
            return;
        }
    }
}

/* Room for one more element in a growable array of n elements; false on out of memory. */
static bool make_room(void **array, size_t n, size_t *cap, size_t elem_size)
{
    if (n < *cap)
        return true;
    size_t grown = *cap ? *cap * 2 : 16;
    void *p = realloc(*array, grown * elem_size);
    if (!p)
        return false;
    *array = p;
    *cap = grown;
    return true;
}

static int compare_track_ids(const void *a, const void *b)
{
    int64_t x = ((const struct suspect_track *)a)->client_id;
    int64_t y = ((const struct suspect_track *)b)->client_id;
    return (x > y) - (x < y);
}

static int compare_ids(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The client's track, or NULL. The tracks kept from earlier runs are sorted (a search per
 * suspect over every track made a run quadratic in the suspects); only the ones this run
 * added are searched one by one. */
static struct suspect_track *find_track(const struct live_manager *m, int64_t client_id)
{
    struct suspect_track key = {.client_id = client_id};
    struct suspect_track *found =
        m->n_tracks_sorted == 0
            ? NULL /* tracks may be NULL: never given to bsearch */
            : bsearch(&key, m->tracks, m->n_tracks_sorted, sizeof(*m->tracks), compare_track_ids);
    for (size_t i = m->n_tracks_sorted; !found && i < m->n_tracks; i++)
        if (m->tracks[i].client_id == client_id)
            found = &m->tracks[i];
    return found;
}

static struct suspect_track *track_for(struct live_manager *m, int64_t client_id)
{
    struct suspect_track *found = find_track(m, client_id);
    if (found)
        return found;
    if (!make_room((void **)&m->tracks, m->n_tracks, &m->cap_tracks, sizeof(*m->tracks)))
        return NULL;
    struct suspect_track *t = &m->tracks[m->n_tracks++];
    memset(t, 0, sizeof(*t));
    t->client_id = client_id;
    return t;
}

/* Records an event about a client and writes it to the log. */
static struct event *record(struct live_manager *m, enum event_kind kind,
                            const struct conn_record *rec, const char *reason)
{
    struct event *e = events_ring_push(&m->events, kind, m->cur.taken_ms);
    events_set_conn(e, rec);
    events_set_reason(e, reason);
    log_warning("manager", "%s: client %lld %s%s%s/%s app '%s' backend pid %d: %s",
                events_kind_name(kind), (long long)rec->id, rec->client_addr,
                rec->client_addr[0] ? " " : "", rec->database, rec->user, rec->application,
                (int)rec->pid, reason);
    return e;
}

/* Records an event about a pool (the caller fills the numbers and the reason and logs it). */
static struct event *record_pool(struct live_manager *m, enum event_kind kind,
                                 const struct pool *pool, int64_t now_ms)
{
    struct event *e = events_ring_push(&m->events, kind, now_ms);
    snprintf(e->database, sizeof(e->database), "%s", pool->db_name);
    snprintf(e->user, sizeof(e->user), "%s", pool->user_name);
    return e;
}

static const enum event_kind STEP_EVENTS[RECLAIM_LEVEL_COUNT] = {
    [RECLAIM_NOTICE] = EVENT_RECLAIM_NOTICE,
    [RECLAIM_CANCEL] = EVENT_RECLAIM_CANCEL,
    [RECLAIM_ROLLBACK] = EVENT_RECLAIM_ROLLBACK,
    [RECLAIM_DISCONNECT] = EVENT_RECLAIM_DISCONNECT,
};

/* New suspects are announced once; allowed reclaim steps are taken, a few per run. */
static void act_on_suspects(struct live_manager *m)
{
    const struct manager_options *opts = &m->pooler->cfg->manager;
    int64_t gap = reclaim_step_gap_ms(opts->leak_hold_threshold_ms);
    int steps = 0;
    for (size_t i = 0; i < m->n_tracks; i++)
        m->tracks[i].seen = false;
    for (size_t i = 0; i < m->leaks.total_suspected; i++) {
        const struct leak_suspect *s = &m->leaks.suspects[i];
        struct suspect_track *t = track_for(m, s->conn->id);
        if (!t)
            return;
        t->seen = true;
        events_subject_from_conn(&t->who, s->conn);
        const char *why = s->n_reasons ? s->reasons[0] : "leak suspect";
        if (!t->suspected) {
            t->suspected = true;
            char reason[EVENT_REASON_LEN + 32];
            snprintf(reason, sizeof(reason), "score %d: %s", s->score, why);
            record(m, EVENT_LEAK_SUSPECTED, s->conn, reason)->after = s->score;
        }
        if (steps >= RECLAIM_MAX_PER_RUN)
            continue;
        enum reclaim_level step = reclaim_next_step(reclaim_allowed(opts, s->conn), &t->reclaim,
                                                    s->conn->state, m->cur.taken_ms, gap);
        if (step == RECLAIM_OFF)
            continue;
        steps++;
        char outcome[128];
        bool done =
            pool_executor_reclaim(m->pooler, s->conn->id, step, why, outcome, sizeof(outcome));
        char reason[EVENT_REASON_LEN + 256];
        snprintf(reason, sizeof(reason), "leak_reclaim = %s, score %d (%s): %s",
                 reclaim_level_name(opts->leak_reclaim), s->score, why, outcome);
        struct event *e = record(m, STEP_EVENTS[step], s->conn, reason);
        e->before = t->reclaim.done;
        if (done) {
            t->reclaim.done = step;
            t->reclaim.last_ms = m->cur.taken_ms;
        }
        e->after = t->reclaim.done;
    }
    /* Suspects no longer suspect are announced; clients gone are forgotten. Whether a
     * track's client is still connected is looked up in the run's client ids, sorted once
     * (a walk over every client per track made the run quadratic). */
    int64_t *ids = NULL;
    if (m->n_tracks > 0 && m->cur.n_conns > 0 && (ids = malloc(m->cur.n_conns * sizeof(*ids)))) {
        for (size_t j = 0; j < m->cur.n_conns; j++)
            ids[j] = m->cur.conns[j].id;
        qsort(ids, m->cur.n_conns, sizeof(*ids), compare_ids);
    }
    size_t kept = 0;
    for (size_t i = 0; i < m->n_tracks; i++) {
        struct suspect_track *t = &m->tracks[i];
        bool connected = t->seen;
        if (!connected && ids)
            connected = bsearch(&t->client_id, ids, m->cur.n_conns, sizeof(*ids), compare_ids);
        else if (!connected && m->cur.n_conns > 0)
            connected = true; /* out of memory: kept until a later run can tell */
        if (t->suspected && !t->seen) {
            t->suspected = false;
            struct event *e = events_ring_push(&m->events, EVENT_LEAK_CLEARED, m->cur.taken_ms);
            events_set_subject(e, &t->who);
            snprintf(e->reason, sizeof(e->reason), "no longer a suspect (%s)",
                     connected ? "active again" : "disconnected");
            log_info("manager", "leak_cleared: client %lld %s%s%s/%s app '%s': %s",
                     (long long)e->client_id, e->client_addr, e->client_addr[0] ? " " : "",
                     e->database, e->user, e->application, e->reason);
        }
        if (connected)
            m->tracks[kept++] = *t;
    }
    free(ids);
    m->n_tracks = kept;
    if (m->n_tracks > 1)
        qsort(m->tracks, m->n_tracks, sizeof(*m->tracks), compare_track_ids);
    m->n_tracks_sorted = m->n_tracks;
}

/* The watch of pool, the one at position hint (the pool's in the pool list) first: a search
 * for every pool at every run made the run quadratic in the pools, which clients choosing
 * database names (auto-databases) can multiply. */
static struct pool_watch *watch_for(struct live_manager *m, const struct pool *pool, size_t hint)
{
    if (hint < m->n_watch && m->watch[hint].pool == pool)
        return &m->watch[hint];
    for (size_t i = 0; i < m->n_watch; i++)
        if (m->watch[i].pool == pool)
            return &m->watch[i];
    if (!make_room((void **)&m->watch, m->n_watch, &m->cap_watch, sizeof(*m->watch)))
        return NULL;
    struct pool_watch *g = &m->watch[m->n_watch++];
    memset(g, 0, sizeof(*g));
    g->pool = pool;
    return g;
}

/* One auto-scaling decision for a pool: the engine's target within the pool's bounds, held
 * back by hysteresis and cooldown, applied when auto_scaling is on. */
/* How a scaling decision is taken: by the periodic run (hysteresis, cooldown, auto_scaling),
 * or on request (AUTO_SCALE on the console: applied at once, or only shown). */
enum scale_mode {
    SCALE_PERIODIC,
    SCALE_NOW,
    SCALE_DRY_RUN,
};

static bool same_pool(const struct pool_record *r, const struct pool *pool)
{
    return !strcmp(r->database, pool->db_name) && !strcmp(r->user, pool->user_name);
}

/* The records of pool in the run's snapshot (m->cur, taken this loop turn), or NULL when it
 * does not hold that pool. The snapshot lists the pools in the pool list's order: position
 * hint is looked at first. */
static const struct pool_record *pool_in_cur(const struct live_manager *m, const struct pool *pool,
                                             size_t hint)
{
    if (hint < m->cur.n_pools && same_pool(&m->cur.pools[hint], pool))
        return &m->cur.pools[hint];
    for (size_t i = 0; i < m->cur.n_pools; i++) {
        const struct pool_record *r = &m->cur.pools[i];
        if (same_pool(r, pool))
            return r;
    }
    return NULL;
}

/* Where a pool's server is: host, then port. */
static int compare_servers(const struct pool *a, const struct pool *b)
{
    int c = strcmp(a->host ? a->host : "", b->host ? b->host : "");
    return c ? c : (a->port > b->port) - (a->port < b->port);
}

struct share_key {
    const struct pool *pool; /* borrowed */
    size_t order;            /* its position in the pool list */
};

static int compare_share_keys(const void *a, const void *b)
{
    const struct share_key *x = a, *y = b;
    return compare_servers(x->pool, y->pool);
}

/* For each pool, by its position in the pool list, how many pools use its server (itself
 * included): one sort per run rather than a walk over every pool for each. Owned by the
 * caller (free); NULL when memory runs out or there is no pool. */
static int *pools_sharing_servers(const struct pooler *p)
{
    size_t n = plist_count(&p->pools);
    struct share_key *keys = n ? calloc(n, sizeof(*keys)) : NULL;
    int *sharing = keys ? calloc(n, sizeof(*sharing)) : NULL;
    if (!sharing) {
        free(keys);
        return NULL;
    }
    size_t i = 0;
    for (const struct plist *it = p->pools.next; it != &p->pools; it = it->next, i++)
        keys[i] = (struct share_key){.pool = plist_entry(it, struct pool, node), .order = i};
    qsort(keys, n, sizeof(*keys), compare_share_keys);
    for (size_t start = 0, end; start < n; start = end) {
        for (end = start + 1; end < n && !compare_servers(keys[start].pool, keys[end].pool);)
            end++;
        for (size_t k = start; k < end; k++)
            sharing[keys[k].order] = (int)(end - start);
    }
    free(keys);
    return sharing;
}

static void scale_pool(struct live_manager *m, struct pool *pool, size_t order, const int *sharing,
                       int64_t now_ms, int64_t interval_ms, enum scale_mode mode)
{
    const struct manager_options *opts = &m->pooler->cfg->manager;
    struct pool_watch *g = watch_for(m, pool, order);
    if (!g)
        return;
    /* The periodic run reads the pool's clients from the snapshot it just took instead of
     * copying them: a copy would be one more record per client at every run. */
    const struct pool_record *taken = mode == SCALE_PERIODIC ? pool_in_cur(m, pool, order) : NULL;
    struct snapshot own, prev;
    snapshot_init(&own, SNAPSHOT_MODE_SERVE, now_ms);
    snapshot_init(&prev, SNAPSHOT_MODE_SERVE, g->prev_ms);
    prev.counters = g->prev;
    bool filled = (taken || snapshot_reserve_conns(&own, (size_t)pool->n_clients)) &&
                  pool_source_fill_pool(pool, !taken, &own);
    /* cur: own's pool and counters; the records are own's or borrowed from m->cur. */
    struct snapshot cur = own;
    if (taken) {
        cur.conns = m->cur.conns + taken->first_conn;
        cur.n_conns = cur.cap_conns = taken->n_conns;
    }
    /* The pools sharing this pool's server split its usable slots. */
    int sharers = 0;
    if (sharing) {
        sharers = sharing[order];
    } else { /* out of memory for the sort: count them here */
        for (struct plist *n = m->pooler->pools.next; n != &m->pooler->pools; n = n->next)
            sharers += !compare_servers(plist_entry(n, struct pool, node), pool);
    }
    cur.capacity.usable =
        autoscale_fair_share(pool->server_usable_slots, sharers, pool->configured_size);
    if (filled) {
        struct manager_options bounded = *opts;
        autoscale_bounds(pool->configured_size, pool->min_pool_size, opts, &g->lo, &g->hi);
        bounded.min_pool_size = g->lo;
        bounded.max_pool_size = g->hi;
        scaling_decide(g->prev_ms ? &prev : NULL, &cur, &bounded, pool->pool_size, &g->last);
    }
    /* Only the periodic run moves the window: a requested or dry-run decision in between
     * measures from the last periodic look and leaves it for the next one, so that polling
     * /api/v1/auto-scale cannot shrink the window the pool is resized on. */
    if (mode == SCALE_PERIODIC || !g->prev_ms) {
        g->prev = cur.counters;
        g->prev_ms = now_ms;
    }
    snapshot_free(&own);
    if (!filled)
        return;
    bool go;
    if (mode == SCALE_PERIODIC) {
        go = autoscale_accept(&g->state, &g->last, now_ms, interval_ms, g->hold, sizeof(g->hold));
    } else {
        go = g->last.target_size != pool->pool_size;
        snprintf(g->hold, sizeof(g->hold), "%s", mode == SCALE_NOW ? "requested" : "dry run");
    }
    if (!go)
        return;
    bool apply = mode == SCALE_NOW || (mode == SCALE_PERIODIC && opts->auto_scaling);
    int before = pool->pool_size;
    if (mode == SCALE_DRY_RUN) {
        if (g->dry_before == before && g->dry_after == g->last.target_size)
            return; /* recorded already */
        g->dry_before = before;
        g->dry_after = g->last.target_size;
    }
    enum event_kind kind = !apply                             ? EVENT_SCALE_RECOMMEND
                           : g->last.decision == SCALING_GROW ? EVENT_SCALE_GROW
                                                              : EVENT_SCALE_SHRINK;
    if (apply) {
        pool_executor_resize(pool, g->last.target_size);
        g->last.applied = true;
    }
    struct event *e = record_pool(m, kind, pool, now_ms);
    e->before = before;
    e->after = g->last.target_size;
    events_set_reason(e, g->last.reason);
    log_info("manager", "%s: pool %s/%s size %d -> %d (bounds %d..%d): %s", events_kind_name(kind),
             pool->db_name, pool->user_name, before, g->last.target_size, g->lo, g->hi,
             g->last.reason);
}

/* One scaling decision for every pool, in the pool list's order (each pool's watch and
 * snapshot record are found at its position). */
static void scale_every_pool(struct live_manager *m, int64_t now_ms, int64_t interval_ms,
                             enum scale_mode mode)
{
    int *sharing = pools_sharing_servers(m->pooler);
    size_t order = 0;
    for (struct plist *n = m->pooler->pools.next; n != &m->pooler->pools; n = n->next, order++)
        scale_pool(m, plist_entry(n, struct pool, node), order, sharing, now_ms, interval_ms, mode);
    free(sharing);
}

/* auto_scaling was turned off (RELOAD, SET): every pool goes back to its configured size, as
 * a restart would give it. A size asked for on the console afterwards (AUTO_SCALE NOW) stays. */
static void unscale_pools(struct live_manager *m, int64_t now_ms)
{
    for (struct plist *n = m->pooler->pools.next; n != &m->pooler->pools; n = n->next) {
        struct pool *pool = plist_entry(n, struct pool, node);
        int before = pool->pool_size;
        if (before == pool->configured_size)
            continue;
        pool_executor_resize(pool, pool->configured_size);
        struct event *e =
            record_pool(m, before < pool->configured_size ? EVENT_SCALE_GROW : EVENT_SCALE_SHRINK,
                        pool, now_ms);
        e->before = before;
        e->after = pool->configured_size;
        events_set_reason(e, "auto_scaling turned off: back to the configured size");
        log_info("manager", "auto_scaling turned off: pool %s/%s size %d -> %d (configured)",
                 pool->db_name, pool->user_name, before, pool->configured_size);
    }
}

static void scale_pools(struct live_manager *m, int64_t now_ms)
{
    bool scaling_on = m->pooler->cfg->manager.auto_scaling;
    if (m->scaling_was_on && !scaling_on)
        unscale_pools(m, now_ms);
    m->scaling_was_on = scaling_on;
    int64_t interval = m->pooler->cfg->manager.interval_ms;
    if (interval < LIVE_MANAGER_PERIOD_MS)
        interval = LIVE_MANAGER_PERIOD_MS;
    for (struct plist *n = m->pooler->pools.next; n != &m->pooler->pools; n = n->next) {
        struct pool *pool = plist_entry(n, struct pool, node);
        pool_executor_trim(pool); /* servers above a lowered size go once they are idle */
    }
    if (m->last_scaling_ms && now_ms - m->last_scaling_ms < interval)
        return;
    m->last_scaling_ms = now_ms;
    scale_every_pool(m, now_ms, interval, SCALE_PERIODIC);
}

void live_manager_auto_scale(struct live_manager *m, bool apply)
{
    scale_every_pool(m, snapshot_now_ms(), 0, apply ? SCALE_NOW : SCALE_DRY_RUN);
}

int live_manager_health_check(struct live_manager *m)
{
    int sent = 0;
    for (struct plist *n = m->pooler->pools.next; n != &m->pooler->pools; n = n->next)
        sent += pool_executor_probe_idle(plist_entry(n, struct pool, node), 0);
    return sent;
}

/* The pool's health from its recent probes and its logins; a change of status is an event. */
static void summarize_health(struct live_manager *m, struct pool *pool, size_t order,
                             int64_t now_ms)
{
    struct pool_watch *w = watch_for(m, pool, order);
    if (!w)
        return;
    struct health_probe probes[POOL_PROBE_KEEP];
    size_t n_probes = pool_source_probes(pool, probes);
    enum report_status before = w->have_health ? w->health.status : REPORT_OK;
    health_summarize(probes, n_probes, NULL, &m->pooler->cfg->manager, &w->health);
    /* No server can be opened right now: the database is down whatever the probes said. */
    if (pool->last_error && pool->n_servers == 0 && pool->retry_after_us > pooler_now(m->pooler)) {
        w->health.status = REPORT_CRITICAL;
        snprintf(w->health.reason, sizeof(w->health.reason), "server logins fail: %s",
                 pool->last_error);
    }
    w->have_health = true;
    if (w->health.status == before)
        return;
    struct event *e = record_pool(m, EVENT_HEALTH_CHANGED, pool, now_ms);
    e->before = before;
    e->after = w->health.status;
    char reason[EVENT_REASON_LEN + 64];
    snprintf(reason, sizeof(reason), "%s -> %s: %s", report_status_name(before),
             report_status_name(w->health.status), w->health.reason);
    events_set_reason(e, reason);
    log_warning("manager", "health_changed: pool %s/%s %s", pool->db_name, pool->user_name,
                e->reason);
}

/* Every health_check_interval: probes the idle servers that did no work for half of it (a
 * busy server proves itself), then summarizes every pool. */
static void check_health(struct live_manager *m, int64_t now_ms)
{
    int64_t interval = m->pooler->cfg->manager.health_check_interval_ms;
    if (m->last_probe_ms && now_ms - m->last_probe_ms < interval)
        return;
    m->last_probe_ms = now_ms;
    int64_t quiet_us = interval * 1000 / 2;
    size_t order = 0;
    for (struct plist *n = m->pooler->pools.next; n != &m->pooler->pools; n = n->next, order++) {
        struct pool *pool = plist_entry(n, struct pool, node);
        pool_executor_probe_idle(pool, quiet_us);
        summarize_health(m, pool, order, now_ms);
    }
}

void live_manager_run(struct live_manager *m)
{
    struct pooler *p = m->pooler;
    snapshot_free(&m->look); /* no plan points into it any more */
    snapshot_init(&m->look, SNAPSHOT_MODE_SERVE, 0);
    if (m->have_leaks) {
        leaks_report_free(&m->leaks);
        m->have_leaks = false;
    }
    /* The previous look becomes the one before; its arrays take this look. */
    struct snapshot older = m->prev;
    m->prev = m->cur;
    m->cur = older;
    snapshot_reset(&m->cur, SNAPSHOT_MODE_SERVE, snapshot_now_ms());
    if (!pool_source_fill(p, NULL, &m->cur)) {
        log_warning("manager", "out of memory taking a snapshot of the pools; skipping this run");
        return;
    }
    const struct snapshot *prev = m->have_cur ? &m->prev : NULL;
    m->have_cur = true;
    if (!hold_norms_observe(&m->norms, prev, &m->cur))
        log_warning("manager", "out of memory learning usual hold times; keeping the old ones");
    hold_norms_annotate(&m->norms, &m->cur);
    if (!leaks_detect(prev, &m->cur, &p->cfg->manager, &m->leaks)) {
        log_warning("manager", "out of memory detecting leaks; skipping this run");
        return;
    }
    m->have_leaks = true;
    act_on_suspects(m);
    scale_pools(m, m->cur.taken_ms);
    check_health(m, m->cur.taken_ms);
}

static int compare_marks(const void *a, const void *b)
{
    const struct planned_mark *x = a, *y = b;
    if (x->client_id != y->client_id)
        return x->client_id < y->client_id ? -1 : 1;
    return 0;
}

/* Whether the previous dry run planned this client in the same idle period. */
static bool planned_before(const struct live_manager *m, const struct conn_record *rec)
{
    struct planned_mark key = {.client_id = rec->id};
    const struct planned_mark *found =
        m->n_planned ? bsearch(&key, m->planned, m->n_planned, sizeof(key), compare_marks) : NULL;
    return found && found->since_ms == rec->state_change_ms;
}

bool live_manager_kill_idle(struct live_manager *m, bool execute, struct kill_plan *out)
{
    /* Plans on the pools as they are now, in a look of its own: a full manager run here
     * would take reclaim steps and turn the snapshots for a request (a dry run acts on
     * nothing), and repeated requests would shorten the window the periodic run measures
     * rates over. */
    snapshot_reset(&m->look, SNAPSHOT_MODE_SERVE, snapshot_now_ms());
    if (!pool_source_fill(m->pooler, NULL, &m->look))
        return false;
    hold_norms_annotate(&m->norms, &m->look);
    struct manager_options opts = m->pooler->cfg->manager;
    opts.execute = execute;
    if (!reaper_plan(&m->look, &opts, out))
        return false;
    /* This dry run's planned clients (out of memory: none, so the next one records all). */
    struct planned_mark *marks =
        !execute && out->n_actions ? calloc(out->n_actions, sizeof(*marks)) : NULL;
    size_t n_marks = 0;
    for (size_t i = 0; i < out->n_actions; i++) {
        struct kill_action *a = &out->actions[i];
        if (a->result != KILL_PLANNED)
            continue;
        const struct conn_record *rec = a->conn;
        if (!execute) {
            if (marks)
                marks[n_marks++] =
                    (struct planned_mark){.client_id = rec->id, .since_ms = rec->state_change_ms};
            if (planned_before(m, rec))
                continue;
        } else {
            struct client *c = objects_client_find(m->pooler, (uint64_t)rec->id);
            if (!c || pool_source_conn_state(c) != rec->state) {
                a->result = KILL_GONE;
                continue;
            }
            objects_client_fail(c, "57P01", "terminated by pgwarden kill-idle: %s", a->reason);
            a->result = KILL_TERMINATED;
            out->killed++;
        }
        char reason[EVENT_REASON_LEN + 32];
        snprintf(reason, sizeof(reason), "%s%s", execute ? "" : "dry run: ", a->reason);
        struct event *e =
            record(m, execute ? EVENT_KILL_IDLE : EVENT_KILL_IDLE_PLANNED, rec, reason);
        e->before = a->idle_ms / 1000;
    }
    if (!execute) {
        if (marks)
            qsort(marks, n_marks, sizeof(*marks), compare_marks);
        free(m->planned);
        m->planned = marks;
        m->n_planned = n_marks;
    }
    return true;
}

size_t live_manager_probes(const struct live_manager *m, struct health_probe **out)
{
    const struct plist *pools = &m->pooler->pools;
    size_t n = 0, cap = 0;
    *out = NULL;
    for (const struct plist *it = pools->next; it != pools; it = it->next)
        cap += plist_entry(it, struct pool, node)->probes.n;
    if (cap == 0 || !(*out = calloc(cap, sizeof(**out))))
        return 0;
    for (const struct plist *it = pools->next; it != pools; it = it->next)
        n += pool_source_probes(plist_entry(it, struct pool, node), *out + n);
    for (size_t i = 0; i < n; i++)
        (*out)[i].id = (int64_t)i + 1;
    return n;
}

bool live_manager_analyse(const struct live_manager *m, struct live_analysis *out)
{
    memset(out, 0, sizeof(*out));
    out->cur = live_manager_snapshot(m);
    out->prev = live_manager_prev_snapshot(m);
    const struct leak_report *leaks = live_manager_leaks(m);
    if (out->cur->taken_ms == 0 || !leaks)
        return false;
    const struct manager_options *opts = &m->pooler->cfg->manager;
    if (!stats_compute(out->prev, out->cur, opts, &out->stats))
        return false;
    struct manager_options plan_opts = *opts;
    plan_opts.execute = false;
    if (!reaper_plan(out->cur, &plan_opts, &out->idle)) {
        stats_report_free(&out->stats);
        return false;
    }
    out->n_probes = live_manager_probes(m, &out->probes);
    health_summarize(out->probes, out->n_probes, NULL, opts, &out->health);
    scaling_decide(out->prev, out->cur, opts, -1, &out->scaling);
    out->analysis.stats = &out->stats;
    out->analysis.leaks = leaks;
    out->analysis.health = &out->health;
    out->analysis.scaling = &out->scaling;
    out->analysis.idle = &out->idle;
    analysis_run(out->prev, out->cur, opts, &out->analysis);
    return true;
}

void live_manager_analysis_free(struct live_analysis *a)
{
    free(a->probes);
    reaper_kill_plan_free(&a->idle);
    stats_report_free(&a->stats);
    memset(a, 0, sizeof(*a));
}

size_t live_manager_pool_count(const struct live_manager *m)
{
    return m->n_watch;
}

bool live_manager_pool_at(const struct live_manager *m, size_t i, struct live_pool_view *out)
{
    if (i >= m->n_watch)
        return false;
    const struct pool_watch *g = &m->watch[i];
    out->pool = g->pool;
    out->decision = &g->last;
    out->lo = g->lo;
    out->hi = g->hi;
    out->hold = g->hold;
    out->health = g->have_health ? &g->health : NULL;
    return true;
}

const struct snapshot *live_manager_snapshot(const struct live_manager *m)
{
    return &m->cur;
}

const struct snapshot *live_manager_prev_snapshot(const struct live_manager *m)
{
    return m->have_cur && m->prev.taken_ms ? &m->prev : NULL;
}

const struct leak_report *live_manager_leaks(const struct live_manager *m)
{
    return m->have_leaks ? &m->leaks : NULL;
}

enum reclaim_level live_manager_reclaim_done(const struct live_manager *m, int64_t client_id)
{
    const struct suspect_track *t = find_track(m, client_id);
    return t ? t->reclaim.done : RECLAIM_OFF;
}

const struct event_ring *live_manager_events(const struct live_manager *m)
{
    return &m->events;
}

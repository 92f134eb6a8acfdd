/* Per-database PAUSE/DISABLE state and the conditions the console waits for (see control.h). */
#include "pool/control.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "pool/handout.h"
#include "pool/objects.h"
#include "pool/server.h"

static struct db_control *find(const struct pooler *p, const char *db)
{
    for (size_t i = 0; i < p->n_db_controls; i++)
        if (!strcmp(p->db_controls[i].name, db))
            return &p->db_controls[i];
    return NULL;
}

static struct db_control *find_or_add(struct pooler *p, const char *db)
{
    struct db_control *d = find(p, db);
    if (d)
        return d;
    struct db_control *grown =
        realloc(p->db_controls, (p->n_db_controls + 1) * sizeof(*p->db_controls));
    if (!grown)
        return NULL;
    p->db_controls = grown;
    d = &p->db_controls[p->n_db_controls];
    memset(d, 0, sizeof(*d));
    if (!(d->name = strdup(db)))
        return NULL;
    p->n_db_controls++;
    return d;
}

/* Copies the state of db onto each of its pools, and lets waiting clients go on resume. */
static void sync_pools(struct pooler *p, const char *db)
{
    const struct db_control *d = find(p, db);
    for (struct plist *n = p->pools.next; n != &p->pools; n = n->next) {
        struct pool *pool = plist_entry(n, struct pool, node);
        if (strcmp(pool->db_name, db))
            continue;
        bool was_paused = pool->db_paused;
        pool->db_paused = d && d->paused;
        pool->db_disabled = d && d->disabled;
        if (was_paused && !pool->db_paused)
            handout_activate(pool);
    }
}

bool control_pause(struct pooler *p, const char *db)
{
    struct db_control *d = find_or_add(p, db);
    if (!d)
        return false;
    if (!d->paused)
        log_info("control", "pausing database %s: its servers are handed out no more", db);
    d->paused = true;
    sync_pools(p, db);
    return true;
}

void control_resume(struct pooler *p, const char *db)
{
    struct db_control *d = find(p, db);
    if (!d || !d->paused)
        return;
    log_info("control", "resuming database %s", db);
    d->paused = false;
    sync_pools(p, db);
}

bool control_disable(struct pooler *p, const char *db, bool disabled)
{
    struct db_control *d = disabled ? find_or_add(p, db) : find(p, db);
    if (!d)
        return !disabled;
    if (d->disabled != disabled)
        log_info("control", "%s database %s", disabled ? "disabling" : "enabling", db);
    d->disabled = disabled;
    sync_pools(p, db);
    return true;
}

bool control_db_paused(const struct pooler *p, const char *db)
{
    const struct db_control *d = find(p, db);
    return d && d->paused;
}

bool control_any_db_paused(const struct pooler *p)
{
    for (size_t i = 0; i < p->n_db_controls; i++)
        if (p->db_controls[i].paused)
            return true;
    return false;
}

bool control_db_disabled(const struct pooler *p, const char *db)
{
    const struct db_control *d = find(p, db);
    return d && d->disabled;
}

void control_apply(struct pool *pool)
{
    const struct db_control *d = find(pool->pooler, pool->db_name);
    pool->db_paused = d && d->paused;
    pool->db_disabled = d && d->disabled;
}

bool control_paused_done(const struct pooler *p, const char *db)
{
    for (const struct plist *n = p->pools.next; n != &p->pools; n = n->next) {
        const struct pool *pool = plist_entry(n, struct pool, node);
        if ((!db || !strcmp(pool->db_name, db)) && !plist_empty(&pool->active_servers))
            return false;
    }
    return true;
}

/* Whole messages read into cn's buffer and not yet sent on (a partial one waits for the rest,
 * which SUSPEND does not read). */
static bool holds_unsent(const struct pconn *cn)
{
    return cn->buf && cn->buf->pos < cn->scan;
}

bool control_suspend_flushed(const struct pooler *p)
{
    for (const struct plist *n = p->pools.next; n != &p->pools; n = n->next) {
        const struct pool *pool = plist_entry(n, struct pool, node);
        for (const struct plist *m = pool->active_servers.next; m != &pool->active_servers;
             m = m->next)
            if (holds_unsent(&plist_entry(m, struct server, node)->conn))
                return false;
        for (const struct plist *m = pool->active_clients.next; m != &pool->active_clients;
             m = m->next)
            if (holds_unsent(&plist_entry(m, struct client, node)->conn))
                return false;
    }
    return true;
}

/* The first client (or, without one, server) of p that still holds unsent bytes while
 * suspended; NULL when everything is flushed. */
static struct pconn *first_unflushed(struct pooler *p, struct client **c, struct server **s)
{
    for (struct plist *n = p->pools.next; n != &p->pools; n = n->next) {
        struct pool *pool = plist_entry(n, struct pool, node);
        for (struct plist *m = pool->active_clients.next; m != &pool->active_clients; m = m->next) {
            *c = plist_entry(m, struct client, node);
            if (holds_unsent(&(*c)->conn) || ((*c)->server && holds_unsent(&(*c)->server->conn)))
                return &(*c)->conn;
        }
        *c = NULL;
        for (struct plist *m = pool->active_servers.next; m != &pool->active_servers; m = m->next) {
            *s = plist_entry(m, struct server, node);
            if (holds_unsent(&(*s)->conn))
                return &(*s)->conn;
        }
        *s = NULL;
    }
    return NULL;
}

bool control_suspend_orphaned(const struct pooler *p)
{
    return p->run_state == POOLER_SUSPENDED && (!p->admin_pool || p->admin_pool->n_clients == 0) &&
           control_suspend_flushed(p);
}

void control_suspend_expire(struct pooler *p, int64_t now)
{
    int64_t limit_ms = p->cfg->suspend_timeout_ms;
    if (p->run_state != POOLER_SUSPENDED || limit_ms <= 0 ||
        now - p->suspend_since_us < limit_ms * 1000)
        return;
    /* One at a time, looking again from the start: closing a client may close its server,
     * which moves both off the lists being walked. */
    struct client *c = NULL;
    struct server *s = NULL;
    while (first_unflushed(p, &c, &s)) {
        if (c)
            objects_client_fail(c, "08P01", "suspend_timeout");
        else
            server_close(s, "suspend_timeout");
        if ((c && c->state != CL_JUSTFREE) || (!c && s->state != SV_JUSTFREE))
            break; /* still listed: never spin on it */
    }
}

static bool any_close_needed(const struct plist *list)
{
    for (const struct plist *m = list->next; m != list; m = m->next)
        if (plist_entry(m, struct server, node)->close_needed)
            return true;
    return false;
}

bool control_closed_done(const struct pooler *p, const char *db)
{
    for (const struct plist *n = p->pools.next; n != &p->pools; n = n->next) {
        const struct pool *pool = plist_entry(n, struct pool, node);
        if (db && strcmp(pool->db_name, db))
            continue;
        const struct plist *lists[] = {&pool->active_servers, &pool->idle_servers,
                                       &pool->tested_servers, &pool->login_servers,
                                       &pool->canceling_servers};
        for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
            if (any_close_needed(lists[i]))
                return false;
    }
    return true;
}

void control_free(struct pooler *p)
{
    for (size_t i = 0; i < p->n_db_controls; i++)
        free(p->db_controls[i].name);
    free(p->db_controls);
    p->db_controls = NULL;
    p->n_db_controls = 0;
}

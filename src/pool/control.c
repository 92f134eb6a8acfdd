/* Per-database PAUSE/DISABLE state and the conditions the console waits for (see control.h). */
#include "pool/control.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "pool/handout.h"

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

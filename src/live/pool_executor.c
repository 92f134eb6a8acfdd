/* Reclaim steps on live clients. */
#include "live/pool_executor.h"

#include <stdio.h>

#include "pool/client.h"
#include "pool/handout.h"
#include "pool/objects.h"
#include "pool/server.h"

bool pool_executor_reclaim(struct pooler *p, int64_t client_id, enum reclaim_level step,
                           const char *why, char *outcome, size_t outcome_len)
{
    struct client *c = objects_client_find(p, (uint64_t)client_id);
    if (!c) {
        snprintf(outcome, outcome_len, "client gone");
        return false;
    }
    bool done = false;
    const char *note = NULL; /* an outcome other than "done" or "not now" */
    char text[400];
    switch (step) {
    case RECLAIM_NOTICE:
        snprintf(text, sizeof(text), "pgwarden: this connection looks leaked (%s)", why);
        switch (client_send_notice(c, text)) {
        case CLIENT_NOTICE_SENT:
            done = true;
            break;
        case CLIENT_NOTICE_CLOSED:
            note = "not sent: the client's connection failed and was closed";
            break;
        case CLIENT_NOTICE_NO_ROOM:
            /* A client that reads nothing cannot be told: the step is passed, so the next
             * one (when allowed) comes in its time instead of never. */
            done = true;
            note = "skipped: the client is not reading (its socket is full)";
            break;
        case CLIENT_NOTICE_BUSY:
            break;
        }
        break;
    case RECLAIM_CANCEL:
        done = client_cancel_query(c);
        break;
    case RECLAIM_ROLLBACK:
        done = client_reclaim_server(c, why);
        break;
    case RECLAIM_DISCONNECT:
        objects_client_fail(c, "25P03", "pgwarden closed this connection: it looked leaked (%s)",
                            why);
        done = true;
        break;
    case RECLAIM_OFF:
    case RECLAIM_LEVEL_COUNT:
        break;
    }
    snprintf(outcome, outcome_len, "%s",
             note   ? note
             : done ? "done"
                    : "not now: the client or its server is busy");
    return done;
}

void pool_executor_trim(struct pool *pool)
{
    struct plist *n;
    while (pool->n_servers > pool->pool_size && plist_empty(&pool->waiting_clients) &&
           (n = plist_first(&pool->idle_servers)) != NULL)
        server_close(plist_entry(n, struct server, node), "pool shrunk by auto-scaling");
}

void pool_executor_resize(struct pool *pool, int size)
{
    /* Under a queue no server of a shrunk pool is ever idle at a run: each one released
     * goes to the next client. Marked, the pool closes them as they are released. */
    if (size < pool->pool_size)
        pool->limits_lowered = true;
    pool->pool_size = size;
    pool_executor_trim(pool);
    handout_activate(pool);
}

int pool_executor_probe_idle(struct pool *pool, int64_t quiet_us)
{
    int64_t now = pooler_now(pool->pooler);
    int sent = 0;
    struct plist *n = pool->idle_servers.next;
    while (n != &pool->idle_servers) {
        struct server *s = plist_entry(n, struct server, node);
        n = n->next; /* a probed server leaves the idle list */
        if (now - s->last_used_us < quiet_us)
            continue;
        if (handout_probe_server(s))
            sent++;
    }
    return sent;
}

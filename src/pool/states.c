/* The state machine of clients and servers. An object's state is the list it sits on: the
 * two change_state functions are the only writers of the state field, move the object between
 * lists, and check every move against a table of legal transitions. */
#include "pool/states.h"

#include "common/log.h"

static const char *const CLIENT_STATE_NAMES[CL_STATE_COUNT] = {
    [CL_FREE] = "free",     [CL_LOGIN] = "login",     [CL_WAITING_LOGIN] = "waiting_login",
    [CL_ACTIVE] = "active", [CL_WAITING] = "waiting", [CL_JUSTFREE] = "justfree",
};

static const char *const SERVER_STATE_NAMES[SV_STATE_COUNT] = {
    [SV_FREE] = "free",         [SV_LOGIN] = "login",   [SV_IDLE] = "idle",
    [SV_TESTED] = "tested",     [SV_ACTIVE] = "active", [SV_BEING_CANCELED] = "being_canceled",
    [SV_JUSTFREE] = "justfree",
};

/* Legal moves: [from][to]. */
static const bool CLIENT_MOVES[CL_STATE_COUNT][CL_STATE_COUNT] = {
    [CL_FREE] = {[CL_LOGIN] = true},
    [CL_LOGIN] = {[CL_WAITING_LOGIN] = true, [CL_ACTIVE] = true, [CL_JUSTFREE] = true},
    [CL_WAITING_LOGIN] = {[CL_ACTIVE] = true, [CL_JUSTFREE] = true},
    [CL_ACTIVE] = {[CL_WAITING] = true, [CL_JUSTFREE] = true},
    [CL_WAITING] = {[CL_ACTIVE] = true, [CL_JUSTFREE] = true},
    [CL_JUSTFREE] = {[CL_FREE] = true},
};

static const bool SERVER_MOVES[SV_STATE_COUNT][SV_STATE_COUNT] = {
    [SV_FREE] = {[SV_LOGIN] = true},
    [SV_LOGIN] = {[SV_IDLE] = true, [SV_TESTED] = true, [SV_JUSTFREE] = true},
    [SV_IDLE] = {[SV_ACTIVE] = true, [SV_TESTED] = true, [SV_JUSTFREE] = true},
    [SV_TESTED] = {[SV_IDLE] = true, [SV_JUSTFREE] = true},
    [SV_ACTIVE] =
        {[SV_IDLE] = true, [SV_TESTED] = true, [SV_BEING_CANCELED] = true, [SV_JUSTFREE] = true},
    [SV_BEING_CANCELED] = {[SV_IDLE] = true, [SV_TESTED] = true, [SV_JUSTFREE] = true},
    [SV_JUSTFREE] = {[SV_FREE] = true},
};

const char *states_client_name(enum client_state st)
{
    return st < CL_STATE_COUNT ? CLIENT_STATE_NAMES[st] : "?";
}

const char *states_server_name(enum server_state st)
{
    return st < SV_STATE_COUNT ? SERVER_STATE_NAMES[st] : "?";
}

static struct plist *client_list_for(struct client *c, enum client_state st)
{
    switch (st) {
    case CL_LOGIN:
        return &c->pooler->login_clients;
    case CL_WAITING_LOGIN:
        return &c->pool->waiting_login_clients;
    case CL_ACTIVE:
        return &c->pool->active_clients;
    case CL_WAITING:
        return &c->pool->waiting_clients;
    case CL_JUSTFREE:
        return &c->pooler->justfree_clients;
    case CL_FREE:
    case CL_STATE_COUNT:
        break;
    }
    return NULL;
}

void states_client_change(struct client *c, enum client_state next)
{
    enum client_state prev = (enum client_state)c->state;
    log_trace("pool", "client %llu going from %s to %s", (unsigned long long)c->id,
              states_client_name(prev), states_client_name(next));
    if (!CLIENT_MOVES[prev][next])
        log_error("pool", "client %llu: illegal state change %s -> %s", (unsigned long long)c->id,
                  states_client_name(prev), states_client_name(next));
    if (prev != CL_FREE)
        plist_remove(&c->node);
    c->state = (uint8_t)next;
    c->state_us = pooler_now(c->pooler);
    struct plist *list = client_list_for(c, next);
    if (list)
        plist_append(list, &c->node);
}

static struct plist *server_list_for(struct server *s, enum server_state st)
{
    struct pool *pool = s->pool;
    switch (st) {
    case SV_LOGIN:
        return &pool->login_servers;
    case SV_IDLE:
        return &pool->idle_servers;
    case SV_TESTED:
        return &pool->tested_servers;
    case SV_ACTIVE:
        return &pool->active_servers;
    case SV_BEING_CANCELED:
        return &pool->canceling_servers;
    case SV_JUSTFREE:
        return &pool->pooler->justfree_servers;
    case SV_FREE:
    case SV_STATE_COUNT:
        break;
    }
    return NULL;
}

void states_server_change(struct server *s, enum server_state next)
{
    enum server_state prev = (enum server_state)s->state;
    log_trace("pool", "server %llu going from %s to %s", (unsigned long long)s->id,
              states_server_name(prev), states_server_name(next));
    if (!SERVER_MOVES[prev][next])
        log_error("pool", "server %llu: illegal state change %s -> %s", (unsigned long long)s->id,
                  states_server_name(prev), states_server_name(next));
    if (prev != SV_FREE)
        plist_remove(&s->node);
    s->state = (uint8_t)next;
    s->state_us = pooler_now(s->pool->pooler);
    struct plist *list = server_list_for(s, next);
    if (!list)
        return;
    /* Idle servers are used most-recently-released first: their caches are warm and the
     * least used ones age out through server_idle_timeout. */
    if (next == SV_IDLE)
        plist_prepend(list, &s->node);
    else
        plist_append(list, &s->node);
}

void states_init_pool_lists(struct pool *pool)
{
    plist_init(&pool->waiting_login_clients);
    plist_init(&pool->active_clients);
    plist_init(&pool->waiting_clients);
    plist_init(&pool->login_servers);
    plist_init(&pool->idle_servers);
    plist_init(&pool->tested_servers);
    plist_init(&pool->active_servers);
    plist_init(&pool->canceling_servers);
    plist_init(&pool->lookups);
}

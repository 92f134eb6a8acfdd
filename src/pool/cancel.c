/* Cancel requests. Each client gets pgwarden's own BackendKeyData (random pid and key, in a
 * hash table sized by max_client_conn). A CancelRequest is forwarded only while that client
 * holds an ACTIVE server, on a new connection with the server's own key; while it is in
 * flight the server counts it, so a server released meanwhile waits in BEING_CANCELED and a
 * late cancel never hits the next client's query.
 *
 * Peering (peer_id, [peers]): processes sharing a port (so_reuseport) or a load balancer each
 * write their peer_id into the keys they hand out (proto/cancel_key.h). A cancel request that
 * lands on another process of the group is passed on, as is, to the process its key names. */
#include "pool/cancel.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "common/log.h"
#include "pool/handout.h"
#include "pool/objects.h"
#include "pool/server.h"
#include "proto/cancel_key.h"
#include "proto/wire.h"

/* A connection that carries one CancelRequest: to a server, or on to a peer. */
struct cancel_req {
    struct plist node;
    struct pooler *pooler; /* borrowed */
    struct server *server; /* borrowed; NULL once the server is gone */
    struct net_io *io;     /* owned */
    int peer_id;           /* passed on to this peer; 0 for a cancel sent to a server */
    int fd;
    int64_t start_us;
    uint8_t pkt[16];
    uint8_t sent;
    bool done;
};

/* ---- cancel keys of our clients ---- */

/* Two random words from the pooler's batch; false when the random source fails. */
static bool cancel_random_pair(struct pooler *p, uint32_t out[2])
{
    if (p->cancel_random_left < 2) {
        if (RAND_bytes((unsigned char *)p->cancel_random, sizeof(p->cancel_random)) != 1)
            return false;
        p->cancel_random_left = (int)(sizeof(p->cancel_random) / sizeof(p->cancel_random[0]));
    }
    out[0] = p->cancel_random[--p->cancel_random_left];
    out[1] = p->cancel_random[--p->cancel_random_left];
    /* A key handed out is never kept where a later dump or reuse could show it. */
    p->cancel_random[p->cancel_random_left] = 0;
    p->cancel_random[p->cancel_random_left + 1] = 0;
    return true;
}

/* A peer_id fills 16 bits of the pid: the bucket mixes pid and key. */
static size_t cancel_bucket(const struct pooler *p, uint32_t pid, uint32_t key)
{
    return ((pid ^ (key * 0x9E3779B1u)) * 0x85EBCA6Bu >> 7) & (p->cancel_buckets - 1);
}

void cancel_register_client(struct client *c)
{
    struct pooler *p = c->pooler;
    int peer_id = p->cfg->peer_id;
    for (int tries = 0; tries < 8; tries++) {
        uint32_t r[2];
        if (!cancel_random_pair(p, r))
            break;
        c->cancel_pid = r[0];
        c->cancel_key = r[1];
        c->cancel_pid &= 0x7fffffff; /* some clients print it as a signed pid */
        if (peer_id > 0)
            cancel_key_mark_peer(&c->cancel_pid, &c->cancel_key, peer_id);
        if (c->cancel_pid == 0)
            continue;
        size_t b = cancel_bucket(p, c->cancel_pid, c->cancel_key);
        bool clash = false;
        for (struct client *o = p->cancel_table[b]; o; o = o->cancel_next)
            clash |= o->cancel_pid == c->cancel_pid && o->cancel_key == c->cancel_key;
        if (clash)
            continue;
        c->cancel_next = p->cancel_table[b];
        p->cancel_table[b] = c;
        c->in_cancel_table = true;
        return;
    }
    log_warning("pool", "client %llu: no cancel key (random source failed)",
                (unsigned long long)c->id);
}

void cancel_unregister_client(struct client *c)
{
    if (!c->in_cancel_table)
        return;
    struct pooler *p = c->pooler;
    struct client **link = &p->cancel_table[cancel_bucket(p, c->cancel_pid, c->cancel_key)];
    while (*link && *link != c)
        link = &(*link)->cancel_next;
    if (*link)
        *link = c->cancel_next;
    c->in_cancel_table = false;
}

static struct client *client_find_cancel(struct pooler *p, uint32_t pid, uint32_t key)
{
    for (struct client *c = p->cancel_table[cancel_bucket(p, pid, key)]; c; c = c->cancel_next)
        if (c->cancel_pid == pid && c->cancel_key == key)
            return c;
    return NULL;
}

static struct cancel_req *open_cancel_conn(struct pooler *p, int fd, uint32_t pid, uint32_t key,
                                           struct server *s);

/* A cancel request whose key names another process of the group: passed on with one hop
 * less, over a new connection to that peer. */
static void forward_to_peer(struct pooler *p, int peer_id, uint32_t pid, uint32_t key)
{
    if (cancel_key_ttl(key) == 0) {
        log_info("pool", "cancel request for peer %d dropped: forwarded too many times", peer_id);
        return;
    }
    const struct pooler_peer_config *peer = pooler_config_find_peer(p->cfg, peer_id);
    if (!peer) {
        log_warning("pool", "cancel request for peer %d dropped: no such peer in [peers]", peer_id);
        return;
    }
    if (p->n_cancel_reqs >= p->cfg->max_client_conn) {
        log_debug("pool", "cancel request for peer %d dropped (too many in flight)", peer_id);
        return;
    }
    char err[256];
    int fd = net_connect(peer->host, peer->port, err, sizeof(err));
    if (fd < 0) {
        log_warning("pool", "cancel request for peer %d: %s", peer_id, err);
        return;
    }
    log_debug("pool", "forwarding a cancel request to peer %d", peer_id);
    struct cancel_req *r = open_cancel_conn(p, fd, pid, key - 1, NULL);
    if (r)
        r->peer_id = peer_id;
}

void cancel_handle_request(struct pooler *p, uint32_t pid, const uint8_t *key_bytes, size_t key_len)
{
    if (key_len != 4)
        return;
    uint32_t key = wire_get_u32(key_bytes);
    int own = p->cfg->peer_id;
    if (own > 0) {
        int target = cancel_key_peer_id(pid);
        if (target != own) {
            forward_to_peer(p, target, pid, key);
            return;
        }
        key |= CANCEL_KEY_TTL_MASK; /* as handed out, whatever hops it made */
    }
    struct client *c = client_find_cancel(p, pid, key);
    /* Only a query running right now for this very client is cancelled: a client without a
     * server has nothing to cancel, and its former server belongs to someone else. */
    if (!c || !c->server || c->server->state != SV_ACTIVE)
        return;
    (void)cancel_req_start(p, c->server); /* a client's cancel is best effort, as in PostgreSQL */
}

/* ---- cancel connections to servers and peers ---- */

static void cancel_req_finish(struct cancel_req *r)
{
    if (r->done)
        return;
    r->done = true;
    struct server *s = r->server;
    r->server = NULL;
    if (s && s->cancels_in_flight > 0) {
        s->cancels_in_flight--;
        if (s->cancels_in_flight == 0 && s->state == SV_BEING_CANCELED)
            handout_release_server(s);
    }
    r->pooler->n_cancel_reqs--;
    objects_schedule_reap(r->pooler);
}

static void cancel_cb(int fd, unsigned what, void *arg)
{
    struct cancel_req *r = arg;
    if (r->done)
        return;
    if ((what & NET_IO_WRITABLE) && r->sent < sizeof(r->pkt)) {
        if (r->sent == 0 && net_connect_result(fd) != 0) {
            cancel_req_finish(r);
            return;
        }
        size_t n = 0;
        enum net_io_result res = net_send(fd, r->pkt + r->sent, sizeof(r->pkt) - r->sent, &n);
        if (res == NET_OK)
            r->sent = (uint8_t)(r->sent + n);
        else if (res != NET_AGAIN) {
            cancel_req_finish(r);
            return;
        }
    }
    if (what & NET_IO_READABLE) {
        /* PostgreSQL answers a cancel request by closing the connection once the signal
         * was sent. */
        uint8_t tmp[64];
        size_t n;
        enum net_io_result res = net_recv(fd, tmp, sizeof(tmp), &n);
        if (res == NET_OK && r->server) {
            /* PostgreSQL sends nothing here. Reading on would wait for an edge the rest of
             * these bytes and the close behind them never raise (edge-triggered), holding
             * the server BEING_CANCELED; whether the cancel lands is unknown, so its server
             * is not handed to another client (handout_release_server closes it). */
            r->server->cancel_unsettled = true;
        }
        if (res != NET_AGAIN)
            cancel_req_finish(r);
    }
}

bool cancel_req_start(struct pooler *p, struct server *s)
{
    char err[256];
    /* A cancel storm must not exhaust file descriptors: at most one cancel connection per
     * allowed client overall, and two in flight per server. */
    if (s->cancels_in_flight >= 2 || p->n_cancel_reqs >= p->cfg->max_client_conn) {
        log_debug("pool", "server %llu: cancel request dropped (too many in flight)",
                  (unsigned long long)s->id);
        return false;
    }
    struct pool *pool = s->pool;
    int fd = -1;
    struct net_sockaddr peer;
    if (net_peer_sockaddr(s->conn.fd, &peer)) {
        /* Where this server's backend is, whatever the configuration says now: a reload may
         * have moved the database (host, port) and a DNS answer may have changed since, while
         * the query still runs on the server it started on. */
        fd = net_connect_addr(&peer, err, sizeof(err));
    } else {
        const struct pool_host *h = server_host(s); /* the host of a list this server is on */
        if (h->name[0] == '/' || net_host_is_numeric(h->name))
            fd = net_connect(h->name, pool->port, err, sizeof(err));
        else if (h->have_addr) /* the address this server was reached at */
            fd = net_connect_addr(&h->addr, err, sizeof(err));
        else
            snprintf(err, sizeof(err), "no resolved address for %s", h->name);
    }
    if (fd < 0) {
        log_warning("pool", "cancel: %s", err);
        return false;
    }
    if (!open_cancel_conn(p, fd, s->be_pid, s->be_key, s))
        return false;
    log_debug("pool", "server %llu: cancel request sent", (unsigned long long)s->id);
    return true;
}

/* Sends CancelRequest(pid, key) over fd, a connection under way; s is the server whose query
 * it cancels (counted as in flight on it), NULL for one passed on to a peer. NULL when it
 * could not be set up (fd is closed then). */
static struct cancel_req *open_cancel_conn(struct pooler *p, int fd, uint32_t pid, uint32_t key,
                                           struct server *s)
{
    struct cancel_req *r = calloc(1, sizeof(*r));
    if (!r) {
        close(fd);
        return NULL;
    }
    r->pooler = p;
    r->server = s;
    r->fd = fd;
    r->start_us = pooler_now(p);
    struct wire_buf b;
    wire_buf_init(&b, r->pkt, sizeof(r->pkt));
    wire_build_cancel(&b, pid, key);
    r->io = net_io_new(p->loop, fd, NET_IO_EDGE_RW, cancel_cb, r);
    if (!r->io) {
        close(fd);
        free(r);
        return NULL;
    }
    if (s)
        s->cancels_in_flight++;
    p->n_cancel_reqs++;
    plist_append(&p->cancel_reqs, &r->node);
    return r;
}

int cancel_reqs_to_peer(const struct pooler *p, int peer_id)
{
    int n = 0;
    for (const struct plist *it = p->cancel_reqs.next; it != &p->cancel_reqs; it = it->next) {
        const struct cancel_req *r = plist_entry(it, struct cancel_req, node);
        n += !r->done && r->peer_id == peer_id;
    }
    return n;
}

void cancel_reqs_forget_server(struct pooler *p, struct server *s)
{
    if (s->cancels_in_flight == 0)
        return;
    for (struct plist *n = p->cancel_reqs.next; n != &p->cancel_reqs; n = n->next) {
        struct cancel_req *r = plist_entry(n, struct cancel_req, node);
        if (r->server == s)
            r->server = NULL;
    }
    s->cancels_in_flight = 0;
}

void cancel_reqs_expire(struct pooler *p, int64_t now_us)
{
    /* cancel_wait_timeout (PgBouncer's): a cancel that has not been delivered by then (the
     * server's host does not answer, or never closes the connection) is given up, so that
     * a server that cannot be reached does not hold descriptors forever. 0 = wait. */
    int64_t limit = p->cfg->cancel_wait_timeout_ms * 1000;
    struct plist *n, *tmp;
    plist_for_each_safe(n, tmp, &p->cancel_reqs)
    {
        struct cancel_req *r = plist_entry(n, struct cancel_req, node);
        if (r->done) {
            plist_remove(&r->node);
            net_io_free(r->io);
            close(r->fd);
            free(r);
        } else if (limit > 0 && now_us - r->start_us > limit) {
            /* PgBouncer's words ("closing because: cancel_wait_timeout"). */
            long long age = (long long)((now_us - r->start_us) / 1000000);
            if (r->server)
                log_info("pool",
                         "server %llu: cancel request closing because: cancel_wait_timeout "
                         "(age=%llds)",
                         (unsigned long long)r->server->id, age);
            else
                log_info("pool",
                         "cancel request for peer %d closing because: cancel_wait_timeout "
                         "(age=%llds)",
                         r->peer_id, age);
            /* Sent whole, it may still be read and acted on after we close our end: its
             * server must not run another client's query (handout_release_server). */
            if (r->server && r->sent == sizeof(r->pkt))
                r->server->cancel_unsettled = true;
            cancel_req_finish(r);
        }
    }
}

void cancel_reqs_free_all(struct pooler *p)
{
    struct plist *n;
    while ((n = plist_first(&p->cancel_reqs)) != NULL) {
        struct cancel_req *r = plist_entry(n, struct cancel_req, node);
        plist_remove(&r->node);
        net_io_free(r->io);
        close(r->fd);
        free(r);
    }
}

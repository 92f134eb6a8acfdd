/* Send batching: sends held back to the end of the loop turn (batch_defer_send,
 * batch_defer_result) and handed to the kernel in one system call per wave. */
#include "pool/batch.h"

#include "common/log.h"
#include "net/sendq.h"
#include "pool/client.h"
#include "pool/conn.h"
#include "pool/server.h"

/* Deferred sends. Each send wakes a process (a PostgreSQL backend, a client), which on a
 * busy machine preempts the pooler on return from send(); sending in the middle of an epoll
 * batch therefore left the rest of the batch (other clients' requests, other servers'
 * results) waiting in the run queue. Reading every ready socket first and sending afterwards,
 * all in the same loop turn, cut the pooler's and the servers' CPU per transaction
 * (docs/BENCHMARKS.md, "Tried"). Finished results go first: sending one releases its server,
 * which may go at once to a waiting client whose request is then sent in the same turn. */
struct batched_send {
    struct pconn *src;
    int64_t *counter;
};

static void batched_send_done(void *tag, ssize_t result, void *arg)
{
    (void)arg;
    struct batched_send *bs = tag;
    /* Failures are left to the pumps below: their own send() sees the same EAGAIN or error
     * and takes the usual path (wait for writability, or close). */
    if (result > 0)
        conn_sent(bs->src, (size_t)result, bs->counter);
}

static void submit_batch(struct pooler *p)
{
    if (!net_sendq_submit(p->sendq, batched_send_done, NULL))
        log_warning("serve", "io_uring refused a batch of sends; sending with one send() per "
                             "message from now on");
}

/* A TLS destination is left to its pump: io_uring would send the bytes unencrypted. */
static void batch_one(struct pooler *p, struct batched_send *slots, unsigned *used,
                      struct pconn *src, const struct pconn *dst, int64_t *counter)
{
    struct iobuf *b = src->buf;
    if (!b || b->pos >= src->scan || dst->tls)
        return;
    if (*used == POOLER_SEND_BATCH) {
        submit_batch(p);
        *used = 0;
    }
    struct batched_send *bs = &slots[*used];
    bs->src = src;
    bs->counter = counter;
    if (net_sendq_add(p->sendq, dst->fd, b->data + b->pos, src->scan - b->pos, bs))
        (*used)++;
}

static bool has_two(const struct plist *h)
{
    return !plist_empty(h) && h->next->next != h;
}

/* Hands every deferred send of this turn to the kernel in one system call; the pumps that
 * follow then find their bytes gone and only do the bookkeeping (releases, next reads). */
static void send_deferred_batch(struct pooler *p)
{
    /* A single send is cheaper as send() than as a one-entry batch (typical of connection
     * set-up traffic, where turns are small); the pump sends it. */
    bool servers = !plist_empty(&p->flush_servers), clients = !plist_empty(&p->flush_clients);
    if (!(servers && clients) && !has_two(&p->flush_servers) && !has_two(&p->flush_clients))
        return;
    struct batched_send slots[POOLER_SEND_BATCH];
    unsigned used = 0;
    for (struct plist *n = p->flush_servers.next; n != &p->flush_servers; n = n->next) {
        struct server *s = plist_entry(n, struct server, flush_node);
        if (s->state != SV_JUSTFREE && s->client)
            batch_one(p, slots, &used, &s->conn, &s->client->conn, &s->pool->stats.bytes_sent);
    }
    for (struct plist *n = p->flush_clients.next; n != &p->flush_clients; n = n->next) {
        struct client *c = plist_entry(n, struct client, flush_node);
        if (c->state != CL_JUSTFREE && c->server && c->server->state != SV_JUSTFREE)
            batch_one(p, slots, &used, &c->conn, &c->server->conn, &c->pool->stats.bytes_received);
    }
    if (used > 0)
        submit_batch(p);
}

/* Waves: the pumps of one wave release servers to waiting clients, whose requests are
 * deferred again and go out in the next wave's batch. An object pumped for its own deferred
 * send sends directly (send_now), so a send that would block takes the usual writable-edge
 * path instead of coming back; after FLUSH_MAX_WAVES everything is sent directly. */
#define FLUSH_MAX_WAVES 8

static void flush_cb(void *arg)
{
    struct pooler *p = arg;
    struct plist *n;
    p->flushing = true;
    for (int wave = 0; !plist_empty(&p->flush_servers) || !plist_empty(&p->flush_clients); wave++) {
        bool last = wave + 1 >= FLUSH_MAX_WAVES;
        if (p->sendq)
            send_deferred_batch(p);
        struct plist servers, clients;
        plist_init(&servers);
        plist_init(&clients);
        plist_splice_tail(&servers, &p->flush_servers);
        plist_splice_tail(&clients, &p->flush_clients);
        while ((n = plist_first(&servers)) != NULL) {
            struct server *s = plist_entry(n, struct server, flush_node);
            plist_remove(n);
            /* Sends what the batch left, then acts on the ReadyForQuery; a closed server
             * returns at once. */
            s->conn.send_now = true;
            server_pump(s);
            s->conn.send_now = false;
        }
        while ((n = plist_first(&clients)) != NULL) {
            struct client *c = plist_entry(n, struct client, flush_node);
            plist_remove(n);
            c->conn.send_now = true;
            client_pump(c); /* a closed client (JUSTFREE) returns at once */
            c->conn.send_now = false;
        }
        if (last)
            p->flush_direct = true;
    }
    p->flush_direct = false;
    p->flushing = false;
}

static bool flusher_arm(struct pooler *p)
{
    if (!p->flusher) {
        p->flusher = net_timer_new(p->loop, flush_cb, p);
        if (!p->flusher)
            return false;
    }
    if (p->flush_direct)
        return false; /* the flusher gave up batching for this turn: send at once */
    if (!p->flushing && plist_empty(&p->flush_clients) && plist_empty(&p->flush_servers))
        net_timer_activate(p->flusher); /* after the callbacks already due in this turn */
    return true;
}

bool batch_defer_send(struct client *c)
{
    if (!flusher_arm(c->pooler))
        return false;
    if (plist_empty(&c->flush_node))
        plist_append(&c->pooler->flush_clients, &c->flush_node);
    return true;
}

bool batch_defer_result(struct server *s)
{
    struct pooler *p = s->pool->pooler;
    if (!flusher_arm(p))
        return false;
    if (plist_empty(&s->flush_node))
        plist_append(&p->flush_servers, &s->flush_node);
    return true;
}

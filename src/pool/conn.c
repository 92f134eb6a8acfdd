/* Buffer plumbing for one socket: read into the free tail of a borrowed buffer, send an
 * accounted range to the peer in one call. Nothing here looks at message contents. A
 * connection with TLS reads and writes through it; a plain one pays one pointer test.
 *
 * TLS and edge triggering: a TLS read is repeated while it returns TLS_IO_DONE (a short read
 * says nothing about the socket: bytes may wait inside OpenSSL), and may_read drops only
 * when it asks for an edge. A read that needs the writable edge, or a write that needs the
 * readable one, leaves a flag that conn_tls_edges turns into the edge the operation's own
 * path waits for. */
#include "pool/conn.h"

#include <string.h>

#include "common/log.h"
#include "net/tls.h"

static enum fill_result tls_fill(struct pconn *c, struct iobuf *b, size_t want)
{
    size_t got = 0;
    enum tls_io r = tls_read(c->tls, b->data + b->end, want, &got);
    b->end += (uint32_t)got;
    switch (r) {
    case TLS_IO_DONE:
        return FILL_OK; /* the buffer is full or an end is queued: may_read stays set */
    case TLS_IO_WANT_READ:
        /* After a short read (tls_read's shortcut) a peer that shut down still has its
         * close_notify or EOF to give, and no new edge will say so: read on, as the plain
         * path does. */
        if (got && c->closing)
            return FILL_OK;
        c->may_read = false;
        return got ? FILL_OK : FILL_AGAIN;
    case TLS_IO_WANT_WRITE:
        c->may_read = false;
        c->read_wants_write = true;
        c->want_write = true; /* before the registration (first read): registered RW */
        net_io_want_write(c->io);
        return got ? FILL_OK : FILL_WANT_WRITE;
    case TLS_IO_EOF:
        c->may_read = false;
        return FILL_EOF;
    case TLS_IO_ERROR:
        break;
    }
    c->may_read = false;
    return FILL_ERROR;
}

enum fill_result conn_fill(struct pooler *p, struct pconn *c)
{
    if (!c->buf) {
        c->buf = iobuf_get(&p->bufs);
        if (!c->buf)
            return FILL_NO_MEMORY;
        c->scan = 0;
    }
    struct iobuf *b = c->buf;
    uint32_t cap = b->cap;
    if (b->end == cap && b->pos > 0) {
        /* Slide the unsent bytes to the front; only partial headers or an unsent tail are
         * ever moved, never a whole buffer per message. */
        uint32_t n = b->end - b->pos;
        memmove(b->data, b->data + b->pos, n);
        c->scan -= b->pos;
        b->end = n;
        b->pos = 0;
    }
    if (b->end == cap)
        return FILL_FULL;
    size_t want = cap - b->end, got = 0;
    if (c->tls)
        return tls_fill(c, b, want);
    switch (net_recv(c->fd, b->data + b->end, want, &got)) {
    case NET_OK:
        b->end += (uint32_t)got;
        /* Edge-triggered: a short read drained the socket (new bytes raise a new edge),
         * unless the peer shut down, where we must read on until EOF. */
        if (got < want && !c->closing)
            c->may_read = false;
        return FILL_OK;
    case NET_AGAIN:
        c->may_read = false;
        return FILL_AGAIN;
    case NET_EOF:
        c->may_read = false;
        return FILL_EOF;
    case NET_ERROR:
        break;
    }
    c->may_read = false;
    return FILL_ERROR;
}

bool conn_read_budget_spent(struct pconn *c, int *reads, int cap)
{
    if (cap <= 0 || ++*reads < cap || !c->may_read)
        return false;
    log_trace("pool", "fd %d: %d reads this turn (sbuf_loopcnt); more after the others", c->fd,
              cap);
    net_io_read_later(c->io);
    return true;
}

static enum flush_result tls_send(struct pconn *dst, const void *data, size_t len, size_t *sent)
{
    switch (tls_write(dst->tls, data, len, sent)) {
    case TLS_IO_DONE:
        return FLUSH_DONE;
    case TLS_IO_WANT_READ:
        dst->send_wants_read = true;
        return FLUSH_PARTIAL;
    case TLS_IO_WANT_WRITE:
        return FLUSH_PARTIAL;
    case TLS_IO_EOF:
    case TLS_IO_ERROR:
        break;
    }
    return FLUSH_ERROR;
}

enum flush_result conn_send(struct pconn *dst, const void *data, size_t len, size_t *sent)
{
    *sent = 0;
    if (dst->tls)
        return tls_send(dst, data, len, sent);
    switch (net_send(dst->fd, data, len, sent)) {
    case NET_OK:
        return *sent < len ? FLUSH_PARTIAL : FLUSH_DONE;
    case NET_AGAIN:
        *sent = 0;
        return FLUSH_PARTIAL;
    case NET_EOF:
    case NET_ERROR:
        break;
    }
    *sent = 0;
    return FLUSH_ERROR;
}

bool conn_send_all(struct pconn *dst, const void *data, size_t len)
{
    size_t off = 0;
    while (off < len) {
        size_t n = 0;
        enum flush_result r = conn_send(dst, (const uint8_t *)data + off, len - off, &n);
        off += n;
        /* A plain send that took part of it may take the rest; anything else would block. */
        if (r == FLUSH_ERROR || (r == FLUSH_PARTIAL && (n == 0 || dst->tls)))
            return false;
    }
    return true;
}

enum flush_result conn_flush(struct pconn *src, struct pconn *dst, int64_t *counter)
{
    struct iobuf *b = src->buf;
    if (!b || b->pos >= src->scan)
        return FLUSH_DONE;
    size_t n = 0;
    enum flush_result r = conn_send(dst, b->data + b->pos, src->scan - b->pos, &n);
    if (n > 0)
        conn_sent(src, n, counter);
    return r;
}

void conn_sent(struct pconn *src, size_t n, int64_t *counter)
{
    struct iobuf *b = src->buf;
    b->pos += (uint32_t)n;
    if (counter)
        *counter += (int64_t)n;
    if (b->pos == src->scan && b->pos == b->end) {
        b->pos = b->end = 0;
        src->scan = 0;
    }
}

unsigned conn_tls_edges(struct pconn *c, unsigned what)
{
    if ((what & NET_IO_READABLE) && c->send_wants_read) {
        c->send_wants_read = false;
        what |= NET_IO_WRITABLE;
    }
    if ((what & NET_IO_WRITABLE) && c->read_wants_write) {
        c->read_wants_write = false;
        what |= NET_IO_READABLE;
    }
    return what;
}

unsigned conn_note_edges(struct pconn *c, unsigned what)
{
    if (c->tls)
        what = conn_tls_edges(c, what);
    if (what & NET_IO_CLOSED)
        c->closing = true;
    if (what & NET_IO_READABLE)
        c->may_read = true;
    return what;
}

void conn_tls_book_ok(struct pconn *c, struct tls_counters *counts)
{
    if (c->tls_booked)
        return;
    c->tls_booked = true;
    counts->handshakes++;
}

void conn_tls_book_failure(struct pconn *c, struct tls_counters *counts, enum tls_failure why)
{
    if (c->tls_booked)
        return;
    c->tls_booked = true;
    counts->failures[why < TLS_FAILURE_COUNT ? why : TLS_FAILURE_OTHER]++;
}

void conn_tls_book_close(struct pconn *c, struct tls_counters *counts)
{
    if (c->tls)
        conn_tls_book_failure(c, counts, tls_failure_of(c->tls));
}

void conn_release_if_empty(struct pooler *p, struct pconn *c)
{
    if (c->buf && c->buf->pos == c->buf->end) {
        iobuf_put(&p->bufs, c->buf);
        c->buf = NULL;
        c->scan = 0;
    }
}

void conn_drop_buffer(struct pooler *p, struct pconn *c)
{
    if (c->buf) {
        iobuf_put(&p->bufs, c->buf);
        c->buf = NULL;
    }
    c->scan = 0;
    c->body_left = 0;
}

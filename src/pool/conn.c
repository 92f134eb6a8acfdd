/* Buffer plumbing for one socket: read into the free tail of a borrowed buffer, send an
 * accounted range to the peer in one call. Nothing here looks at message contents. */
#include "pool/conn.h"

#include <string.h>

enum fill_result pconn_fill(struct pooler *p, struct pconn *c)
{
    if (!c->buf) {
        c->buf = iobuf_get(&p->bufs);
        if (!c->buf)
            return FILL_NO_MEMORY;
        c->scan = 0;
    }
    struct iobuf *b = c->buf;
    uint32_t cap = p->bufs.size;
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

enum flush_result pconn_flush(struct pconn *src, int dst_fd, int64_t *counter)
{
    struct iobuf *b = src->buf;
    if (!b || b->pos >= src->scan)
        return FLUSH_DONE;
    size_t n = 0;
    switch (net_send(dst_fd, b->data + b->pos, src->scan - b->pos, &n)) {
    case NET_OK:
        pconn_sent(src, n, counter);
        return b->pos < src->scan ? FLUSH_PARTIAL : FLUSH_DONE;
    case NET_AGAIN:
        return FLUSH_PARTIAL;
    case NET_EOF:
    case NET_ERROR:
        break;
    }
    return FLUSH_ERROR;
}

void pconn_sent(struct pconn *src, size_t n, int64_t *counter)
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

void pconn_release_if_empty(struct pooler *p, struct pconn *c)
{
    if (c->buf && c->buf->pos == c->buf->end) {
        iobuf_put(&p->bufs, c->buf);
        c->buf = NULL;
        c->scan = 0;
    }
}

void pconn_drop_buffer(struct pooler *p, struct pconn *c)
{
    if (c->buf) {
        iobuf_put(&p->bufs, c->buf);
        c->buf = NULL;
    }
    c->scan = 0;
    c->body_left = 0;
}

/* I/O buffers lent to connections only while bytes are in flight: an idle client or server
 * holds none, so memory follows activity, not the number of connections. Buffers come from
 * a free list (no malloc on the hot path once warmed up). */
#ifndef PGWARDEN_POOL_IOBUF_H
#define PGWARDEN_POOL_IOBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct iobuf {
    struct iobuf *next_free; /* borrowed: free-list link while unused */
    uint32_t pos;            /* first byte not yet sent on */
    uint32_t end;            /* end of received bytes */
    uint32_t cap;            /* bytes of data: the cache's size, more once grown */
    uint8_t data[];
};

struct iobuf_cache {
    struct iobuf *free_list; /* owned */
    uint32_t size;           /* data bytes per buffer (pkt_buf) */
    size_t n_free;
    size_t n_used;
    size_t max_free; /* keep at most this many unused buffers */
};

void iobuf_cache_init(struct iobuf_cache *cache, uint32_t size);
/* Frees the free list (buffers still lent out must be returned first). */
void iobuf_cache_destroy(struct iobuf_cache *cache);
/* An empty buffer (pos = end = 0), or NULL when out of memory. Return it with iobuf_put. */
struct iobuf *iobuf_get(struct iobuf_cache *cache);
/* Gives the buffer at *buf room for cap bytes (contents and offsets kept; *buf may move).
 * For one message that must be held whole and is larger than pkt_buf: a grown buffer is
 * freed, not kept, when it is put back. False when out of memory (*buf unchanged). */
bool iobuf_grow(struct iobuf **buf, uint32_t cap);
void iobuf_put(struct iobuf_cache *cache, struct iobuf *buf);

#endif

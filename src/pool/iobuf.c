/* Free-list allocator for connection I/O buffers. */
#include "pool/iobuf.h"

#include <stdlib.h>

void iobuf_cache_init(struct iobuf_cache *cache, uint32_t size)
{
    cache->free_list = NULL;
    cache->size = size;
    cache->n_free = 0;
    cache->n_used = 0;
    cache->max_free = 256; /* bounds what a burst leaves behind: 256 x pkt_buf */
}

void iobuf_cache_destroy(struct iobuf_cache *cache)
{
    while (cache->free_list) {
        struct iobuf *b = cache->free_list;
        cache->free_list = b->next_free;
        free(b);
    }
    cache->n_free = 0;
}

struct iobuf *iobuf_get(struct iobuf_cache *cache)
{
    struct iobuf *b = cache->free_list;
    if (b) {
        cache->free_list = b->next_free;
        cache->n_free--;
    } else {
        b = malloc(sizeof(*b) + cache->size);
        if (!b)
            return NULL;
    }
    b->next_free = NULL;
    b->pos = b->end = 0;
    b->cap = cache->size;
    cache->n_used++;
    return b;
}

bool iobuf_grow(struct iobuf **buf, uint32_t cap)
{
    if ((*buf)->cap >= cap)
        return true;
    struct iobuf *b = realloc(*buf, sizeof(*b) + cap);
    if (!b)
        return false;
    b->cap = cap;
    *buf = b;
    return true;
}

void iobuf_put(struct iobuf_cache *cache, struct iobuf *buf)
{
    cache->n_used--;
    if (cache->n_free >= cache->max_free || buf->cap != cache->size) {
        free(buf);
        return;
    }
    buf->next_free = cache->free_list;
    cache->free_list = buf;
    cache->n_free++;
}

/* Buffer plumbing shared by both directions: one recv into a borrowed buffer, one send of an
 * accounted range. */
#ifndef PGWARDEN_POOL_CONN_H
#define PGWARDEN_POOL_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "pool/pool.h"

enum fill_result {
    FILL_OK,    /* bytes were read */
    FILL_AGAIN, /* nothing to read now */
    FILL_FULL,  /* no room: flush first */
    FILL_EOF,
    FILL_ERROR,
    FILL_NO_MEMORY,
};
enum fill_result pconn_fill(struct pooler *p, struct pconn *c);
enum flush_result {
    FLUSH_DONE,
    FLUSH_PARTIAL, /* destination would block */
    FLUSH_ERROR,
};
enum flush_result pconn_flush(struct pconn *src, int dst_fd, int64_t *counter);
/* Books n bytes of src's sendable range as sent (pconn_flush, or a batched send). */
void pconn_sent(struct pconn *src, size_t n, int64_t *counter);
/* Returns the buffer to the cache when it holds nothing. */
void pconn_release_if_empty(struct pooler *p, struct pconn *c);
void pconn_drop_buffer(struct pooler *p, struct pconn *c);

#endif

/* Batched sends: many sends to different sockets handed to the kernel in one system call
 * (io_uring). The pooler queues a loop turn's deferred sends here, so the processes they
 * wake can take the core from the pooler once per turn instead of after every send(), and
 * n sends cost one kernel entry instead of n. Falls back to nothing (NULL queue) where
 * io_uring is unavailable; callers then send one by one. */
#ifndef PGWARDEN_NET_SENDQ_H
#define PGWARDEN_NET_SENDQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct net_sendq;

/* A queue for up to `capacity` sends per batch, or NULL (io_uring missing or disabled);
 * the reason is written to err. */
struct net_sendq *net_sendq_new(unsigned capacity, char *err, size_t err_len);
void net_sendq_free(struct net_sendq *q);

/* Queues a non-blocking send of data[0, len) to fd; tag comes back with its outcome. False
 * when the batch is full (submit first). The bytes must stay put until the batch is
 * submitted. */
bool net_sendq_add(struct net_sendq *q, int fd, const void *data, size_t len, void *tag);
unsigned net_sendq_pending(const struct net_sendq *q);

/* Outcome of one send: bytes sent (> 0), 0 or -EAGAIN when nothing could be sent now,
 * another -errno on a connection error. */
typedef void (*net_sendq_done_fn)(void *tag, ssize_t result, void *arg);
/* Sends everything queued in one system call and reports every outcome through done.
 * Returns false when the kernel refused the batch; nothing was sent then, and done was
 * not called (the caller sends one by one). */
bool net_sendq_submit(struct net_sendq *q, net_sendq_done_fn done, void *arg);

#endif

/* io_uring glue for net_sendq. Sends carry MSG_DONTWAIT, so the kernel runs each one at
 * submission time and posts -EAGAIN instead of parking it: a batch completes inside the
 * io_uring_enter that submits it, exactly like the same send() calls made in a row. */
#include "net/sendq.h"

#include <errno.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct net_sendq {
    struct io_uring ring;
    unsigned capacity;
    unsigned pending;
    bool broken; /* the ring was retired after a refused batch: every add fails */
};

struct net_sendq *net_sendq_new(unsigned capacity, char *err, size_t err_len)
{
    struct net_sendq *q = calloc(1, sizeof(*q));
    if (!q) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    /* One thread submits and reaps; completions need no task work from another context.
     * Older kernels reject these flags: retry without them. */
    int r = io_uring_queue_init(capacity, &q->ring,
                                IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER |
                                    IORING_SETUP_COOP_TASKRUN);
    if (r == -EINVAL)
        r = io_uring_queue_init(capacity, &q->ring, 0);
    if (r < 0) {
        snprintf(err, err_len, "io_uring unavailable: %s", strerror(-r));
        free(q);
        return NULL;
    }
    q->capacity = capacity;
    return q;
}

void net_sendq_free(struct net_sendq *q)
{
    if (!q)
        return;
    if (!q->broken)
        io_uring_queue_exit(&q->ring);
    free(q);
}

bool net_sendq_add(struct net_sendq *q, int fd, const void *data, size_t len, void *tag)
{
    if (q->broken || q->pending == q->capacity)
        return false;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&q->ring);
    if (!sqe)
        return false;
    io_uring_prep_send(sqe, fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    io_uring_sqe_set_data(sqe, tag);
    q->pending++;
    return true;
}

unsigned net_sendq_pending(const struct net_sendq *q)
{
    return q->pending;
}

bool net_sendq_submit(struct net_sendq *q, net_sendq_done_fn done, void *arg)
{
    unsigned want = q->pending;
    if (want == 0)
        return true;
    q->pending = 0;
    int r;
    do
        r = io_uring_submit_and_wait(&q->ring, want);
    while (r == -EINTR);
    if (r <= 0) {
        /* Nothing went out, but the entries sit in the kernel's queue and the next submit
         * would send them after the caller has sent the same bytes itself: retire the ring
         * (the caller sends one by one from now on). */
        io_uring_queue_exit(&q->ring);
        q->broken = true;
        return false;
    }
    for (unsigned seen = 0; seen < (unsigned)r; seen++) {
        struct io_uring_cqe *cqe;
        int w;
        do
            w = io_uring_wait_cqe(&q->ring, &cqe);
        while (w == -EINTR);
        if (w < 0)
            break;
        done(io_uring_cqe_get_data(cqe), cqe->res, arg);
        io_uring_cqe_seen(&q->ring, cqe);
    }
    /* IORING_SETUP_SUBMIT_ALL makes a short count impossible on kernels that take the flag;
     * on older ones a short count leaves entries behind: stop using the ring. */
    if ((unsigned)r != want) {
        io_uring_queue_exit(&q->ring);
        q->broken = true;
    }
    return true;
}

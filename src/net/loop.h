/* The event loop: the only module that includes libevent. Connections get one persistent,
 * edge-triggered read+write registration for their whole life, so parking and resuming a
 * connection never costs an epoll_ctl; listeners are level-triggered and can be paused. */
#ifndef PGWARDEN_NET_LOOP_H
#define PGWARDEN_NET_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/sock.h"

struct net_loop;  /* opaque: owns the event base */
struct net_io;    /* opaque: one fd's registration */
struct net_timer; /* opaque: a one-shot or periodic timer */

enum net_io_what {
    NET_IO_READABLE = 1,
    NET_IO_WRITABLE = 2,
    NET_IO_CLOSED = 4, /* the peer shut down its side (read on until EOF) */
};

enum net_io_mode {
    NET_IO_EDGE_RW,    /* connections: edge-triggered read+write, registered once */
    NET_IO_EDGE_READ,  /* clients: edge-triggered read until net_io_want_write */
    NET_IO_LEVEL_READ, /* listeners: level-triggered read, pausable */
};

typedef void (*net_io_fn)(int fd, unsigned what, void *arg);
typedef void (*net_timer_fn)(void *arg);

/* Returns NULL on failure. Freed by net_loop_free (owner: the caller). */
struct net_loop *net_loop_new(void);
void net_loop_free(struct net_loop *loop);
/* Runs until net_loop_stop. Returns false if the loop could not run. */
__attribute__((warn_unused_result)) bool net_loop_run(struct net_loop *loop);
void net_loop_stop(struct net_loop *loop);
/* Runs one turn without waiting: the callbacks of whatever is ready now, then returns. For
 * code that drives the pooler in-process (the stateful fuzz target); false if the loop could
 * not run. */
__attribute__((warn_unused_result)) bool net_loop_run_once(struct net_loop *loop);
/* Microseconds since the epoch, cached once per loop turn (no system call). */
int64_t net_loop_now_us(struct net_loop *loop);
/* Name of the kernel backend (epoll). */
const char *net_loop_backend(struct net_loop *loop);
/* The libevent event_base (as an opaque pointer) for the one module that uses a libevent
 * facility the loop does not wrap: the HTTP server (src/http), which runs evhttp on this same
 * loop so it needs no thread. Borrowed: valid until net_loop_free. */
void *net_loop_event_base(struct net_loop *loop);

/* Registers fd (which stays owned by the caller). Returns NULL on failure. */
struct net_io *net_io_new(struct net_loop *loop, int fd, enum net_io_mode mode, net_io_fn fn,
                          void *arg);
/* An EDGE_READ registration becomes EDGE_RW for good (one re-registration): call it when a
 * send was partial, before waiting for the writable edge. NULL and RW ios are left alone. */
void net_io_want_write(struct net_io *io);
/* Unregisters and frees; does not close the fd. Safe inside the io's own callback. */
void net_io_free(struct net_io *io);
/* Level-triggered registrations only: stop/start watching (EMFILE back-off, pause). */
void net_io_pause(struct net_io *io);
void net_io_resume(struct net_io *io);
/* Runs io's callback in this loop turn as if its fd had just become readable: for work held
 * back on purpose (SUSPEND), whose edge-triggered wake-up already passed. */
void net_io_activate_read(struct net_io *io);
/* Runs io's callback as readable at the next loop turn, once the loop has looked for other
 * ready sockets and due timers (a zero timer: what PgBouncer's sbuf_loopcnt does); for a
 * connection that stopped reading to let the others go first. */
void net_io_read_later(struct net_io *io);

struct net_timer *net_timer_new(struct net_loop *loop, net_timer_fn fn, void *arg);
/* (Re)arms the timer; periodic timers fire every ms until stopped. */
void net_timer_start(struct net_timer *t, int64_t ms, bool periodic);
void net_timer_stop(struct net_timer *t);
/* Runs the timer's callback once more in this loop turn, after the callbacks already due
 * (no extra epoll_wait, unlike a 0 ms timeout). */
void net_timer_activate(struct net_timer *t);
bool net_timer_pending(const struct net_timer *t);
void net_timer_free(struct net_timer *t);

/* Asynchronous DNS (libevent's evdns, /etc/hosts and resolv.conf): the loop never blocks on
 * a name lookup. */
enum net_resolve_result {
    NET_RESOLVE_DONE,    /* answered at once (hosts file, cache): *out is set */
    NET_RESOLVE_PENDING, /* fn will be called later, unless cancelled */
    NET_RESOLVE_FAILED,  /* err says why (the resolver's reason, without the name) */
};
struct net_resolve; /* opaque: one pending lookup */
/* Lookups use the nameservers and options of path (resolv.conf syntax) instead of the
 * system's; false, with err, when the file cannot be read or names no nameserver. */
bool net_resolve_use_conf(struct net_loop *loop, const char *path, char *err, size_t err_len);
typedef void (*net_resolve_fn)(void *arg, bool ok, const struct net_sockaddr *addr,
                               const char *err);
enum net_resolve_result net_resolve_start(struct net_loop *loop, const char *host, int port,
                                          struct net_sockaddr *out, char *err, size_t err_len,
                                          net_resolve_fn fn, void *arg,
                                          struct net_resolve **handle);
/* fn is not called after this; the handle is gone. */
void net_resolve_cancel(struct net_resolve *r);

/* Installs a signal handler run on the loop (not in signal context). */
__attribute__((warn_unused_result)) bool net_signal_add(struct net_loop *loop, int signo,
                                                        net_timer_fn fn, void *arg);

#endif

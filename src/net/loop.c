/* libevent glue. Kept tiny: the pooler above sees fds, callbacks and timers only. */
#include "net/loop.h"

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_SIGNALS 8

struct signal_ctx {
    net_timer_fn fn;
    void *arg; /* borrowed */
};

/* Where names are looked up before DNS (as libc does). */
#define HOSTS_FILE "/etc/hosts"

struct net_loop {
    struct event_base *base;            /* owned */
    struct evdns_base *dns;             /* owned; created on first lookup, or from resolv_conf */
    struct timespec hosts_mtime;        /* of /etc/hosts when evdns last read it */
    struct event *signals[MAX_SIGNALS]; /* owned */
    struct signal_ctx sigctx[MAX_SIGNALS];
    int n_signals;
};

struct net_io {
    struct event *ev;    /* owned */
    struct event *later; /* owned: the zero timer of net_io_read_later, made on first use */
    net_io_fn fn;
    void *arg; /* borrowed */
    short flags;
};

struct net_timer {
    struct event *ev; /* owned */
    net_timer_fn fn;
    void *arg; /* borrowed */
    bool periodic;
};

struct net_loop *net_loop_new(void)
{
    struct net_loop *loop = calloc(1, sizeof(*loop));
    if (!loop)
        return NULL;
    struct event_config *cfg = event_config_new();
    if (cfg) {
        /* Edge-triggered registrations need a backend that supports them (epoll). */
        event_config_require_features(cfg, EV_FEATURE_ET | EV_FEATURE_EARLY_CLOSE);
        loop->base = event_base_new_with_config(cfg);
        event_config_free(cfg);
    }
    if (!loop->base) {
        free(loop);
        return NULL;
    }
    return loop;
}

void net_loop_free(struct net_loop *loop)
{
    if (!loop)
        return;
    for (int i = 0; i < loop->n_signals; i++)
        event_free(loop->signals[i]);
    if (loop->dns)
        evdns_base_free(loop->dns, 1);
    event_base_free(loop->base);
    free(loop);
}

bool net_loop_run(struct net_loop *loop)
{
    return event_base_dispatch(loop->base) >= 0;
}

bool net_loop_run_once(struct net_loop *loop)
{
    return event_base_loop(loop->base, EVLOOP_NONBLOCK) >= 0;
}

void net_loop_stop(struct net_loop *loop)
{
    event_base_loopbreak(loop->base);
}

int64_t net_loop_now_us(struct net_loop *loop)
{
    struct timeval tv;
    event_base_gettimeofday_cached(loop->base, &tv);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

const char *net_loop_backend(struct net_loop *loop)
{
    return event_base_get_method(loop->base);
}

void *net_loop_event_base(struct net_loop *loop)
{
    return loop->base;
}

static void io_cb(evutil_socket_t fd, short what, void *arg)
{
    struct net_io *io = arg;
    unsigned w = 0;
    if (what & EV_READ)
        w |= NET_IO_READABLE;
    if (what & EV_WRITE)
        w |= NET_IO_WRITABLE;
    if (what & EV_CLOSED)
        w |= NET_IO_CLOSED | NET_IO_READABLE;
    io->fn((int)fd, w, io->arg);
}

static void later_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct net_io *io = arg;
    io->fn((int)event_get_fd(io->ev), NET_IO_READABLE, io->arg);
}

void net_io_read_later(struct net_io *io)
{
    if (!io || !io->ev)
        return;
    if (!io->later)
        io->later = evtimer_new(event_get_base(io->ev), later_cb, io);
    static const struct timeval now = {0, 0};
    if (!io->later || evtimer_add(io->later, &now) != 0)
        event_active(io->ev, EV_READ, 0); /* out of memory: at least not lost */
}

void net_io_activate_read(struct net_io *io)
{
    if (io && io->ev)
        event_active(io->ev, EV_READ, 0);
}

struct net_io *net_io_new(struct net_loop *loop, int fd, enum net_io_mode mode, net_io_fn fn,
                          void *arg)
{
    struct net_io *io = calloc(1, sizeof(*io));
    if (!io)
        return NULL;
    short flags = mode == NET_IO_EDGE_RW     ? (EV_READ | EV_WRITE | EV_CLOSED | EV_PERSIST | EV_ET)
                  : mode == NET_IO_EDGE_READ ? (EV_READ | EV_CLOSED | EV_PERSIST | EV_ET)
                                             : (EV_READ | EV_PERSIST);
    io->fn = fn;
    io->arg = arg;
    io->flags = flags;
    io->ev = event_new(loop->base, fd, flags, io_cb, io);
    if (!io->ev || event_add(io->ev, NULL) != 0) {
        if (io->ev)
            event_free(io->ev);
        free(io);
        return NULL;
    }
    return io;
}

void net_io_want_write(struct net_io *io)
{
    if (!io || (io->flags & EV_WRITE))
        return;
    struct event_base *base = event_get_base(io->ev);
    evutil_socket_t fd = event_get_fd(io->ev);
    event_del(io->ev);
    io->flags |= EV_WRITE;
    /* The new registration polls the socket once: a writable edge that came between the
     * partial send and this call is reported, not lost. */
    event_assign(io->ev, base, fd, io->flags, io_cb, io);
    event_add(io->ev, NULL);
}

void net_io_free(struct net_io *io)
{
    if (!io)
        return;
    event_free(io->ev);
    if (io->later)
        event_free(io->later);
    free(io);
}

void net_io_pause(struct net_io *io)
{
    event_del(io->ev);
}

void net_io_resume(struct net_io *io)
{
    event_add(io->ev, NULL);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct net_timer *t = arg;
    t->fn(t->arg);
}

struct net_timer *net_timer_new(struct net_loop *loop, net_timer_fn fn, void *arg)
{
    struct net_timer *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->fn = fn;
    t->arg = arg;
    t->ev = event_new(loop->base, -1, 0, timer_cb, t);
    if (!t->ev) {
        free(t);
        return NULL;
    }
    return t;
}

void net_timer_start(struct net_timer *t, int64_t ms, bool periodic)
{
    if (periodic != t->periodic) {
        struct event_base *base = event_get_base(t->ev);
        event_free(t->ev);
        t->ev = event_new(base, -1, periodic ? EV_PERSIST : 0, timer_cb, t);
        t->periodic = periodic;
    }
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    evtimer_add(t->ev, &tv);
}

void net_timer_stop(struct net_timer *t)
{
    evtimer_del(t->ev);
}

void net_timer_activate(struct net_timer *t)
{
    event_active(t->ev, EV_TIMEOUT, 0);
}

bool net_timer_pending(const struct net_timer *t)
{
    return evtimer_pending(t->ev, NULL) != 0;
}

void net_timer_free(struct net_timer *t)
{
    if (!t)
        return;
    event_free(t->ev);
    free(t);
}

static void signal_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct signal_ctx *s = arg;
    s->fn(s->arg);
}

bool net_signal_add(struct net_loop *loop, int signo, net_timer_fn fn, void *arg)
{
    if (loop->n_signals == MAX_SIGNALS)
        return false;
    struct signal_ctx *s = &loop->sigctx[loop->n_signals];
    s->fn = fn;
    s->arg = arg;
    struct event *ev = evsignal_new(loop->base, signo, signal_cb, s);
    if (!ev || evsignal_add(ev, NULL) != 0) {
        if (ev)
            event_free(ev);
        return false;
    }
    loop->signals[loop->n_signals++] = ev;
    return true;
}

struct net_resolve {
    struct evdns_getaddrinfo_request *req; /* borrowed: owned by evdns until the callback */
    net_resolve_fn fn;
    void *arg; /* borrowed */
    bool in_start;
    bool done_early;
    bool cancelled;
    bool ok;
    struct net_sockaddr addr;
    char err[160];
};

static void resolve_cb(int result, struct evutil_addrinfo *res, void *arg)
{
    struct net_resolve *r = arg;
    r->ok = false;
    if (result == 0 && res && res->ai_addrlen <= sizeof(r->addr.ss)) {
        memcpy(&r->addr.ss, res->ai_addr, res->ai_addrlen);
        r->addr.len = (socklen_t)res->ai_addrlen;
        r->ok = true;
    } else {
        snprintf(r->err, sizeof(r->err), "%s", evutil_gai_strerror(result ? result : -1));
    }
    if (res)
        evutil_freeaddrinfo(res);
    if (r->in_start) {
        r->done_early = true; /* net_resolve_start reports it and frees r */
        return;
    }
    if (!r->cancelled)
        r->fn(r->arg, r->ok, &r->addr, r->err);
    free(r);
}

/* evdns's codes for a resolv.conf it cannot use. */
static const char *resolv_conf_error(int code)
{
    static const char *const why[] = {
        [1] = "cannot open it", [2] = "cannot stat it", [3] = "it is too large",
        [4] = "out of memory",  [5] = "short read",     [6] = "it lists no nameserver",
    };
    return code > 0 && code < (int)(sizeof(why) / sizeof(why[0])) ? why[code] : "unknown error";
}

bool net_resolve_use_conf(struct net_loop *loop, const char *path, char *err, size_t err_len)
{
    struct evdns_base *dns = evdns_base_new(loop->base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (!dns) {
        snprintf(err, err_len, "cannot initialise the DNS resolver");
        return false;
    }
    /* DNS_OPTIONS_ALL: nameservers, search, options, and the hosts file. */
    int code = evdns_base_resolv_conf_parse(dns, DNS_OPTIONS_ALL, path);
    if (code) {
        snprintf(err, err_len, "resolv_conf %s: %s", path, resolv_conf_error(code));
        evdns_base_free(dns, 0);
        return false;
    }
    if (loop->dns)
        evdns_base_free(loop->dns, 1);
    loop->dns = dns;
    struct stat hosts;
    if (stat(HOSTS_FILE, &hosts) == 0)
        loop->hosts_mtime = hosts.st_mtim;
    return true;
}

enum net_resolve_result net_resolve_start(struct net_loop *loop, const char *host, int port,
                                          struct net_sockaddr *out, char *err, size_t err_len,
                                          net_resolve_fn fn, void *arg, struct net_resolve **handle)
{
    *handle = NULL;
    struct stat hosts;
    bool have_hosts = stat(HOSTS_FILE, &hosts) == 0;
    if (!loop->dns) {
        loop->dns = evdns_base_new(loop->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                                   EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        if (!loop->dns) {
            snprintf(err, err_len, "cannot initialise the DNS resolver");
            return NET_RESOLVE_FAILED;
        }
        if (have_hosts)
            loop->hosts_mtime = hosts.st_mtim;
    } else if (have_hosts && (hosts.st_mtim.tv_sec != loop->hosts_mtime.tv_sec ||
                              hosts.st_mtim.tv_nsec != loop->hosts_mtime.tv_nsec)) {
        /* evdns reads the hosts file once; a line added or removed later must count (a
         * lookup happens only when a pool's cached address has expired, so one stat is
         * cheap). */
        evdns_base_clear_host_addresses(loop->dns);
        (void)evdns_base_load_hosts(loop->dns, HOSTS_FILE);
        loop->hosts_mtime = hosts.st_mtim;
    }
    struct net_resolve *r = calloc(1, sizeof(*r));
    if (!r) {
        snprintf(err, err_len, "out of memory");
        return NET_RESOLVE_FAILED;
    }
    r->fn = fn;
    r->arg = arg;
    r->in_start = true;
    struct evutil_addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    r->req = evdns_getaddrinfo(loop->dns, host, portstr, &hints, resolve_cb, r);
    r->in_start = false;
    if (r->done_early) {
        enum net_resolve_result res = r->ok ? NET_RESOLVE_DONE : NET_RESOLVE_FAILED;
        if (r->ok)
            *out = r->addr;
        else
            snprintf(err, err_len, "%s", r->err);
        free(r);
        return res;
    }
    if (!r->req) {
        /* evdns_getaddrinfo returns NULL only after calling back; defensive. */
        snprintf(err, err_len, "lookup not started");
        free(r);
        return NET_RESOLVE_FAILED;
    }
    *handle = r;
    return NET_RESOLVE_PENDING;
}

void net_resolve_cancel(struct net_resolve *r)
{
    if (!r)
        return;
    r->cancelled = true;
    evdns_getaddrinfo_cancel(r->req); /* calls back with EVUTIL_EAI_CANCEL, which frees r */
}

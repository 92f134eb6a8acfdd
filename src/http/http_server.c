/* evhttp on the pooler's loop. Design notes:
 *
 * - One route table maps a path to its handler and says whether it needs the bearer token
 *   (/healthz never does: a liveness probe must work without secrets).
 * - libevent 2.1 tells nobody when evhttp drops a connection (evhttp_set_max_connections
 *   only exists from 2.2, and a filter bufferevent, whose free hook would tell, stalls and
 *   truncates evhttp's replies in 2.1). So connections are tracked by their socket: the
 *   bevcb hook notes each new connection's bufferevent, a callback later in the same loop
 *   turn records its fd with the socket's inode, and a sweep every second drops the entries
 *   whose fd no longer names that socket (evhttp closed it). That gives (a) a cap: at
 *   HTTP_MAX_CONNECTIONS the listener stops accepting, so further clients wait in the
 *   kernel's backlog and use no descriptor of ours (HTTP can never starve the pooler of
 *   file descriptors); and (b) an absolute lifetime: evhttp's timeouts are per read, so a
 *   client trickling one header byte at a time (slowloris) would otherwise stay for hours;
 *   the sweep shuts such a socket down and evhttp frees the connection on its own paths;
 *   and (c) a cap per peer address, so that one peer cannot hold every slot.
 * - Handlers answer synchronously from the pooler's state; /metrics renders in one pass
 *   (see bench/metrics_scrape.py for its time with 1,000 pools). */
#include "http/http_server.h"

#include <errno.h>
#include <fcntl.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <openssl/crypto.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "http/api.h"
#include "http/metrics.h"
#include "live/readiness.h"
#include "net/loop.h"
#include "net/sock.h"
#include "pool/pool.h"

#define HTTP_MAX_CONNECTIONS  64
#define HTTP_MAX_PER_PEER     16   /* open connections from one address */
#define HTTP_IO_TIMEOUT_S     10   /* no byte read or written for this long: closed */
#define HTTP_CONN_LIFETIME_S  30   /* any connection, however busy, is closed after this */
#define HTTP_MAX_HEADERS_SIZE 8192 /* request line and headers together */
#define HTTP_MAX_BODY_SIZE    65536
#define HTTP_BACKLOG          64
#define HTTP_TOKEN_MAX        4096
#define HTTP_MAX_FOLLOWERS    16 /* open /api/v1/events?follow streams */
/* Most bytes read ahead from one connection. evhttp leaves reading on while it writes a reply
 * (to notice a close), with nothing consuming what arrives; without a bound a peer sending
 * while its reply streams (an event stream, a large /metrics) grew the input buffer by
 * hundreds of MB a second. At the bound the socket is left unread, so the peer's sends block
 * in the kernel. It is above the largest request evhttp accepts (headers, body, chunk
 * framing), so a request can always be read whole. */
#define HTTP_MAX_READ_AHEAD (4 * (HTTP_MAX_HEADERS_SIZE + HTTP_MAX_BODY_SIZE))
/* The listener may accept a few more in the turn that reaches the cap. */
#define HTTP_TRACK_SLOTS (HTTP_MAX_CONNECTIONS + 16)

/* One HTTP connection, known by its socket. */
struct http_track {
    int fd;
    dev_t dev;
    ino_t ino;
    int64_t start_us;
    struct net_addr peer; /* its address (the port is not compared) */
};

/* An open event stream: the request stays unanswered-to-the-end, chunks are sent as events
 * come. Known by its connection so the close callback can find it. */
struct http_follower {
    struct evhttp_request *req;     /* borrowed: valid until its connection closes */
    struct evhttp_connection *conn; /* borrowed */
    uint64_t last_seq;              /* newest event sent */
};

struct http_server {
    struct pooler *p;                  /* borrowed */
    struct event_base *base;           /* borrowed: the pooler's loop */
    struct evhttp *http;               /* owned */
    struct evhttp_bound_socket *bound; /* owned by http */
    struct evconnlistener *listener;   /* borrowed from bound */
    struct event *adopt;               /* owned: records new connections' fds */
    struct event *sweep;               /* owned: every second */
    char *listen;                      /* owned: http_listen as bound (reload compares) */
    char *token;                       /* owned: bearer token, NULL = none */
    /* New connections whose fd is not known yet: one reference each until adopted. */
    struct bufferevent *pending[HTTP_TRACK_SLOTS];
    int n_pending;
    struct http_track tracks[HTTP_TRACK_SLOTS];
    int n_tracks;
    bool paused;        /* at the cap: the listener is disabled */
    int refused_peer;   /* connections closed since the last sweep: HTTP_MAX_PER_PEER */
    bool refused_known; /* the log said so already (once per burst) */
    struct http_follower followers[HTTP_MAX_FOLLOWERS];
    int n_followers;
    struct api_cache *api_answers;       /* owned: the reading actions' shared answers */
    struct metrics_views *metrics_views; /* the pools' values /metrics streams share (metrics.h) */
};

/* ---- configuration: address and token ---- */

/* "port" (on 127.0.0.1), "host:port", "[v6addr]:port", "*:port". */
static bool parse_listen(const char *text, char *host, size_t host_len, int *port, char *err,
                         size_t err_len)
{
    const char *port_text = text;
    snprintf(host, host_len, "127.0.0.1");
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close || close[1] != ':' || (size_t)(close - text - 1) >= host_len) {
            snprintf(err, err_len, "http_listen: '%.64s' is not [address]:port", text);
            return false;
        }
        snprintf(host, host_len, "%.*s", (int)(close - text - 1), text + 1);
        port_text = close + 2;
    } else {
        const char *colon = strrchr(text, ':');
        if (colon) {
            if ((size_t)(colon - text) >= host_len || colon == text) {
                snprintf(err, err_len, "http_listen: '%.64s' is not host:port", text);
                return false;
            }
            snprintf(host, host_len, "%.*s", (int)(colon - text), text);
            port_text = colon + 1;
        }
    }
    char *end;
    errno = 0;
    long v = strtol(port_text, &end, 10);
    if (errno || end == port_text || *end || v < 1 || v > 65535) {
        snprintf(err, err_len, "http_listen: '%.64s' has no valid port (1-65535)", text);
        return false;
    }
    *port = (int)v;
    return true;
}

/* The token file's first line, trimmed; relative paths are relative to the config file. */
static char *read_token_file(const char *path, const char *config_file, char *err, size_t err_len)
{
    char full[4096];
    const char *slash = config_file ? strrchr(config_file, '/') : NULL;
    if (path[0] != '/' && slash)
        snprintf(full, sizeof(full), "%.*s/%s", (int)(slash - config_file), config_file, path);
    else
        snprintf(full, sizeof(full), "%s", path);
    /* O_NONBLOCK and the regular-file check: a FIFO put there would otherwise block the
     * event loop on a reload, waiting for a writer. */
    int fd = open(full, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, err_len, "http_auth_token_file %s: %s", full,
                 fd < 0 ? strerror(errno) : "not a regular file");
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    char line[HTTP_TOKEN_MAX];
    ssize_t got = read(fd, line, sizeof(line) - 1);
    close(fd);
    line[got > 0 ? got : 0] = '\0';
    size_t n = strcspn(line, "\r\n");
    while (n > 0 && (line[n - 1] == ' ' || line[n - 1] == '\t'))
        n--;
    if (n == 0) {
        snprintf(err, err_len, "http_auth_token_file %s: empty", full);
        return NULL;
    }
    char *tok = strndup(line, n);
    explicit_bzero(line, sizeof(line));
    if (!tok)
        snprintf(err, err_len, "out of memory");
    return tok;
}

static void token_free(char *tok)
{
    if (tok) {
        explicit_bzero(tok, strlen(tok));
        free(tok);
    }
}

/* Returns true with *out set (NULL = no token configured), false with err set. */
static bool load_token(const struct pooler_config *cfg, char **out, char *err, size_t err_len)
{
    *out = NULL;
    if (cfg->http_auth_token_file && cfg->http_auth_token_file[0]) {
        *out = read_token_file(cfg->http_auth_token_file, cfg->config_file, err, err_len);
        return *out != NULL;
    }
    if (cfg->http_auth_token && cfg->http_auth_token[0]) {
        *out = strdup(cfg->http_auth_token);
        if (!*out) {
            snprintf(err, err_len, "out of memory");
            return false;
        }
    }
    return true;
}

/* ---- connection accounting ---- */

static int64_t now_us(const struct http_server *srv)
{
    return net_loop_now_us(srv->p->loop);
}

static void update_pause(struct http_server *srv)
{
    int n = srv->n_pending + srv->n_tracks;
    if (!srv->paused && n >= HTTP_MAX_CONNECTIONS) {
        evconnlistener_disable(srv->listener);
        srv->paused = true;
        log_warning("http", "%d HTTP connections open: not accepting more until some close", n);
    } else if (srv->paused && n < HTTP_MAX_CONNECTIONS) {
        evconnlistener_enable(srv->listener);
        srv->paused = false;
    }
}

/* Whether the tracked connection is still the socket it was (evhttp has not closed it). */
static bool track_open(const struct http_track *t)
{
    struct stat st;
    return fstat(t->fd, &st) == 0 && st.st_ino == t->ino && st.st_dev == t->dev;
}

static bool same_peer(const struct net_addr *a, const struct net_addr *b)
{
    return a->family == b->family && !memcmp(a->ip, b->ip, sizeof(a->ip));
}

/* Open connections from peer's address. The cap alone let one peer hold every slot (each for
 * its lifetime, then reconnect), and /healthz, a liveness probe's endpoint, went unanswered. */
static int peer_connections(const struct http_server *srv, const struct net_addr *peer)
{
    int n = 0;
    for (int i = 0; i < srv->n_tracks; i++)
        n += same_peer(&srv->tracks[i].peer, peer) && track_open(&srv->tracks[i]);
    return n;
}

/* Runs once the accepting callback has returned (event_active: the same loop turn), when
 * evhttp has given the new connections their fds. A connection evhttp dropped meanwhile is
 * still valid memory thanks to our reference; its fd then names no socket, or another one,
 * and the sweep sorts that out. */
static void adopt_cb(evutil_socket_t fd_unused, short what, void *arg)
{
    (void)fd_unused;
    (void)what;
    struct http_server *srv = arg;
    for (int i = 0; i < srv->n_pending; i++) {
        struct bufferevent *bev = srv->pending[i];
        evutil_socket_t fd = bufferevent_getfd(bev);
        struct stat st;
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        if (fd >= 0 && srv->n_tracks < HTTP_TRACK_SLOTS && fstat(fd, &st) == 0 &&
            S_ISSOCK(st.st_mode) && getpeername(fd, (struct sockaddr *)&ss, &len) == 0) {
            struct net_addr peer;
            net_addr_from_sockaddr(&peer, (struct sockaddr *)&ss, len);
            if (peer_connections(srv, &peer) >= HTTP_MAX_PER_PEER) {
                /* evhttp sees EOF and frees it, in this turn or the next; untracked, it
                 * takes no slot meanwhile. */
                shutdown(fd, SHUT_RDWR);
                srv->refused_peer++;
            } else {
                struct http_track *t = &srv->tracks[srv->n_tracks++];
                t->fd = fd;
                t->dev = st.st_dev;
                t->ino = st.st_ino;
                t->start_us = now_us(srv);
                t->peer = peer;
            }
        }
        bufferevent_decref(bev);
    }
    srv->n_pending = 0;
    update_pause(srv);
}

static struct bufferevent *new_conn_bev_cb(struct event_base *base, void *arg)
{
    struct http_server *srv = arg;
    /* The same bufferevent evhttp would make itself (it closes the fd on its own). */
    struct bufferevent *bev = bufferevent_socket_new(base, -1, 0);
    if (!bev)
        return NULL;
    bufferevent_setwatermark(bev, EV_READ, 0, HTTP_MAX_READ_AHEAD);
    if (srv->n_pending == HTTP_TRACK_SLOTS)
        return bev; /* served, uncounted */
    /* Our reference keeps the memory valid should evhttp drop the connection before
     * adopt_cb runs. */
    bufferevent_incref(bev);
    srv->pending[srv->n_pending++] = bev;
    event_active(srv->adopt, EV_TIMEOUT, 1);
    update_pause(srv);
    return bev;
}

static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *text);

/* Sends a follower the events it has not seen, or a comment line that keeps the connection
 * from timing out. */
static void follower_push(struct http_server *srv, struct http_follower *f)
{
    struct evbuffer *b = evbuffer_new();
    if (!b)
        return;
    uint64_t last = api_write_events_sse(srv->p, f->last_seq, b);
    if (last == f->last_seq)
        evbuffer_add_printf(b, ": keepalive\n\n");
    f->last_seq = last;
    evhttp_send_reply_chunk(f->req, b);
    evbuffer_free(b);
}

/* A reply still streaming when its client went away: libevent detaches the request from the
 * dead connection and leaves it to us; ending the reply frees it. (At shutdown the request is
 * still attached and goes with its connection.) */
static void release_orphaned_request(struct evhttp_request *req)
{
    if (req && !evhttp_request_get_connection(req))
        evhttp_send_reply_end(req);
}

static void follower_closed(struct evhttp_connection *conn, void *arg)
{
    struct http_server *srv = arg;
    for (int i = 0; i < srv->n_followers; i++) {
        if (srv->followers[i].conn == conn) {
            release_orphaned_request(srv->followers[i].req);
            srv->followers[i] = srv->followers[--srv->n_followers];
            return;
        }
    }
}

/* GET /api/v1/events?follow[&since=N]: an event stream (text/event-stream). Like every HTTP
 * connection it ends after HTTP_CONN_LIFETIME_S; EventSource clients reconnect by themselves
 * and resume with Last-Event-ID. */
static void follow_events(struct http_server *srv, struct evhttp_request *req, const char *query)
{
    if (srv->n_followers >= HTTP_MAX_FOLLOWERS) {
        reply_text(req, 503, "Service Unavailable", "too many event streams open");
        return;
    }
    uint64_t since = api_events_since(query);
    const char *resume = evhttp_find_header(evhttp_request_get_input_headers(req), "Last-Event-ID");
    if (resume)
        since = api_parse_seq(resume, strlen(resume));
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "text/event-stream");
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_send_reply_start(req, 200, "OK");
    struct http_follower *f = &srv->followers[srv->n_followers++];
    f->req = req;
    f->conn = evhttp_request_get_connection(req);
    f->last_seq = since;
    evhttp_connection_set_closecb(f->conn, follower_closed, srv);
    follower_push(srv, f);
}

static void sweep_cb(evutil_socket_t fd_unused, short what, void *arg)
{
    (void)fd_unused;
    (void)what;
    struct http_server *srv = arg;
    int64_t now = now_us(srv);
    int kept = 0;
    if (srv->refused_peer && !srv->refused_known)
        log_warning("http",
                    "closed %d HTTP connections from addresses that already had %d open "
                    "(logged once until a second passes without any)",
                    srv->refused_peer, HTTP_MAX_PER_PEER);
    srv->refused_known = srv->refused_peer > 0;
    srv->refused_peer = 0;
    for (int i = 0; i < srv->n_tracks; i++) {
        struct http_track *t = &srv->tracks[i];
        /* Closed by evhttp (the fd is gone or names another socket now): forget it. */
        if (!track_open(t))
            continue;
        if (now - t->start_us > (int64_t)HTTP_CONN_LIFETIME_S * 1000000) {
            /* evhttp sees EOF or a write error and frees the connection; the next sweep
             * finds the fd closed. Shutting down again in that second is harmless. */
            log_debug("http", "closing an HTTP connection older than %d s (fd %d)",
                      HTTP_CONN_LIFETIME_S, t->fd);
            shutdown(t->fd, SHUT_RDWR);
        }
        srv->tracks[kept++] = *t;
    }
    srv->n_tracks = kept;
    update_pause(srv);
    for (int i = 0; i < srv->n_followers; i++)
        follower_push(srv, &srv->followers[i]);
}

/* ---- endpoints ---- */

static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *text)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "text/plain; charset=utf-8");
    evhttp_add_header(h, "Cache-Control", "no-store");
    struct evbuffer *b = evbuffer_new();
    if (b)
        evbuffer_add_printf(b, "%s\n", text);
    evhttp_send_reply(req, code, reason, b);
    if (b)
        evbuffer_free(b);
}

static void handle_healthz(struct http_server *srv, struct evhttp_request *req)
{
    (void)srv;
    reply_text(req, 200, "OK", "ok");
}

static void handle_readyz(struct http_server *srv, struct evhttp_request *req)
{
    char reason[256];
    if (readiness_check(srv->p, reason, sizeof(reason)) == READINESS_READY)
        reply_text(req, 200, "OK", "ready");
    else
        reply_text(req, 503, "Service Unavailable", reason);
}

/* A /metrics answer larger than one slice goes out in chunks, one slice per loop turn, so
 * pooling is never held up for long by a scrape of many pools. */
#define METRICS_SLICE_BYTES (256 * 1024)

struct metrics_stream {
    struct evhttp_request *req;     /* borrowed: valid until its connection closes */
    struct evhttp_connection *conn; /* borrowed */
    struct metrics_render *render;  /* owned */
    struct event *next;             /* owned: the next slice, in a later loop turn */
};

static void metrics_stream_free(struct metrics_stream *st)
{
    evhttp_connection_set_closecb(st->conn, NULL, NULL);
    event_free(st->next);
    metrics_render_free(st->render);
    free(st);
}

static void metrics_stream_closed(struct evhttp_connection *conn, void *arg)
{
    (void)conn;
    struct metrics_stream *st = arg;
    release_orphaned_request(st->req);
    metrics_stream_free(st);
}

/* A zero timeout, not event_active: timers run after the loop has polled for I/O again, so
 * every slice lets the pooler's sockets in first. */
static void metrics_stream_later(struct metrics_stream *st)
{
    static const struct timeval now = {0, 0};
    event_add(st->next, &now);
}

/* The last chunk is out of evhttp's buffer (the peer read it): the next slice may go. */
static void metrics_stream_written(struct evhttp_connection *conn, void *arg)
{
    (void)conn;
    metrics_stream_later(arg);
}

/* Sends one slice; the next is rendered once this one is out, so a scrape holds at most a
 * slice in memory. Rendering ahead of the peer kept the whole exposition (9 MB with 1,000
 * pools) buffered for each scraper that does not read, for up to its lifetime. */
static void metrics_stream_send(struct metrics_stream *st, struct evbuffer *b)
{
    if (evbuffer_get_length(b) == 0 || evhttp_request_get_command(st->req) == EVHTTP_REQ_HEAD) {
        /* evhttp sends no body (HEAD) or there is none: no write will report back. */
        evhttp_send_reply_chunk(st->req, b);
        metrics_stream_later(st);
        return;
    }
    evhttp_send_reply_chunk_with_cb(st->req, b, metrics_stream_written, st);
}

static void metrics_stream_slice(evutil_socket_t fd_unused, short what, void *arg)
{
    (void)fd_unused;
    (void)what;
    struct metrics_stream *st = arg;
    struct evbuffer *b = evbuffer_new();
    enum metrics_step step =
        b ? metrics_render_step(st->render, b, METRICS_SLICE_BYTES) : METRICS_FAILED;
    if (step == METRICS_MORE) {
        metrics_stream_send(st, b);
        evbuffer_free(b);
        return;
    }
    if (b && evbuffer_get_length(b))
        evhttp_send_reply_chunk(st->req, b);
    if (b)
        evbuffer_free(b);
    /* Done, or out of memory: a cut-short exposition fails the scrape, which is honest. */
    struct evhttp_request *req = st->req;
    metrics_stream_free(st);
    evhttp_send_reply_end(req);
}

static void handle_metrics(struct http_server *srv, struct evhttp_request *req)
{
    struct metrics_render *r = metrics_render_begin(srv->p, &srv->metrics_views);
    struct evbuffer *b = r ? evbuffer_new() : NULL;
    enum metrics_step step = b ? metrics_render_step(r, b, METRICS_SLICE_BYTES) : METRICS_FAILED;
    if (step == METRICS_FAILED) {
        if (b)
            evbuffer_free(b);
        metrics_render_free(r);
        reply_text(req, 500, "Internal Server Error", "out of memory");
        return;
    }
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", METRICS_CONTENT_TYPE);
    evhttp_add_header(h, "Cache-Control", "no-store");
    struct metrics_stream *st = step == METRICS_MORE ? calloc(1, sizeof(*st)) : NULL;
    if (st)
        st->next = event_new(srv->base, -1, 0, metrics_stream_slice, st);
    if (step == METRICS_DONE || !st || !st->next) {
        /* It fit in one slice (or no memory to stream: send what there is, all at once). */
        while (step == METRICS_MORE)
            step = metrics_render_step(r, b, (size_t)-1);
        if (st)
            free(st);
        metrics_render_free(r);
        evhttp_send_reply(req, 200, "OK", b);
        evbuffer_free(b);
        return;
    }
    st->req = req;
    st->conn = evhttp_request_get_connection(req);
    st->render = r;
    evhttp_connection_set_closecb(st->conn, metrics_stream_closed, st);
    evhttp_send_reply_start(req, 200, "OK");
    metrics_stream_send(st, b);
    evbuffer_free(b);
}

struct route {
    const char *path;
    bool needs_token;
    void (*handle)(struct http_server *srv, struct evhttp_request *req);
};

/* /api/v1/<action> (http/api.c): GET reads, POST acts (only with a token configured). */
static void handle_api(struct http_server *srv, struct evhttp_request *req)
{
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    bool post = evhttp_request_get_command(req) == EVHTTP_REQ_POST;
    if (!post && api_is_event_stream(evhttp_uri_get_path(uri), evhttp_uri_get_query(uri))) {
        follow_events(srv, req, evhttp_uri_get_query(uri));
        return;
    }
    /* evhttp already refused bodies above HTTP_MAX_BODY_SIZE. */
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = post ? evbuffer_get_length(in) : 0;
    char *body = malloc(n + 1);
    struct evbuffer *b = body ? evbuffer_new() : NULL;
    if (!b) {
        free(body);
        reply_text(req, 500, "Internal Server Error", "out of memory");
        return;
    }
    evbuffer_copyout(in, body, n);
    body[n] = '\0';
    int status = api_handle(srv->p, srv->api_answers, evhttp_uri_get_path(uri), post, body,
                            srv->token != NULL, evhttp_uri_get_query(uri), b);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "application/json");
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_send_reply(req, status, status == 200 ? "OK" : "Error", b);
    evbuffer_free(b);
    free(body);
}

static const struct route API_ROUTE = {"/api/v1/", true, handle_api};

/* /api/v1/<action> routes join this table. */
static const struct route ROUTES[] = {
    {"/healthz", false, handle_healthz},
    {"/readyz", true, handle_readyz},
    {"/metrics", true, handle_metrics},
};

/* Constant-time for a given length: the token's bytes cannot be found one at a time from
 * response times (its length can, which is no help to a guesser). */
static bool token_ok(const struct http_server *srv, struct evhttp_request *req)
{
    const char *auth = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0)
        return false;
    const char *given = auth + 7;
    while (*given == ' ')
        given++;
    size_t n = strlen(srv->token);
    return strlen(given) == n && CRYPTO_memcmp(given, srv->token, n) == 0;
}

static void request_cb(struct evhttp_request *req, void *arg)
{
    struct http_server *srv = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    const struct route *route = NULL;
    for (size_t i = 0; path && i < sizeof(ROUTES) / sizeof(ROUTES[0]); i++)
        if (!strcmp(path, ROUTES[i].path))
            route = &ROUTES[i];
    if (!route && api_is_route(path))
        route = &API_ROUTE;
    /* Unknown paths need the token too, so an unauthenticated client learns nothing. */
    if ((!route || route->needs_token) && srv->token && !token_ok(srv, req)) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
                          "Bearer realm=\"pgwarden\"");
        reply_text(req, 401, "Unauthorized", "a valid bearer token is required");
        return;
    }
    if (!route) {
        reply_text(req, 404, "Not Found",
                   "not found (try /healthz, /readyz, /metrics, /api/v1/<action>)");
        return;
    }
    if (evhttp_request_get_command(req) == EVHTTP_REQ_POST && route != &API_ROUTE) {
        reply_text(req, 405, "Method Not Allowed", "only GET and HEAD");
        return;
    }
    route->handle(srv, req);
}

/* ---- lifecycle ---- */

enum http_start_result http_server_start(struct pooler *p, struct http_server **out, char *err,
                                         size_t err_len)
{
    *out = NULL;
    const struct pooler_config *cfg = p->cfg;
    if (!cfg->http_listen || !cfg->http_listen[0])
        return HTTP_START_OFF;
    char host[128];
    int port;
    if (!parse_listen(cfg->http_listen, host, sizeof(host), &port, err, err_len))
        return HTTP_START_FAILED;
    struct http_server *srv = calloc(1, sizeof(*srv));
    if (!srv) {
        snprintf(err, err_len, "out of memory");
        return HTTP_START_FAILED;
    }
    srv->p = p;
    srv->base = net_loop_event_base(p->loop);
    if (!load_token(cfg, &srv->token, err, err_len))
        goto fail;
    srv->listen = strdup(cfg->http_listen);
    srv->http = evhttp_new(srv->base);
    if (!srv->listen || !srv->http) {
        snprintf(err, err_len, "cannot create the HTTP server");
        goto fail;
    }
    char lerr[256];
    int fd = net_listen_tcp(host, port, HTTP_BACKLOG, false, lerr, sizeof(lerr));
    if (fd < 0) {
        snprintf(err, err_len, "http_listen %s: %s", cfg->http_listen, lerr);
        goto fail;
    }
    srv->bound = evhttp_accept_socket_with_handle(srv->http, fd);
    if (!srv->bound) {
        close(fd);
        snprintf(err, err_len, "http_listen %s: cannot watch the socket", cfg->http_listen);
        goto fail;
    }
    srv->listener = evhttp_bound_socket_get_listener(srv->bound);
    srv->adopt = event_new(srv->base, -1, 0, adopt_cb, srv);
    srv->sweep = event_new(srv->base, -1, EV_PERSIST, sweep_cb, srv);
    srv->api_answers = api_cache_new();
    struct timeval second = {.tv_sec = 1};
    if (!srv->adopt || !srv->sweep || !srv->api_answers || event_add(srv->sweep, &second) != 0) {
        snprintf(err, err_len, "cannot create the HTTP timers");
        goto fail;
    }
    evhttp_set_timeout(srv->http, HTTP_IO_TIMEOUT_S);
    evhttp_set_max_headers_size(srv->http, HTTP_MAX_HEADERS_SIZE);
    evhttp_set_max_body_size(srv->http, HTTP_MAX_BODY_SIZE);
    evhttp_set_allowed_methods(srv->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST);
    evhttp_set_bevcb(srv->http, new_conn_bev_cb, srv);
    evhttp_set_gencb(srv->http, request_cb, srv);
    log_info("http", "HTTP listening on %s%s%s:%d (/healthz, /readyz, /metrics%s)",
             strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "", port,
             srv->token ? "; bearer token required" : "");
    *out = srv;
    return HTTP_START_OK;
fail:
    http_server_stop(srv);
    return HTTP_START_FAILED;
}

void http_server_reload(struct http_server *h)
{
    if (!h)
        return;
    const struct pooler_config *cfg = h->p->cfg;
    if (strcmp(cfg->http_listen ? cfg->http_listen : "", h->listen))
        log_warning("http", "reload: http_listen changes need a restart; still serving on %s",
                    h->listen);
    char err[512];
    char *tok;
    if (!load_token(cfg, &tok, err, sizeof(err))) {
        log_error("http", "reload: %s; keeping the current token", err);
        return;
    }
    token_free(h->token);
    h->token = tok;
}

void http_server_stop(struct http_server *h)
{
    if (!h)
        return;
    for (int i = 0; i < h->n_pending; i++)
        bufferevent_decref(h->pending[i]);
    if (h->adopt)
        event_free(h->adopt);
    if (h->sweep)
        event_free(h->sweep);
    h->n_followers = 0; /* their connections go with evhttp below */
    /* Frees the listener and every connection. */
    if (h->http)
        evhttp_free(h->http);
    api_cache_free(h->api_answers);
    free(h->listen);
    token_free(h->token);
    free(h);
}

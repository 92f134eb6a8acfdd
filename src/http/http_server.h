/* The HTTP interface of `pgwarden serve` (off unless http_listen is set): /healthz, /readyz
 * and /metrics, served by libevent's evhttp on the pooler's own event loop. Requests are
 * answered synchronously from the pooler's state; a slow or hostile HTTP client is bounded by
 * timeouts, header and body limits, a per-connection lifetime and caps on connections (in all
 * and per peer address), so it can never hold up pooling. */
#ifndef PGWARDEN_HTTP_HTTP_SERVER_H
#define PGWARDEN_HTTP_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>

struct pooler;
struct http_server; /* opaque */

enum http_start_result {
    HTTP_START_OFF,    /* http_listen is empty: nothing to do, *out is NULL */
    HTTP_START_OK,     /* listening; *out is owned by the caller (http_server_stop) */
    HTTP_START_FAILED, /* err says why (bad address, bind failure, unreadable token file) */
};

/* Starts listening on cfg->http_listen. p is borrowed for the server's life: requests read
 * p->cfg as it is at that moment, so a reload is seen at once. */
enum http_start_result http_server_start(struct pooler *p, struct http_server **out, char *err,
                                         size_t err_len);
/* After a configuration reload: re-reads the bearer token (http_auth_token or its file; a file
 * that cannot be read keeps the old token and logs why). http_listen changes need a restart
 * and only log a warning. NULL is fine (HTTP off). */
void http_server_reload(struct http_server *h);
/* Closes the listener and every HTTP connection. NULL is fine. */
void http_server_stop(struct http_server *h);

#endif

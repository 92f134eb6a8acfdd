/* The HTTP API of the live manager: /api/v1/<action> answers with the same JSON envelope as
 * `pgwarden ACTION --format json` (target.mode "serve"), computed by the same engine on the
 * live manager's latest snapshots; /api/v1/events lists the manager's events. GET reads;
 * POST /api/v1/kill-idle and /api/v1/auto-scale act, and only when a bearer token is
 * configured (an open port must never be able to disconnect clients). */
#ifndef PGWARDEN_HTTP_API_H
#define PGWARDEN_HTTP_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pooler;
struct evbuffer;

/* Whether path is under "/api/v1/" (this module answers, unknown actions with a 404 envelope). */
bool api_is_route(const char *path);

/* Answers one request for path (an api route). post: the method was POST, with body (may be
 * NULL). acting_allowed: a bearer token is configured (and was checked). Returns the HTTP
 * status and fills out with the JSON body. */
int api_handle(struct pooler *p, const char *path, bool post, const char *body,
               bool acting_allowed, const char *query, struct evbuffer *out);

/* GET /api/v1/events?follow: the events as Server-Sent Events, streamed (http_server keeps
 * the stream and calls api_write_events_sse every second). */
bool api_is_event_stream(const char *path, const char *query);
/* ?since=N (0 when absent). */
uint64_t api_events_since(const char *query);
/* Appends the events after seq `after` in SSE form ("id:", "event:", "data: <json>"); returns
 * the seq of the last one written (after when none). */
uint64_t api_write_events_sse(struct pooler *p, uint64_t after, struct evbuffer *out);

#endif

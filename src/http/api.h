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

struct api_route;

/* What a request asks for, read from its path, method, query and body alone: no pooler, no
 * libevent, so any bytes can be fed to it (tests/fuzz/fuzz_http_api.c). */
struct api_request {
    const struct api_route *route; /* borrowed (static table); NULL for an unknown action */
    const char *action;            /* static: the action's name, or "unknown" */
    int status;                    /* 200 when the action may run, else the refusal's status */
    const char *code;              /* static: the refusal's error code; NULL with 200 */
    const char *message;           /* static: the refusal in one sentence; NULL with 200 */
    bool post;
    bool execute;   /* the body's "execute" is true */
    bool dry_run;   /* the body's "dry_run" is true */
    uint64_t since; /* events after this seq: the body's "since", else ?since=; 0 for all */
};

/* Reads one request. A body that is not a JSON object is 400, an unknown action 404, POST to
 * an action that only reads 405 (checked in that order). The body, when not empty, is the only
 * source of since; a since that is no whole number counts as 0, one too large as UINT64_MAX. */
void api_parse_request(const char *path, bool post, const char *body, const char *query,
                       struct api_request *req);

/* The answers of the reading actions (monitor, detect-leaks, full-analysis) depend only on
 * the manager's latest look at the pools, taken once a second, yet each walks every client:
 * one is made per action and look, and the requests until the next look share it (the
 * envelope's timestamp is when it was made). A storm of polls then costs the loop one answer
 * per action per second instead of one per request. */
struct api_cache;
struct api_cache *api_cache_new(void);
void api_cache_free(struct api_cache *cache);

/* Answers one request for path (an api route). cache: where shared answers are kept (NULL:
 * every answer is made anew). post: the method was POST, with body (may be NULL).
 * acting_allowed: a bearer token is configured (and was checked). Returns the HTTP status and
 * fills out with the JSON body. */
int api_handle(struct pooler *p, struct api_cache *cache, const char *path, bool post,
               const char *body, bool acting_allowed, const char *query, struct evbuffer *out);

/* GET /api/v1/events?follow: the events as Server-Sent Events, streamed (http_server keeps
 * the stream and calls api_write_events_sse every second). The query's keys are matched
 * whole: "follow", "follow=1", "since=3&follow" stream, "nofollow" does not. */
bool api_is_event_stream(const char *path, const char *query);
/* ?since=N: the first "since" key's value when it is all digits (at most UINT64_MAX); 0 when
 * absent or not a number. */
uint64_t api_events_since(const char *query);
/* An event sequence number written in n decimal digits (capped at UINT64_MAX); 0 when
 * anything but a digit is there (a Last-Event-ID of "-1" resumes from the start). */
uint64_t api_parse_seq(const char *s, size_t n);
/* Appends the events after seq `after` in SSE form ("id:", "event:", "data: <json>"); returns
 * the seq of the last one written (after when none). */
uint64_t api_write_events_sse(struct pooler *p, uint64_t after, struct evbuffer *out);

#endif

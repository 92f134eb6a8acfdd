/* libFuzzer target: what the HTTP API reads from a request before it touches the pooler
 * (api_parse_request: action from the path, method, ?since= and follow from the query, the
 * JSON body of a POST). Input: one flags byte, then path, query and body split at NUL bytes.
 * Checks the documented contract (400 for a body that is no JSON object, then 404 for an
 * unknown action, then 405 for POST to a reading action) and that a since it reads is
 * read back the same from "since=N" and from {"since": N}. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "http/api.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PREFIX "/api/v1/"

enum input_flag {
    INPUT_POST = 1,      /* the method is POST */
    INPUT_QUERY = 2,     /* a query string is present (else NULL) */
    INPUT_BODY = 4,      /* a body is present (else NULL) */
    INPUT_ADD_PREFIX = 8 /* the path is PREFIX followed by the path part */
};

/* docs/API.md: every action, and those that take POST. */
static const char *const actions[] = {"monitor",   "detect-leaks",  "health-check", "auto-scale",
                                      "kill-idle", "full-analysis", "events"};
static const char *const acting[] = {"health-check", "auto-scale", "kill-idle"};

static void check(int ok)
{
    if (!ok)
        __builtin_trap();
}

static bool listed(const char *const *names, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return true;
    return false;
}

/* The next NUL-terminated part of [*p, end), copied into a fresh string (caller frees). */
static char *next_part(const uint8_t **p, const uint8_t *end, const char *prefix)
{
    const uint8_t *z = memchr(*p, 0, (size_t)(end - *p));
    size_t n = (size_t)((z ? z : end) - *p), pn = strlen(prefix);
    char *s = malloc(pn + n + 1);
    if (s == NULL)
        abort();
    memcpy(s, prefix, pn);
    memcpy(s + pn, *p, n);
    s[pn + n] = '\0';
    *p = z ? z + 1 : end;
    return s;
}

static void check_contract(const char *path, bool post, const char *body,
                           const struct api_request *r)
{
    bool known = strncmp(path, PREFIX, strlen(PREFIX)) == 0 &&
                 listed(actions, sizeof(actions) / sizeof(actions[0]), path + strlen(PREFIX));
    cJSON *json = body && body[0] ? cJSON_Parse(body) : NULL;
    bool bad_body = body && body[0] && !cJSON_IsObject(json);
    cJSON_Delete(json);

    check((r->route != NULL) == known);
    check(known ? strcmp(path + strlen(PREFIX), r->action) == 0
                : strcmp(r->action, "unknown") == 0);
    int want = 200;
    if (bad_body)
        want = 400;
    else if (!known)
        want = 404;
    else if (post && !listed(acting, sizeof(acting) / sizeof(acting[0]), r->action))
        want = 405;
    check(r->status == want);
    check((r->status == 200) == (r->code == NULL) && (r->code == NULL) == (r->message == NULL));
    check(r->post == post);
    if (!body || !body[0])
        check(!r->execute && !r->dry_run);
}

/* since=N and {"since": N} give N back; other keys around it change nothing. */
static void check_since_round_trip(const char *path, uint64_t since)
{
    char text[96];
    struct api_request r;
    snprintf(text, sizeof(text), "since=%llu", (unsigned long long)since);
    check(api_events_since(text) == since);
    snprintf(text, sizeof(text), "sincere=1&follow&since=%llu&since=5", (unsigned long long)since);
    check(api_events_since(text) == since);
    if (since < (1ull << 52)) { /* N.5 is exact in a JSON (double) number */
        snprintf(text, sizeof(text), "{\"since\": %llu.5, \"execute\": true}",
                 (unsigned long long)since);
        api_parse_request(path, true, text, "since=1", &r);
        check(r.status != 400 && r.since == since && r.execute);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    unsigned flags = data[0];
    const uint8_t *p = data + 1, *end = data + size;
    char *path = next_part(&p, end, flags & INPUT_ADD_PREFIX ? PREFIX : "");
    char *query = next_part(&p, end, "");
    char *body = next_part(&p, end, "");
    const char *q = flags & INPUT_QUERY ? query : NULL;
    const char *b = flags & INPUT_BODY ? body : NULL;
    bool post = flags & INPUT_POST;

    struct api_request r;
    api_parse_request(path, post, b, q, &r);
    check_contract(path, post, b, &r);
    if (!b || !b[0])
        check(r.since == api_events_since(q));
    check_since_round_trip(path, r.since);
    check_since_round_trip(path, api_events_since(q));

    /* A body, even an empty object, is the only source of since. */
    struct api_request with_body;
    api_parse_request(path, post, "{}", q, &with_body);
    check(with_body.since == 0 && !with_body.execute && !with_body.dry_run);

    bool stream = api_is_event_stream(path, q);
    check(!stream || strcmp(path, PREFIX "events") == 0);
    if (q != NULL && strcmp(path, PREFIX "events") == 0) {
        size_t n = strlen(q);
        char *followed = malloc(n + sizeof("follow&"));
        if (followed == NULL)
            abort();
        memcpy(followed, "follow&", 7);
        memcpy(followed + 7, q, n + 1);
        check(api_is_event_stream(path, followed));
        /* A leading pair takes nothing from the ones after it. */
        check(api_events_since(followed) == api_events_since(q));
        free(followed);
    }
    free(path);
    free(query);
    free(body);
    return 0;
}

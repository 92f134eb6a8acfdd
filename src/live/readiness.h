/* Readiness of the running pooler: could a server connection be handed out now? The one rule
 * behind /readyz (and the pgwarden_ready metric), kept here so the live manager can refine it
 * (health probes marking a database down) without touching the HTTP code. */
#ifndef PGWARDEN_LIVE_READINESS_H
#define PGWARDEN_LIVE_READINESS_H

#include <stdbool.h>
#include <stddef.h>

struct pooler;

enum readiness_result {
    READINESS_READY,
    READINESS_SHUTTING_DOWN, /* SIGINT/SIGTERM: no new clients are accepted */
    READINESS_PAUSED,        /* PAUSE / SIGUSR1 / SUSPEND: no servers are handed out */
    READINESS_LOGIN_FAILING, /* a pool's server logins fail and it has no idle server */
};

/* Evaluates the rule; reason gets a short human-readable explanation (never a password or a
 * server error text, since /readyz may be open to anyone who can reach it). */
enum readiness_result readiness_check(const struct pooler *p, char *reason, size_t reason_len);

#endif

/* detect-leaks: scores each connection 0-100 from its evidence and combines the suspects
 * with utilisation into an overall confidence. The scoring is documented in docs/LEAKS.md. */
#ifndef PGWARDEN_MANAGER_LEAKS_H
#define PGWARDEN_MANAGER_LEAKS_H

#include <stdbool.h>
#include <stddef.h>

#include "manager/options.h"
#include "manager/report.h"
#include "manager/snapshot.h"

#define LEAK_MAX_REASONS 8
#define LEAK_REASON_LEN  160

struct leak_suspect {
    const struct conn_record *conn; /* borrowed from the current snapshot */
    int score;                      /* 0-100 */
    int64_t held_ms;                /* connected for */
    int64_t idle_ms;                /* in the current non-active state for */
    int64_t xact_age_ms;            /* 0 outside a transaction */
    size_t n_reasons;
    char reasons[LEAK_MAX_REASONS][LEAK_REASON_LEN];
};

/* An application+user whose connection count only grew between the two snapshots. */
struct leak_growth {
    char application[SNAPSHOT_NAME_LEN];
    char user[SNAPSHOT_NAME_LEN];
    int before;
    int after;
};

/* How urgent the suspects are, from the confidence and utilisation pressure. */
enum leak_risk {
    LEAK_RISK_NONE,
    LEAK_RISK_LOW,
    LEAK_RISK_MEDIUM,
    LEAK_RISK_HIGH,
};

struct leak_report {
    bool detected;
    int confidence; /* 0-100 */
    enum leak_risk risk_level;
    double utilization_pct;
    size_t total_suspected;
    struct leak_suspect *suspects; /* owned, sorted by score desc then idle time desc */
    struct leak_growth *growth;    /* owned */
    size_t n_growth;
    char recommendation[512];
};

/* A record becomes a suspect at this score or above. */
#define LEAK_SUSPECT_MIN_SCORE 30

bool leaks_detect(const struct snapshot *prev, const struct snapshot *cur,
                  const struct manager_options *opts, struct leak_report *out)
    __attribute__((warn_unused_result));
/* Scores one connection on its own evidence (no growth or utilisation terms). */
int leaks_score_connection(const struct snapshot *cur, const struct conn_record *rec,
                           const struct manager_options *opts, struct leak_suspect *out);
void leaks_report_free(struct leak_report *report);

/* "none", "low", "medium", "high" (the JSON risk_level). */
const char *leaks_risk_name(enum leak_risk risk);
/* The one status rule of a leak report: ok without suspects, critical at high risk, else
 * warning. */
enum report_status leaks_status(const struct leak_report *report);
/* True when the record passes the filters and may be a suspect at all: not this session,
 * visible, not infrastructure, not a replication connection. Every count of leak-like
 * sessions (full-analysis's idle-in-transaction anomaly) uses this, so none counts a session
 * detect-leaks could never report. */
bool leaks_may_suspect(const struct manager_options *opts, const struct conn_record *rec);

#endif

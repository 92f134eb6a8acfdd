/* Parallel non-blocking probes with libpq's async API and poll(2): N connections progress
 * together, so N probes cost about one connect time, and a dead server costs one timeout. */
#include "inspect/probe.h"

#include <libpq-fe.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/timestamp.h"
#include "inspect/session.h"

enum probe_phase {
    PROBE_CONNECTING,
    PROBE_QUERYING,
    PROBE_DONE,
};

struct probe_slot {
    PGconn *conn; /* owned */
    enum probe_phase phase;
    PostgresPollingStatusType poll_status;
    double started_ms;
    double connected_ms;
    struct health_probe *result; /* borrowed */
};

static void probe_fail(struct probe_slot *slot, const char *sqlstate, const char *message)
{
    struct health_probe *r = slot->result;
    r->healthy = false;
    r->latency_ms = timestamp_monotonic_ms() - slot->started_ms;
    inspect_session_first_line(r->error, sizeof(r->error), message);
    snprintf(r->sqlstate, sizeof(r->sqlstate), "%s", sqlstate ? sqlstate : "");
    snprintf(r->error_class, sizeof(r->error_class), "%s",
             health_classify_error(sqlstate, r->error));
    slot->phase = PROBE_DONE;
}

/* libpq reports the SQLSTATE of a failed connection only through the message text, so the
 * message is classified instead. */
static void advance_connect(struct probe_slot *slot)
{
    slot->poll_status = PQconnectPoll(slot->conn);
    if (slot->poll_status == PGRES_POLLING_FAILED) {
        probe_fail(slot, NULL, PQerrorMessage(slot->conn));
    } else if (slot->poll_status == PGRES_POLLING_OK) {
        slot->connected_ms = timestamp_monotonic_ms();
        slot->result->connect_ms = slot->connected_ms - slot->started_ms;
        if (!PQsendQuery(slot->conn, "SELECT 1")) {
            probe_fail(slot, NULL, PQerrorMessage(slot->conn));
            return;
        }
        slot->phase = PROBE_QUERYING;
    }
}

static void advance_query(struct probe_slot *slot)
{
    if (!PQconsumeInput(slot->conn)) {
        probe_fail(slot, NULL, PQerrorMessage(slot->conn));
        return;
    }
    if (PQisBusy(slot->conn))
        return;
    char sqlstate[6], message[256];
    bool ok = inspect_session_read_one_row(slot->conn, sqlstate, message, sizeof(message));
    if (!ok) {
        probe_fail(slot, sqlstate, message[0] ? message : "SELECT 1 returned no row");
        return;
    }
    double now = timestamp_monotonic_ms();
    struct health_probe *r = slot->result;
    r->healthy = true;
    r->query_ms = now - slot->connected_ms;
    r->latency_ms = now - slot->started_ms;
    slot->phase = PROBE_DONE;
}

void probe_run(const char *conninfo, size_t n, int timeout_ms, struct health_probe *probes)
{
    struct probe_slot *slots = calloc(n ? n : 1, sizeof(*slots));
    struct pollfd *fds = calloc(n ? n : 1, sizeof(*fds));
    if (slots == NULL || fds == NULL) {
        for (size_t i = 0; i < n; i++) {
            memset(&probes[i], 0, sizeof(probes[i]));
            probes[i].id = (int64_t)i + 1;
            snprintf(probes[i].error, sizeof(probes[i].error), "out of memory");
            snprintf(probes[i].error_class, sizeof(probes[i].error_class), "error");
        }
        free(slots);
        free(fds);
        return;
    }
    const char *keys[] = {"dbname", "application_name", NULL};
    const char *values[] = {conninfo, INSPECT_APPLICATION_NAME, NULL};
    double deadline = timestamp_monotonic_ms() + timeout_ms;
    for (size_t i = 0; i < n; i++) {
        struct probe_slot *slot = &slots[i];
        memset(&probes[i], 0, sizeof(probes[i]));
        probes[i].id = (int64_t)i + 1;
        slot->result = &probes[i];
        slot->started_ms = timestamp_monotonic_ms();
        slot->conn = PQconnectStartParams(keys, values, 1);
        slot->phase = PROBE_CONNECTING;
        slot->poll_status = PGRES_POLLING_WRITING;
        if (slot->conn == NULL || PQstatus(slot->conn) == CONNECTION_BAD)
            probe_fail(slot, NULL, slot->conn ? PQerrorMessage(slot->conn) : "out of memory");
    }

    for (;;) {
        size_t waiting = 0;
        for (size_t i = 0; i < n; i++) {
            struct probe_slot *slot = &slots[i];
            fds[i].fd = -1;
            fds[i].revents = 0;
            if (slot->phase == PROBE_DONE)
                continue;
            fds[i].fd = PQsocket(slot->conn);
            if (slot->phase == PROBE_CONNECTING)
                fds[i].events = slot->poll_status == PGRES_POLLING_READING ? POLLIN : POLLOUT;
            else
                fds[i].events = POLLIN;
            waiting++;
        }
        if (waiting == 0)
            break;
        double left = deadline - timestamp_monotonic_ms();
        if (left <= 0) {
            for (size_t i = 0; i < n; i++) {
                if (slots[i].phase != PROBE_DONE)
                    probe_fail(&slots[i], NULL, "timeout expired before the probe finished");
            }
            break;
        }
        if (poll(fds, n, (int)left + 1) < 0)
            continue; /* EINTR: recompute and poll again */
        for (size_t i = 0; i < n; i++) {
            struct probe_slot *slot = &slots[i];
            if (slot->phase == PROBE_DONE || fds[i].revents == 0)
                continue;
            if (slot->phase == PROBE_CONNECTING)
                advance_connect(slot);
            else
                advance_query(slot);
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (slots[i].conn != NULL)
            PQfinish(slots[i].conn);
    }
    free(slots);
    free(fds);
}

/* Shared vocabulary of the engine's reports: overall status and its exit code. */
#ifndef PGWARDEN_MANAGER_REPORT_H
#define PGWARDEN_MANAGER_REPORT_H

enum report_status {
    REPORT_OK = 0,
    REPORT_WARNING = 1,
    REPORT_CRITICAL = 2,
};

/* Exit codes follow the monitoring-plugin convention (DESIGN.md). */
enum exit_code {
    EXIT_OK = 0,
    EXIT_WARNING = 1,
    EXIT_CRITICAL = 2,
    EXIT_CANNOT_RUN = 3,
    EXIT_REFUSED = 4,
};

const char *report_status_name(enum report_status status);
enum report_status report_status_worse(enum report_status a, enum report_status b);
/* OK/WARNING/CRITICAL map to EXIT_OK/EXIT_WARNING/EXIT_CRITICAL. */
enum exit_code report_status_exit_code(enum report_status status);

#endif

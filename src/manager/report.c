/* The engine's shared status vocabulary: names and the exit codes they map to. */
#include "manager/report.h"

const char *report_status_name(enum report_status status)
{
    switch (status) {
    case REPORT_OK:
        return "ok";
    case REPORT_WARNING:
        return "warning";
    case REPORT_CRITICAL:
        return "critical";
    }
    return "unknown";
}

enum report_status report_status_worse(enum report_status a, enum report_status b)
{
    return a > b ? a : b;
}

enum exit_code report_status_exit_code(enum report_status status)
{
    switch (status) {
    case REPORT_OK:
        return EXIT_OK;
    case REPORT_WARNING:
        return EXIT_WARNING;
    case REPORT_CRITICAL:
        return EXIT_CRITICAL;
    }
    return EXIT_CANNOT_RUN;
}

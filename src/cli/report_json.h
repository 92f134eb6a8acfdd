/* Engine reports to JSON (the `data` member of the result envelope). The field names are the
 * public contract of DESIGN.md: add freely, never rename. Every function returns a new cJSON
 * object owned by the caller, or NULL when memory runs out. */
#ifndef PGWARDEN_CLI_REPORT_JSON_H
#define PGWARDEN_CLI_REPORT_JSON_H

#include <cjson/cJSON.h>

#include "manager/analysis.h"
#include "manager/snapshot.h"

cJSON *report_json_connection(const struct snapshot *snap, const struct conn_record *rec);
/* connection_list is included only when snap is not NULL. */
/* One pool record (serve mode) as monitor lists it under "pools". */
cJSON *report_json_pool(const struct pool_record *pl);
cJSON *report_json_stats(const struct stats_report *stats, const struct snapshot *snap,
                         const struct manager_options *opts);
cJSON *report_json_leaks(const struct leak_report *leaks, const struct snapshot *snap);
cJSON *report_json_health(const struct health_report *health, const struct health_probe *probes,
                          size_t n_probes);
cJSON *report_json_scaling(const struct scaling_decision *scaling);
cJSON *report_json_kill_plan(const struct kill_plan *plan, const struct snapshot *snap);
cJSON *report_json_analysis(const struct analysis_report *analysis, const struct snapshot *snap,
                            const struct health_probe *probes, size_t n_probes,
                            const struct manager_options *opts);

#endif

/* Envelope and tables. Tables are drawn from the same JSON `data` the envelope carries, so
 * the two formats cannot disagree. */
#include "cli/render.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli/table.h"
#include "common/units.h"
#include "common/utf8.h"

cJSON *render_envelope(const struct action_run *run, const char *action_name, const char *timestamp,
                       double duration_ms)
{
    cJSON *env = cJSON_CreateObject();
    cJSON_AddStringToObject(env, "action", action_name);
    cJSON_AddBoolToObject(env, "success", !run->failed);
    cJSON_AddStringToObject(env, "timestamp", timestamp);
    cJSON_AddNumberToObject(env, "duration_ms", round(duration_ms * 10.0) / 10.0);
    if (run->have_target) {
        cJSON *t = cJSON_AddObjectToObject(env, "target");
        cJSON_AddStringToObject(t, "mode", run->source ? run->source->mode_name : "inspect");
        cJSON_AddStringToObject(t, "host", run->target.host);
        int port = atoi(run->target.port);
        if (port > 0)
            cJSON_AddNumberToObject(t, "port", port);
        else
            cJSON_AddNullToObject(t, "port");
        cJSON_AddStringToObject(t, "database", run->target.database);
        cJSON_AddStringToObject(t, "user", run->target.user);
        if (run->target.server_version[0])
            cJSON_AddStringToObject(t, "server_version", run->target.server_version);
        else
            cJSON_AddNullToObject(t, "server_version");
    } else {
        cJSON_AddNullToObject(env, "target");
    }
    if (run->failed || run->data == NULL) {
        cJSON_AddNullToObject(env, "data");
        cJSON *e = cJSON_AddObjectToObject(env, "error");
        cJSON_AddStringToObject(e, "code", run->error.code[0] ? run->error.code : "error");
        cJSON_AddStringToObject(e, "message", run->error.message);
        if (run->error.sqlstate[0])
            cJSON_AddStringToObject(e, "sqlstate", run->error.sqlstate);
        else
            cJSON_AddNullToObject(e, "sqlstate");
    } else {
        cJSON_AddItemReferenceToObject(env, "data", run->data);
        cJSON_AddNullToObject(env, "error");
    }
    return env;
}

static void print_envelope(const struct action_run *run, const char *action_name,
                           const char *timestamp, double duration_ms, bool compact, FILE *out)
{
    cJSON *env = render_envelope(run, action_name, timestamp, duration_ms);
    /* Names from a pooler's console or pg_stat_activity may be invalid UTF-8. */
    char *text = utf8_make_valid(compact ? cJSON_PrintUnformatted(env) : cJSON_Print(env));
    if (text != NULL) {
        fprintf(out, "%s\n", text);
        free(text);
    } else {
        /* Still one valid JSON document, never a partial one. */
        fprintf(out,
                "{\"action\": \"%s\", \"success\": false, \"data\": null, \"error\": "
                "{\"code\": \"out_of_memory\", \"message\": \"out of memory\"}}\n",
                action_name);
    }
    cJSON_Delete(env);
}

void render_json(const struct action_run *run, const char *action_name, const char *timestamp,
                 double duration_ms, FILE *out)
{
    print_envelope(run, action_name, timestamp, duration_ms, false, out);
}

void render_json_line(const struct action_run *run, const char *action_name, const char *timestamp,
                      double duration_ms, FILE *out)
{
    print_envelope(run, action_name, timestamp, duration_ms, true, out);
}

/* Writes text for a terminal. Names and queries come from any client of the server (a
 * query's text is whatever it sent), and a control byte reaching the operator's terminal
 * can clear it, move the cursor over the rows a kill decision is made on, or retitle it.
 * Every C0 control but newline and tab, DEL, every C1 control (U+0080-U+009F) and every
 * byte that starts no valid UTF-8 sequence is written as '?'. */
static void write_for_terminal(const char *text, size_t len, FILE *out)
{
    const unsigned char *s = (const unsigned char *)text;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_sequence_len(s + i, len - i);
        bool control = n == 0 ||
                       (n == 1 && (s[i] < 0x20 || s[i] == 0x7f) && s[i] != '\n' && s[i] != '\t') ||
                       (n == 2 && s[i] == 0xc2 && s[i + 1] < 0xa0);
        if (control) {
            fputc('?', out);
            i += n ? n : 1;
        } else {
            fwrite(s + i, 1, n, out);
            i += n;
        }
    }
}

static void render_table_text(const struct action_run *run, FILE *out, FILE *err)
{
    if (run->failed) {
        fprintf(err, "pgwarden %s: %s", run->action->name, run->error.message);
        if (run->error.sqlstate[0])
            fprintf(err, " (SQLSTATE %s)", run->error.sqlstate);
        fputc('\n', err);
        return;
    }
    fprintf(out, "%s\n", run->verdict);
    if (run->action->render_table != NULL && run->data != NULL)
        run->action->render_table(run, out);
}

void render_table(const struct action_run *run, FILE *out, FILE *err)
{
    /* Rendered whole into memory first, so one filter sees every byte of it. */
    char *text = NULL, *err_text = NULL;
    size_t len = 0, err_len = 0;
    FILE *mem = open_memstream(&text, &len);
    FILE *err_mem = mem ? open_memstream(&err_text, &err_len) : NULL;
    if (mem == NULL || err_mem == NULL) {
        if (mem != NULL)
            fclose(mem);
        free(text);
        fprintf(err, "pgwarden %s: out of memory\n", run->action->name);
        return;
    }
    render_table_text(run, mem, err_mem);
    fclose(mem);
    fclose(err_mem);
    write_for_terminal(text, len, out);
    write_for_terminal(err_text, err_len, err);
    free(text);
    free(err_text);
}

/* ---- small readers over the data JSON ------------------------------------------------ */

static const cJSON *field(const cJSON *obj, const char *name)
{
    return obj ? cJSON_GetObjectItemCaseSensitive(obj, name) : NULL;
}

static double num(const cJSON *obj, const char *name)
{
    const cJSON *v = field(obj, name);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static const char *str(const cJSON *obj, const char *name)
{
    const cJSON *v = field(obj, name);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* Formats a number cell: integers without decimals, "-" for null. */
static const char *fmt_num(char *buf, size_t len, double v)
{
    if (isnan(v))
        snprintf(buf, len, "-");
    else if (v == floor(v) && fabs(v) < 1e15)
        snprintf(buf, len, "%.0f", v);
    else
        snprintf(buf, len, "%.2f", v);
    return buf;
}

static const char *fmt_ms(char *buf, size_t len, double ms)
{
    if (isnan(ms))
        snprintf(buf, len, "-");
    else if (ms < 10.0)
        snprintf(buf, len, "%.2fms", ms); /* sub-millisecond transactions are the norm */
    else
        units_format_duration((int64_t)ms, buf, len);
    return buf;
}

static void print_kv(FILE *out, const char *key, const char *value)
{
    fprintf(out, "  %-24s %s\n", key, value);
}

static void print_section(FILE *out, const char *title)
{
    fprintf(out, "\n%s\n", title);
}

/* ---- per action ---------------------------------------------------------------------- */

static void stats_summary(const cJSON *data, FILE *out)
{
    const cJSON *c = field(data, "connections");
    char b[64], line[256];
    snprintf(line, sizeof(line), "%s", fmt_num(b, sizeof(b), num(c, "total")));
    print_kv(out, "connections", line);
    print_kv(out, "  active", fmt_num(b, sizeof(b), num(c, "active")));
    print_kv(out, "  idle", fmt_num(b, sizeof(b), num(c, "idle")));
    print_kv(out, "  idle in transaction", fmt_num(b, sizeof(b), num(c, "idle_in_transaction")));
    print_kv(out, "  waiting", fmt_num(b, sizeof(b), num(c, "waiting")));
    print_kv(out, "usable slots", fmt_num(b, sizeof(b), num(c, "max")));
    double util = num(data, "utilization_pct");
    if (!isnan(util)) {
        snprintf(line, sizeof(line), "%.1f%%", util);
        print_kv(out, "utilisation", line);
    }
    const cJSON *tp = field(data, "throughput");
    double rps = num(tp, "requests_per_sec");
    if (!isnan(rps)) {
        snprintf(line, sizeof(line), "%.1f tx/s, %.1f connects/s, %.1f disconnects/s", rps,
                 num(tp, "created_per_sec"), num(tp, "closed_per_sec"));
        print_kv(out, "throughput", line);
    }
    const cJSON *t = field(data, "timing");
    char b2[32];
    print_kv(out, "avg transaction", fmt_ms(b, sizeof(b), num(t, "avg_query_ms")));
    print_kv(out, "oldest connection", fmt_ms(b2, sizeof(b2), num(t, "oldest_connection_ms")));
    print_kv(out, "longest transaction", fmt_ms(b, sizeof(b), num(t, "longest_transaction_ms")));
}

/* Serve mode: one line per pool with what a person watching it asks first. */
static void pools_table(const cJSON *pools, FILE *out)
{
    if (cJSON_GetArraySize(pools) <= 0)
        return;
    print_section(out, "Pools");
    const char *h[] = {"DATABASE", "USER",    "MODE", "SIZE",     "CL ACT",   "CL WAIT",
                       "SV ACT",   "SV IDLE", "TX/S", "WAIT P99", "WAIT MAX", "TX P99"};
    enum { N = sizeof(h) / sizeof(h[0]) };
    struct table t;
    table_init(&t, N, h);
    for (size_t c = 3; c < N; c++)
        table_align_right(&t, c);
    const cJSON *p;
    cJSON_ArrayForEach(p, pools)
    {
        const cJSON *cl = field(p, "clients"), *sv = field(p, "servers");
        const cJSON *rate = field(p, "per_sec"), *tm = field(p, "timing_ms");
        char size[16], ca[16], cw[16], sa[16], si[16], tps[16], w99[32], wmax[32], x99[32];
        snprintf(tps, sizeof(tps), "%.1f", num(rate, "transactions"));
        const char *row[N] = {str(p, "database"),
                              str(p, "user"),
                              str(p, "pool_mode"),
                              fmt_num(size, 16, num(p, "size")),
                              fmt_num(ca, 16, num(cl, "active")),
                              fmt_num(cw, 16, num(cl, "waiting")),
                              fmt_num(sa, 16, num(sv, "active")),
                              fmt_num(si, 16, num(sv, "idle")),
                              tps,
                              fmt_ms(w99, sizeof(w99), num(tm, "wait_p99")),
                              fmt_ms(wmax, sizeof(wmax), num(tm, "wait_max")),
                              fmt_ms(x99, sizeof(x99), num(tm, "transaction_p99"))};
        table_add_row(&t, row);
    }
    table_print(&t, out);
    table_free(&t);
}

void render_table_monitor(const struct action_run *run, FILE *out)
{
    stats_summary(run->data, out);
    const cJSON *apps = field(run->data, "by_application");
    if (cJSON_GetArraySize(apps) > 0) {
        print_section(out, "By application");
        const char *h[] = {"APPLICATION", "TOTAL", "ACTIVE", "IDLE", "IDLE IN XACT"};
        struct table t;
        table_init(&t, 5, h);
        for (size_t c = 1; c < 5; c++)
            table_align_right(&t, c);
        const cJSON *a;
        cJSON_ArrayForEach(a, apps)
        {
            char n1[16], n2[16], n3[16], n4[16];
            const char *row[] = {str(a, "application")[0] ? str(a, "application") : "(none)",
                                 fmt_num(n1, 16, num(a, "total")),
                                 fmt_num(n2, 16, num(a, "active")), fmt_num(n3, 16, num(a, "idle")),
                                 fmt_num(n4, 16, num(a, "idle_in_transaction"))};
            table_add_row(&t, row);
        }
        table_print(&t, out);
        table_free(&t);
    }
    pools_table(field(run->data, "pools"), out);
    const cJSON *list = field(run->data, "connection_list");
    if (cJSON_GetArraySize(list) > 0) {
        print_section(out, "Connections");
        const char *h[] = {"PID", "USER", "DATABASE", "APPLICATION", "STATE", "IN STATE", "QUERY"};
        struct table t;
        table_init(&t, 7, h);
        table_align_right(&t, 0);
        table_align_right(&t, 5);
        const cJSON *c;
        cJSON_ArrayForEach(c, list)
        {
            char pid[16], dur[32], query[64];
            snprintf(query, sizeof(query), "%.60s", str(c, "last_query"));
            for (char *q = query; *q; q++)
                if (*q == '\n' || *q == '\t')
                    *q = ' ';
            const char *row[] = {fmt_num(pid, 16, num(c, "pid")),
                                 str(c, "user"),
                                 str(c, "database"),
                                 str(c, "application"),
                                 str(c, "state"),
                                 fmt_ms(dur, sizeof(dur), num(c, "state_ms")),
                                 query};
            table_add_row(&t, row);
        }
        table_print(&t, out);
        table_free(&t);
    }
}

static void leaks_table(const cJSON *data, FILE *out)
{
    const cJSON *list = field(data, "suspected_connections");
    if (cJSON_GetArraySize(list) > 0) {
        const char *h[] = {"SCORE", "PID", "USER", "APPLICATION", "STATE", "IDLE", "WHY"};
        struct table t;
        table_init(&t, 7, h);
        table_align_right(&t, 0);
        table_align_right(&t, 1);
        table_align_right(&t, 5);
        const cJSON *s;
        cJSON_ArrayForEach(s, list)
        {
            char score[16], pid[16], idle[32], why[320] = "";
            const cJSON *r;
            size_t o = 0;
            cJSON_ArrayForEach(r, field(s, "reasons"))
            {
                if (cJSON_IsString(r) && o < sizeof(why))
                    o += (size_t)snprintf(why + o, sizeof(why) - o, "%s%s", o ? "; " : "",
                                          r->valuestring);
            }
            const char *row[] = {fmt_num(score, 16, num(s, "score")),
                                 fmt_num(pid, 16, num(s, "pid")),
                                 str(s, "user"),
                                 str(s, "application"),
                                 str(s, "state"),
                                 fmt_ms(idle, sizeof(idle), num(s, "idle_ms")),
                                 why};
            table_add_row(&t, row);
        }
        table_print(&t, out);
        table_free(&t);
    }
    const char *rec = str(data, "recommendation");
    if (rec[0])
        fprintf(out, "\nRecommendation: %s\n", rec);
}

void render_table_detect_leaks(const struct action_run *run, FILE *out)
{
    leaks_table(run->data, out);
}

static void health_table(const cJSON *data, FILE *out)
{
    char b[32], line[128];
    snprintf(line, sizeof(line), "%s healthy of %s", fmt_num(b, sizeof(b), num(data, "healthy")),
             fmt_num(b + 16, 16, num(data, "total_checked")));
    print_kv(out, "probes", line);
    snprintf(line, sizeof(line), "avg %.2f ms, p95 %.2f ms, max %.2f ms",
             num(data, "avg_latency_ms"), num(data, "p95_latency_ms"), num(data, "max_latency_ms"));
    print_kv(out, "latency", line);
    snprintf(line, sizeof(line), "%.1f%%", num(data, "failure_rate") * 100.0);
    print_kv(out, "failure rate", line);
    const cJSON *h = field(data, "headroom");
    double free_slots = num(h, "free_slots");
    if (!isnan(free_slots)) {
        snprintf(line, sizeof(line), "%.0f used of %.0f usable, %.0f free", num(h, "used_slots"),
                 num(h, "usable_slots"), free_slots);
        print_kv(out, "connection headroom", line);
    }
    const char *hh[] = {"PROBE", "HEALTHY", "LATENCY", "ERROR"};
    struct table t;
    table_init(&t, 4, hh);
    table_align_right(&t, 0);
    table_align_right(&t, 2);
    const cJSON *c;
    cJSON_ArrayForEach(c, field(data, "checks"))
    {
        char id[16], lat[32];
        snprintf(lat, sizeof(lat), "%.2f ms", num(c, "latency_ms"));
        const char *row[] = {fmt_num(id, 16, num(c, "id")),
                             cJSON_IsTrue(field(c, "healthy")) ? "yes" : "no", lat,
                             str(c, "error")};
        table_add_row(&t, row);
    }
    fputc('\n', out);
    table_print(&t, out);
    table_free(&t);
}

void render_table_health_check(const struct action_run *run, FILE *out)
{
    health_table(run->data, out);
}

void render_table_auto_scale(const struct action_run *run, FILE *out)
{
    char b[16];
    const cJSON *d = run->data;
    print_kv(out, "current size", fmt_num(b, sizeof(b), num(d, "current_size")));
    print_kv(out, "target size", fmt_num(b, sizeof(b), num(d, "target_size")));
    char line[64];
    snprintf(line, sizeof(line), "%.0f .. %.0f", num(d, "min_size"), num(d, "max_size"));
    print_kv(out, "bounds", line);
    print_kv(out, "server budget", fmt_num(b, sizeof(b), num(d, "server_budget")));
    fprintf(out, "\nWhy: %s\n", str(d, "reason"));
}

static void kill_table(const cJSON *data, FILE *out)
{
    const cJSON *actions = field(data, "actions");
    if (cJSON_GetArraySize(actions) == 0)
        return;
    const char *h[] = {"PID", "USER", "APPLICATION", "STATE", "IDLE", "RESULT", "REASON"};
    struct table t;
    table_init(&t, 7, h);
    table_align_right(&t, 0);
    table_align_right(&t, 4);
    const cJSON *a;
    cJSON_ArrayForEach(a, actions)
    {
        char pid[16], idle[32];
        const char *row[] = {fmt_num(pid, 16, num(a, "pid")),
                             str(a, "user"),
                             str(a, "application"),
                             str(a, "state"),
                             fmt_ms(idle, sizeof(idle), num(a, "idle_ms")),
                             str(a, "result"),
                             str(a, "reason")};
        table_add_row(&t, row);
    }
    fputc('\n', out);
    table_print(&t, out);
    table_free(&t);
}

void render_table_kill_idle(const struct action_run *run, FILE *out)
{
    kill_table(run->data, out);
}

void render_table_full_analysis(const struct action_run *run, FILE *out)
{
    const cJSON *d = run->data;
    print_section(out, "Statistics");
    stats_summary(field(d, "statistics"), out);

    const cJSON *anomalies = field(d, "anomalies");
    if (cJSON_GetArraySize(anomalies) > 0) {
        print_section(out, "Anomalies");
        const cJSON *a;
        cJSON_ArrayForEach(a, anomalies)
            fprintf(out, "  [%s] %s\n", str(a, "severity"), str(a, "message"));
    }
    const cJSON *leaks = field(d, "leaks");
    print_section(out, "Leak suspects");
    if (cJSON_IsTrue(field(leaks, "detected"))) {
        fprintf(out, "  confidence %.0f%%, risk %s\n", num(leaks, "confidence"),
                str(leaks, "risk_level"));
        leaks_table(leaks, out);
    } else {
        fprintf(out, "  none\n");
    }
    const cJSON *health = field(d, "health");
    if (cJSON_IsObject(health)) {
        print_section(out, "Health");
        fprintf(out, "  %s: %s\n", str(health, "status"), str(health, "verdict"));
    }
    const cJSON *scaling = field(d, "scaling");
    print_section(out, "Pool sizing");
    fprintf(out, "  %s: %s\n", str(scaling, "decision"), str(scaling, "reason"));
    const cJSON *idle = field(d, "idle");
    print_section(out, "Idle connections (kill-idle plan)");
    fprintf(out, "  %.0f candidates, limit %.0f per run\n", num(idle, "candidates"),
            num(idle, "limit"));
    kill_table(idle, out);

    const cJSON *recs = field(d, "recommendations");
    if (cJSON_GetArraySize(recs) > 0) {
        print_section(out, "Recommendations");
        const cJSON *r;
        cJSON_ArrayForEach(r, recs)
        {
            fprintf(out, "  [%s] %s\n", str(r, "severity"), str(r, "message"));
            if (str(r, "setting")[0])
                fprintf(out, "          setting: %s\n", str(r, "setting"));
        }
    }
}

void render_table_status(const struct action_run *run, FILE *out)
{
    (void)run;
    (void)out; /* the verdict line is the whole output */
}

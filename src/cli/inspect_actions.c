/* Handlers of the manager actions: connect to the target's source (a PostgreSQL in inspect
 * mode, a pgwarden admin console in serve mode; cli/target_source.c picks it), take one or
 * two snapshots, run the engine, execute a kill plan when asked, and build the JSON data. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/actions.h"
#include "cli/inspect_actions.h"
#include "cli/report_json.h"
#include "common/units.h"
#include "cli/target_source.h"
#include "manager/analysis.h"

/* Snapshots of one run: cur always, prev when the action samples twice. */
struct inspect_samples {
    PGconn *conn; /* owned */
    struct snapshot prev;
    struct snapshot cur;
    bool have_prev;
};

/* Error codes with an exit code of their own; every other failure could not run. */
static const struct {
    const char *code;
    enum exit_code exit_code;
} error_exit_codes[] = {
    {"refused", EXIT_REFUSED},
};

static void fail(struct action_run *run, const struct inspect_error *err)
{
    run->failed = true;
    run->error = *err;
    run->exit_code = EXIT_CANNOT_RUN;
    for (size_t i = 0; i < sizeof(error_exit_codes) / sizeof(error_exit_codes[0]); i++) {
        if (strcmp(err->code, error_exit_codes[i].code) == 0)
            run->exit_code = error_exit_codes[i].exit_code;
    }
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static bool connect_target(struct action_run *run, struct inspect_samples *s)
{
    struct inspect_error err = {0};
    memset(s, 0, sizeof(*s));
    s->conn = run->source->connect(run->conninfo, &run->target, &err);
    run->have_target = true;
    if (s->conn == NULL) {
        fail(run, &err);
        return false;
    }
    if (run->source->adopt_settings)
        run->source->adopt_settings(s->conn, run->opts);
    return true;
}

/* Takes the snapshot(s). With two samples, the first is taken, then the interval waited,
 * so rates cover --interval (serve mode: at least until the pooler's next snapshot, since its
 * manager samples about once a second). */
static bool sample(struct action_run *run, struct inspect_samples *s, bool twice)
{
    struct inspect_error err = {0};
    int64_t interval = run->opts->interval_ms;
    if (twice && interval > 0) {
        if (!run->source->take_snapshot(s->conn, run->opts, 0, &s->prev, &err)) {
            fail(run, &err);
            return false;
        }
        s->have_prev = true;
        if (isatty(STDERR_FILENO)) {
            char buf[32];
            fprintf(stderr, "pgwarden: sampling for %s...\n",
                    units_format_duration(interval, buf, sizeof(buf)));
        }
        sleep_ms(interval);
    }
    int64_t newer_than = s->have_prev ? s->prev.taken_ms : 0;
    if (!run->source->take_snapshot(s->conn, run->opts, newer_than, &s->cur, &err)) {
        fail(run, &err);
        return false;
    }
    return true;
}

static void samples_free(struct inspect_samples *s)
{
    if (s->have_prev)
        snapshot_free(&s->prev);
    snapshot_free(&s->cur);
    if (s->conn != NULL)
        PQfinish(s->conn);
    s->conn = NULL;
}

static const struct snapshot *prev_of(const struct inspect_samples *s)
{
    return s->have_prev ? &s->prev : NULL;
}

/* Connects and samples; on failure the run carries the error and nothing is left open. */
static bool open_samples(struct action_run *run, struct inspect_samples *s, bool twice)
{
    if (connect_target(run, s) && sample(run, s, twice))
        return true;
    samples_free(s);
    return false;
}

static void out_of_memory(struct action_run *run)
{
    struct inspect_error err = {0};
    inspect_session_error_set(&err, "out_of_memory", NULL, "out of memory while analysing");
    fail(run, &err);
}

/* The verdict line starts with the status in capitals, for people and monitoring plugins. */
static const char *const status_words[] = {
    [REPORT_OK] = "OK",
    [REPORT_WARNING] = "WARNING",
    [REPORT_CRITICAL] = "CRITICAL",
};

static const char *const scaling_words[] = {
    [SCALING_HOLD] = "HOLD",
    [SCALING_GROW] = "GROW",
    [SCALING_SHRINK] = "SHRINK",
};

/* Ends a successful run: the engine's status decides the exit code and opens the verdict,
 * followed by text. */
static void conclude(struct action_run *run, enum report_status status, const char *text)
{
    snprintf(run->verdict, sizeof(run->verdict), "%s: %s", status_words[status], text);
    run->exit_code = report_status_exit_code(status);
}

/* What the utilisation is a share of: the server's usable slots, or the pools' sizes. */
static const struct {
    const char *slots;
    const char *whole;
} capacity_words[] = {
    [SNAPSHOT_MODE_INSPECT] = {"usable", "of the server"},
    [SNAPSHOT_MODE_SERVE] = {"pool slots", "of the pool size"},
};

static void describe_stats(char *out, size_t len, const struct stats_report *st,
                           enum snapshot_mode mode)
{
    char rate[64] = "";
    if (st->have_rates)
        snprintf(rate, sizeof(rate), "; %.1f tx/s", st->requests_per_sec);
    char max[96] = "";
    if (st->max > 0)
        snprintf(max, sizeof(max), " of %d %s (%.1f%% %s in use)", st->max,
                 capacity_words[mode].slots, st->utilization_pct, capacity_words[mode].whole);
    snprintf(out, len, "%d connection%s%s: %d active, %d idle, %d idle in transaction%s", st->total,
             st->total == 1 ? "" : "s", max, st->active, st->idle, st->idle_in_transaction, rate);
}

void inspect_actions_monitor_report(struct action_run *run, const struct snapshot *prev,
                                    const struct snapshot *cur)
{
    struct stats_report stats;
    if (!stats_compute(prev, cur, run->opts, &stats)) {
        out_of_memory(run);
        return;
    }
    run->data = report_json_stats(&stats, cur, run->opts);
    char text[400];
    describe_stats(text, sizeof(text), &stats, run->source->mode);
    conclude(run, stats_utilization_status(&stats, run->opts), text);
    stats_report_free(&stats);
}

void inspect_actions_monitor(struct action_run *run)
{
    struct inspect_samples s;
    if (!open_samples(run, &s, true))
        return;
    inspect_actions_monitor_report(run, prev_of(&s), &s.cur);
    samples_free(&s);
}

static void describe_leaks(char *out, size_t len, const struct leak_report *leaks)
{
    if (!leaks->detected) {
        snprintf(out, len, "no leaked connections suspected (%.1f%% of the server in use)",
                 leaks->utilization_pct);
        return;
    }
    const struct leak_suspect *worst = &leaks->suspects[0];
    char idle[32];
    snprintf(out, len,
             "%zu suspected leak%s, confidence %d%%, risk %s; worst: pid %d (%s, app '%s') %s "
             "for %s, score %d",
             leaks->total_suspected, leaks->total_suspected == 1 ? "" : "s", leaks->confidence,
             leaks_risk_name(leaks->risk_level), worst->conn->pid, worst->conn->user,
             worst->conn->application, snapshot_conn_state_name(worst->conn->state),
             units_format_duration(worst->idle_ms, idle, sizeof(idle)), worst->score);
}

void inspect_actions_detect_leaks(struct action_run *run)
{
    struct inspect_samples s;
    if (!open_samples(run, &s, true))
        return;
    struct leak_report leaks;
    if (!leaks_detect(prev_of(&s), &s.cur, run->opts, &leaks)) {
        out_of_memory(run);
        samples_free(&s);
        return;
    }
    run->data = report_json_leaks(&leaks, &s.cur);
    char text[400];
    describe_leaks(text, sizeof(text), &leaks);
    conclude(run, leaks_status(&leaks), text);
    leaks_report_free(&leaks);
    samples_free(&s);
}

/* Probes first (they must work against a dead server), then one snapshot for headroom when
 * the server answers. */
static void run_health(struct action_run *run, struct inspect_samples *s, bool *have_snapshot,
                       struct health_probe **probes_out, size_t *n_out,
                       struct health_report *health)
{
    size_t n = run->opts->health_connections > 0 ? (size_t)run->opts->health_connections : 1;
    struct health_probe *probes = calloc(n, sizeof(*probes));
    if (probes == NULL) {
        *probes_out = NULL;
        *n_out = 0;
        health_summarize(NULL, 0, NULL, run->opts, health);
        return;
    }
    run->source->probe(run->conninfo, n, run->probe_timeout_ms, probes);
    *have_snapshot = false;
    if (s->conn != NULL) {
        struct inspect_error err = {0};
        *have_snapshot = run->source->take_snapshot(s->conn, run->opts, 0, &s->cur, &err);
    }
    health_summarize(probes, n, *have_snapshot ? &s->cur : NULL, run->opts, health);
    *probes_out = probes;
    *n_out = n;
}

void inspect_actions_health_check(struct action_run *run)
{
    struct inspect_samples s;
    memset(&s, 0, sizeof(s));
    struct inspect_error err = {0};
    s.conn = run->source->connect(run->conninfo, &run->target, &err);
    run->have_target = true;
    /* An unreachable target is a health verdict (every probe fails); a target that cannot
     * be probed at all (too old, malformed) is not. */
    if (s.conn == NULL &&
        (strcmp(err.code, "server_too_old") == 0 || strcmp(err.code, "bad_input") == 0)) {
        fail(run, &err);
        return;
    }
    bool have_snapshot = false;
    struct health_probe *probes;
    size_t n;
    struct health_report health;
    run_health(run, &s, &have_snapshot, &probes, &n, &health);
    run->data = report_json_health(&health, probes, n);
    conclude(run, health.status, health.reason);
    free(probes);
    if (!have_snapshot)
        memset(&s.cur, 0, sizeof(s.cur));
    samples_free(&s);
}

void inspect_actions_auto_scale(struct action_run *run)
{
    struct inspect_samples s;
    if (!open_samples(run, &s, true))
        return;
    struct scaling_decision scaling;
    scaling_decide(prev_of(&s), &s.cur, run->opts, run->opts->current_size, &scaling);
    /* Inspect mode never applies: the pool being sized is not ours. */
    scaling.applied = false;
    run->data = report_json_scaling(&scaling);
    snprintf(run->verdict, sizeof(run->verdict), "%s: pool %d -> %d (recommendation only)",
             scaling_words[scaling.decision], scaling.current_size, scaling.target_size);
    run->exit_code = report_status_exit_code(REPORT_OK);
    samples_free(&s);
}

/* Asks on a terminal before terminating sessions, unless --yes was given. */
static bool confirm_kill(const struct action_run *run, size_t planned)
{
    if (run->assume_yes || !isatty(STDIN_FILENO))
        return true;
    fprintf(stderr, "Terminate %zu session%s on %s? [y/N] ", planned, planned == 1 ? "" : "s",
            run->target.host);
    char answer[16];
    if (fgets(answer, sizeof(answer), stdin) == NULL)
        return false;
    return answer[0] == 'y' || answer[0] == 'Y';
}

/* The verdict's note on sessions the role could not see: a run that found nothing must not
 * read as "nothing is idle" when part of the server was hidden from it. */
static void hidden_note(const struct kill_plan *plan, char *out, size_t len)
{
    out[0] = '\0';
    if (plan->hidden > 0)
        snprintf(out, len,
                 "; %zu session%s hidden from this role (it needs pg_read_all_stats) "
                 "%s not examined",
                 plan->hidden, plan->hidden == 1 ? "" : "s", plan->hidden == 1 ? "was" : "were");
}

static size_t count_planned(const struct kill_plan *plan)
{
    size_t n = 0;
    for (size_t i = 0; i < plan->n_actions; i++)
        if (plan->actions[i].result == KILL_PLANNED)
            n++;
    return n;
}

void inspect_actions_kill_idle(struct action_run *run)
{
    struct inspect_samples s;
    if (!open_samples(run, &s, false))
        return;
    struct inspect_error denied = {0};
    if (run->opts->execute && !run->source->may_kill(s.conn, &s.cur, &run->target, &denied)) {
        fail(run, &denied);
        samples_free(&s);
        return;
    }
    struct kill_plan plan;
    if (!reaper_plan(&s.cur, run->opts, &plan)) {
        out_of_memory(run);
        samples_free(&s);
        return;
    }
    size_t planned = count_planned(&plan);
    char hidden[160];
    hidden_note(&plan, hidden, sizeof(hidden));
    run->exit_code = report_status_exit_code(REPORT_OK);
    if (run->opts->execute && planned > 0) {
        if (!confirm_kill(run, planned)) {
            struct inspect_error err = {0};
            inspect_session_error_set(&err, "refused", NULL, "not confirmed; nothing was done");
            fail(run, &err);
            reaper_kill_plan_free(&plan);
            samples_free(&s);
            return;
        }
        /* Test hook: widens the window between plan and act so the integration tests can
         * prove that a session which wakes up inside it is spared. */
        const char *pause = getenv("PGWARDEN_TEST_PAUSE_BEFORE_EXECUTE_MS");
        if (pause != NULL)
            sleep_ms(atoll(pause));
        run->source->kill(s.conn, run->opts, &s.cur, &plan);
        size_t problems = 0;
        for (size_t i = 0; i < plan.n_actions; i++)
            if (plan.actions[i].result == KILL_DENIED || plan.actions[i].result == KILL_FAILED)
                problems++;
        snprintf(run->verdict, sizeof(run->verdict),
                 "%s: terminated %zu of %zu planned session%s (limit %d = %.0f%% of %d client "
                 "connections)%s%s",
                 problems ? "WARNING" : "OK", plan.killed, planned, planned == 1 ? "" : "s",
                 plan.limit, run->opts->max_kill_percentage, plan.client_connections,
                 problems ? "; some could not be terminated" : "", hidden);
        if (problems)
            run->exit_code = report_status_exit_code(REPORT_WARNING);
    } else if (run->opts->execute) {
        snprintf(run->verdict, sizeof(run->verdict), "OK: nothing to terminate (%zu candidates)%s",
                 plan.candidates, hidden);
    } else {
        snprintf(run->verdict, sizeof(run->verdict),
                 "DRY RUN: %zu candidate%s, %zu would be terminated (limit %d = %.0f%% of %d "
                 "client connections)%s; add --execute to act",
                 plan.candidates, plan.candidates == 1 ? "" : "s", planned, plan.limit,
                 run->opts->max_kill_percentage, plan.client_connections, hidden);
    }
    run->data = report_json_kill_plan(&plan, &s.cur);
    reaper_kill_plan_free(&plan);
    samples_free(&s);
}

void inspect_actions_full_analysis(struct action_run *run)
{
    struct inspect_samples s;
    if (!open_samples(run, &s, true))
        return;
    struct stats_report stats;
    struct leak_report leaks;
    struct kill_plan idle;
    bool stats_ok = stats_compute(prev_of(&s), &s.cur, run->opts, &stats);
    bool leaks_ok = stats_ok && leaks_detect(prev_of(&s), &s.cur, run->opts, &leaks);
    bool idle_ok = leaks_ok && reaper_plan(&s.cur, run->opts, &idle);
    if (!idle_ok) {
        if (leaks_ok)
            leaks_report_free(&leaks);
        if (stats_ok)
            stats_report_free(&stats);
        out_of_memory(run);
        samples_free(&s);
        return;
    }
    struct scaling_decision scaling;
    scaling_decide(prev_of(&s), &s.cur, run->opts, run->opts->current_size, &scaling);

    size_t n_probes = run->opts->health_connections > 0 ? (size_t)run->opts->health_connections : 1;
    struct health_probe *probes = calloc(n_probes, sizeof(*probes));
    struct health_report health;
    if (probes != NULL) {
        run->source->probe(run->conninfo, n_probes, run->probe_timeout_ms, probes);
        health_summarize(probes, n_probes, &s.cur, run->opts, &health);
    } else {
        n_probes = 0;
        health_summarize(NULL, 0, &s.cur, run->opts, &health);
    }

    struct analysis_report analysis = {
        .stats = &stats, .leaks = &leaks, .health = &health, .scaling = &scaling, .idle = &idle};
    analysis_run(prev_of(&s), &s.cur, run->opts, &analysis);
    run->data = report_json_analysis(&analysis, &s.cur, probes, n_probes, run->opts);
    char stats_text[300], text[400];
    describe_stats(stats_text, sizeof(stats_text), &stats, run->source->mode);
    snprintf(text, sizeof(text), "%s; %zu anomal%s, %zu recommendation%s, leak risk %s", stats_text,
             analysis.n_anomalies, analysis.n_anomalies == 1 ? "y" : "ies",
             analysis.n_recommendations, analysis.n_recommendations == 1 ? "" : "s",
             leaks_risk_name(leaks.risk_level));
    conclude(run, analysis.status, text);
    free(probes);
    reaper_kill_plan_free(&idle);
    leaks_report_free(&leaks);
    stats_report_free(&stats);
    samples_free(&s);
}

/* One snapshot, no probes: fast enough for a prompt, cron or a load balancer check. */
/* A threshold as a count of connections for perfdata (a share is taken of the capacity);
 * "" when unset or not convertible. */
static void threshold_count(char *out, size_t len, const struct options_threshold *t, int max)
{
    out[0] = '\0';
    if (!t->set)
        return;
    if (!t->percent)
        snprintf(out, len, "%g", t->value);
    else if (max > 0)
        snprintf(out, len, "%g", t->value * max / 100.0);
}

/* Nagios plugin perfdata ('label'=value[UOM];[warn];[crit];[min];[max], space-separated), as
 * check_postgres prints it after '|', so graphing picks the numbers up. */
static void format_perfdata(char *out, size_t len, const struct stats_report *st,
                            const struct leak_report *leaks, const struct manager_options *o)
{
    char w[32], c[32], max[32] = "";
    threshold_count(w, sizeof(w), &o->status_warning, st->max);
    threshold_count(c, sizeof(c), &o->status_critical, st->max);
    if (st->max > 0)
        snprintf(max, sizeof(max), "%d", st->max);
    int n = snprintf(out, len,
                     "connections=%d;%s;%s;0;%s utilization=%.1f%%;;;0;100 total=%d "
                     "idle_in_transaction=%d waiting=%d leak_suspects=%zu",
                     st->in_use, w, c, max, st->utilization_pct, st->total, st->idle_in_transaction,
                     st->waiting, leaks->total_suspected);
    if (n < 0 || (size_t)n >= len)
        out[len - 1] = '\0';
}

void inspect_actions_status(struct action_run *run)
{
    struct inspect_samples s;
    if (!open_samples(run, &s, false))
        return;
    struct stats_report stats;
    struct leak_report leaks;
    if (!stats_compute(NULL, &s.cur, run->opts, &stats)) {
        out_of_memory(run);
        samples_free(&s);
        return;
    }
    if (!leaks_detect(NULL, &s.cur, run->opts, &leaks)) {
        stats_report_free(&stats);
        out_of_memory(run);
        samples_free(&s);
        return;
    }
    enum report_status status = analysis_quick_status(&stats, &leaks, run->opts);
    char stats_text[300], text[400];
    describe_stats(stats_text, sizeof(stats_text), &stats, run->source->mode);
    snprintf(text, sizeof(text), "%s; %zu leak suspect%s", stats_text, leaks.total_suspected,
             leaks.total_suspected == 1 ? "" : "s");
    conclude(run, status, text);
    char perfdata[400];
    format_perfdata(perfdata, sizeof(perfdata), &stats, &leaks, run->opts);
    cJSON *data = cJSON_CreateObject();
    cJSON_AddStringToObject(data, "status", report_status_name(status));
    cJSON_AddStringToObject(data, "message", run->verdict);
    cJSON_AddStringToObject(data, "perfdata", perfdata);
    /* The verdict line is what a monitoring system reads: text, then perfdata after '|'. */
    size_t at = strlen(run->verdict);
    snprintf(run->verdict + at, sizeof(run->verdict) - at, " | %s", perfdata);
    cJSON_AddItemToObject(data, "statistics", report_json_stats(&stats, NULL, run->opts));
    cJSON_AddNumberToObject(data, "leak_suspects", (double)leaks.total_suspected);
    cJSON_AddNumberToObject(data, "leak_confidence", leaks.confidence);
    run->data = data;
    leaks_report_free(&leaks);
    stats_report_free(&stats);
    samples_free(&s);
}

/* Argument parsing and the run of one action: config file, options, handler, output. */
#include "cli/cli.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/actions.h"
#include "cli/render.h"
#include "cli/target_source.h"
#include "cli/watch.h"
#include "common/log.h"
#include "common/timestamp.h"
#include "common/units.h"
#include "config/ini.h"
#include "manager/options.h"

struct cli_invocation {
    const struct action_def *action;
    const char *target; /* borrowed from argv */
    enum output_format format;
    const char *config_path;
    bool assume_yes;
    bool help;
    int probe_timeout_ms;
    int64_t watch_ms; /* 0 = one report */
    long watch_count; /* 0 = until interrupted */
    struct manager_options opts;
};

/* --watch: at least watch(1)'s tenth of a second, so a typo cannot hammer the target. */
#define WATCH_MIN_MS 100
#define WATCH_MAX_MS (24 * 3600 * 1000)

void cli_print_usage(FILE *out)
{
    fprintf(out,
            "pgwarden %s - PostgreSQL connection pooler with a built-in pool manager\n\n"
            "Usage:\n"
            "  pgwarden serve [-c FILE] [-d] [-q] [-v] [-u USER]  run the pooler\n"
            "  pgwarden [-d] [-q] [-v] [-u USER] FILE.ini         the same, as PgBouncer\n"
            "  pgwarden ACTION [--target T] [--format table|json] [options]\n\n"
            "Actions (T is a PostgreSQL connection string or URI, or a running pgwarden as\n"
            "pgwarden://[USER[:PASSWORD]@]HOST:PORT; without it, DATABASE_URL or the PG*\n"
            "variables are used):\n",
            PGWARDEN_VERSION);
    for (const struct action_def *a = actions_all(); a->name != NULL; a++)
        fprintf(out, "  %-15s %s\n", a->name, a->summary);
    fprintf(out, "\nRun 'pgwarden serve --help' for the pooler's options and signals, and\n"
                 "'pgwarden ACTION --help' for the options of an action.\n"
                 "Exit codes: 0 ok, 1 warning, 2 critical, 3 could not run, 4 refused by a "
                 "safety guard.\n");
}

bool cli_is_pgbouncer_command_line(const char *arg)
{
    if (arg[0] == '-')
        return true;
    if (actions_find(arg) != NULL)
        return false;
    size_t n = strlen(arg);
    struct stat st;
    return strchr(arg, '/') != NULL || (n > 4 && strcmp(arg + n - 4, ".ini") == 0) ||
           stat(arg, &st) == 0;
}

static void print_option_help(void *ctx, const char *key, const char *default_text,
                              const char *meaning)
{
    FILE *out = ctx;
    char flag[64];
    snprintf(flag, sizeof(flag), "--%s", key);
    for (char *c = flag + 2; *c; c++)
        if (*c == '_')
            *c = '-';
    fprintf(out, "  %-28s %s%s%s%s\n", flag, meaning, default_text[0] ? " (default " : "",
            default_text, default_text[0] ? ")" : "");
}

static void print_action_help(const struct action_def *action, FILE *out)
{
    fprintf(out, "Usage: pgwarden %s [--target T] [--format table|json] [options]\n\n%s.\n\n%s\n\n",
            action->name, action->summary, action->details);
    fprintf(out, "Common options:\n"
                 "  --target T, -t T             PostgreSQL connection string or URI, or "
                 "pgwarden://[USER[:PASSWORD]@]HOST:PORT\n"
                 "                               (default: DATABASE_URL, then PG* variables)\n"
                 "  --format F, -f F             table (default) or json\n"
                 "  --config FILE, -c FILE       read [manager] settings from an ini file\n");
    if (action->option_use & (OPTION_USE_HEALTH_CHECK | OPTION_USE_FULL_ANALYSIS))
        fprintf(out, "  --timeout D                  timeout of each probe (default 5s)\n");
    if (action->option_use & OPTION_USE_KILL_IDLE)
        fprintf(out, "  --yes, -y                    do not ask before --execute on a terminal\n");
    fprintf(out, "  --verbose, -v                log what is done to stderr\n"
                 "  --help, -h                   this text\n\n");
    if (action->watch_report != NULL)
        fprintf(out, "Watch options:\n"
                     "  --watch D                    report again every D (500ms, 2s) over one\n"
                     "                               connection until Ctrl-C; redrawn on a\n"
                     "                               terminal, JSON Lines with --format json\n"
                     "  --count N                    with --watch: stop after N reports\n\n");
    fprintf(out, "Manager options (durations take units: 300s, 5min, 250ms; shares: 25%%):\n");
    options_describe(action->option_use, print_option_help, out);
    fprintf(out, "\nExit codes: 0 ok, 1 warning, 2 critical, 3 could not run, 4 refused by a "
                 "safety guard.\n");
}

struct config_load_ctx {
    struct manager_options *opts;
};

/* Only [manager] matters to the actions; other sections belong to `serve` and are skipped
 * so one pgwarden.ini serves both. */
static bool config_entry(void *ctx, const char *section, const char *key, const char *value,
                         const char *file, int line, char *err, size_t err_len)
{
    struct config_load_ctx *c = ctx;
    if (strcmp(section, "manager") != 0)
        return true;
    char why[256];
    enum options_result r = options_set(c->opts, key, value, why, sizeof(why));
    if (r == OPTIONS_UNKNOWN_KEY) {
        log_warning("config", "%s:%d: unknown [manager] key '%s' ignored", file, line, key);
        return true;
    }
    if (r != OPTIONS_OK) {
        snprintf(err, err_len, "%s", why);
        return false;
    }
    return true;
}

/* ---- the command line's own options (the manager's come from manager/options) ---- */

/* The options that narrow what an action looks at and acts on. An empty value clears one in
 * a config file; on the command line it is refused: `--application "$APP"` with APP unset
 * would widen kill-idle --execute to every application. */
static bool is_scope_filter(const char *key)
{
    static const char *const filters[] = {"user", "database", "application"};
    for (size_t i = 0; i < sizeof(filters) / sizeof(filters[0]); i++)
        if (!strcmp(key, filters[i]))
            return true;
    return false;
}

typedef bool (*cli_option_fn)(struct cli_invocation *inv, const char *value, char *err,
                              size_t err_len);

static bool set_target(struct cli_invocation *inv, const char *value, char *err, size_t err_len)
{
    (void)err;
    (void)err_len;
    inv->target = value;
    return true;
}

static bool set_format(struct cli_invocation *inv, const char *value, char *err, size_t err_len)
{
    static const struct {
        const char *name;
        enum output_format format;
    } formats[] = {{"table", OUTPUT_TABLE}, {"json", OUTPUT_JSON}};
    for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++)
        if (!strcmp(value, formats[i].name)) {
            inv->format = formats[i].format;
            return true;
        }
    snprintf(err, err_len, "--format must be table or json, not '%s'", value);
    return false;
}

static bool skip_config(struct cli_invocation *inv, const char *value, char *err, size_t err_len)
{
    (void)inv;
    (void)value;
    (void)err;
    (void)err_len;
    return true; /* applied in the first pass */
}

static bool set_timeout(struct cli_invocation *inv, const char *value, char *err, size_t err_len)
{
    int64_t ms;
    char why[256];
    if (!units_parse_duration_ms(value, &ms, why, sizeof(why)) || ms <= 0 || ms > 3600000) {
        snprintf(err, err_len, "--timeout: '%s' is not a duration between 1ms and 1h", value);
        return false;
    }
    inv->probe_timeout_ms = (int)ms;
    return true;
}

static bool set_watch(struct cli_invocation *inv, const char *value, char *err, size_t err_len)
{
    int64_t ms;
    char why[256];
    if (!units_parse_duration_ms(value, &ms, why, sizeof(why)) || ms < WATCH_MIN_MS ||
        ms > WATCH_MAX_MS) {
        snprintf(err, err_len, "--watch: '%s' is not a duration between 100ms and 1d", value);
        return false;
    }
    inv->watch_ms = ms;
    return true;
}

static bool set_count(struct cli_invocation *inv, const char *value, char *err, size_t err_len)
{
    char *end;
    long n = strtol(value, &end, 10);
    if (end == value || *end != '\0' || n < 1) {
        snprintf(err, err_len, "--count: '%s' is not a whole number of at least 1", value);
        return false;
    }
    inv->watch_count = n;
    return true;
}

/* Switches take no value ("--yes"), or an explicit "--yes=off". */
static bool switch_on(const char *value)
{
    return value == NULL || !strcmp(value, "on") || !strcmp(value, "true") ||
           !strcmp(value, "yes") || !strcmp(value, "1");
}

static bool set_help(struct cli_invocation *inv, const char *value, char *err, size_t err_len)
{
    (void)err;
    (void)err_len;
    inv->help = switch_on(value);
    return true;
}

static bool set_yes(struct cli_invocation *inv, const char *value, char *err, size_t err_len)
{
    (void)err;
    (void)err_len;
    inv->assume_yes = switch_on(value);
    return true;
}

static bool set_verbose(struct cli_invocation *inv, const char *value, char *err, size_t err_len)
{
    (void)inv;
    (void)err;
    (void)err_len;
    log_configure(switch_on(value) ? LOG_LEVEL_DEBUG : LOG_LEVEL_WARNING, LOG_FORMAT_TEXT, NULL);
    return true;
}

static bool set_execute(struct cli_invocation *inv, const char *value, char *err, size_t err_len)
{
    (void)err;
    (void)err_len;
    inv->opts.execute = switch_on(value);
    return true;
}

static const struct cli_option {
    const char *name;
    const char *short_name; /* "-t", or NULL */
    bool takes_value;
    cli_option_fn apply;
} CLI_OPTIONS[] = {
    {"target", "-t", true, set_target},    {"format", "-f", true, set_format},
    {"config", "-c", true, skip_config},   {"timeout", NULL, true, set_timeout},
    {"watch", NULL, true, set_watch},      {"count", NULL, true, set_count},
    {"help", "-h", false, set_help},       {"yes", "-y", false, set_yes},
    {"verbose", "-v", false, set_verbose}, {"execute", NULL, false, set_execute},
};

static const struct cli_option *cli_option_named(const char *name)
{
    for (size_t i = 0; i < sizeof(CLI_OPTIONS) / sizeof(CLI_OPTIONS[0]); i++)
        if (!strcmp(CLI_OPTIONS[i].name, name))
            return &CLI_OPTIONS[i];
    return NULL;
}

static const char *long_name_of(const char *arg)
{
    for (size_t i = 0; i < sizeof(CLI_OPTIONS) / sizeof(CLI_OPTIONS[0]); i++)
        if (CLI_OPTIONS[i].short_name && !strcmp(arg, CLI_OPTIONS[i].short_name))
            return CLI_OPTIONS[i].name;
    if (strncmp(arg, "--", 2) == 0 && arg[2] != '\0')
        return arg + 2;
    return NULL;
}

/* --watch only where the registry has a watch_report; --count only with --watch. */
static bool check_watch(const struct cli_invocation *inv, char *err, size_t err_len)
{
    if (inv->watch_ms > 0 && inv->action->watch_report == NULL) {
        char names[256] = "";
        size_t used = 0;
        for (const struct action_def *a = actions_all(); a->name != NULL; a++) {
            if (a->watch_report != NULL && used < sizeof(names))
                used += (size_t)snprintf(names + used, sizeof(names) - used, "%s%s",
                                         used ? ", " : "", a->name);
        }
        snprintf(err, err_len, "--watch is not available for %s (only for %s)", inv->action->name,
                 names);
        return false;
    }
    if (inv->watch_count > 0 && inv->watch_ms == 0) {
        snprintf(err, err_len, "--count needs --watch");
        return false;
    }
    return true;
}

/* Parses argv into inv. Returns false with one sentence in err. */
static bool parse_args(int argc, char **argv, struct cli_invocation *inv, char *err, size_t err_len)
{
    /* The config file is applied first so that command-line options override it. */
    for (int i = 1; i < argc; i++) {
        const char *name = long_name_of(argv[i]);
        if (name != NULL && strncmp(name, "config", 6) == 0 &&
            (name[6] == '\0' || name[6] == '=')) {
            inv->config_path = name[6] == '=' ? name + 7 : (i + 1 < argc ? argv[i + 1] : NULL);
            if (inv->config_path == NULL) {
                snprintf(err, err_len, "--config needs a file name");
                return false;
            }
            struct config_load_ctx ctx = {&inv->opts};
            char why[512];
            if (!ini_parse_file(inv->config_path, config_entry, &ctx, why, sizeof(why))) {
                snprintf(err, err_len, "%s", why);
                return false;
            }
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *name = long_name_of(arg);
        if (name == NULL) {
            snprintf(err, err_len, "unexpected argument '%s' (options start with --)", arg);
            return false;
        }
        char key[64];
        const char *value = NULL;
        const char *eq = strchr(name, '=');
        if (eq != NULL) {
            snprintf(key, sizeof(key), "%.*s", (int)(eq - name), name);
            value = eq + 1;
        } else {
            snprintf(key, sizeof(key), "%s", name);
        }
        const struct cli_option *own = cli_option_named(key);
        if (!own && !options_is_known_key(key)) {
            snprintf(err, err_len, "unknown option --%s (see pgwarden %s --help)", key,
                     inv->action->name);
            return false;
        }
        bool takes_value = own ? own->takes_value : true;
        if (takes_value && value == NULL) {
            if (i + 1 >= argc) {
                snprintf(err, err_len, "option --%s needs a value", key);
                return false;
            }
            value = argv[++i];
        }
        if (own) {
            if (!own->apply(inv, value, err, err_len))
                return false;
            continue;
        }
        if (!value[0] && is_scope_filter(key)) {
            snprintf(err, err_len,
                     "option --%s needs a non-empty value (an empty one, say from an unset "
                     "variable, would select every %s)",
                     key, key);
            return false;
        }
        char why[256];
        if (options_set(&inv->opts, key, value, why, sizeof(why)) != OPTIONS_OK) {
            snprintf(err, err_len, "%s", why);
            return false;
        }
    }
    return check_watch(inv, err, err_len) && options_validate(&inv->opts, err, err_len);
}

/* Reports a usage error in the requested format: JSON callers always get one document. */
static int usage_error(const char *action_name, bool json, const char *message)
{
    if (json) {
        struct action_run run = {0};
        run.failed = true;
        snprintf(run.error.code, sizeof(run.error.code), "bad_input");
        snprintf(run.error.message, sizeof(run.error.message), "%s", message);
        char ts[40];
        timestamp_format_iso(timestamp_now_ms(), ts, sizeof(ts));
        render_json(&run, action_name, ts, 0.0, stdout);
    } else {
        fprintf(stderr, "pgwarden %s: %s\n", action_name, message);
    }
    return EXIT_CANNOT_RUN;
}

/* Whether --format json was asked for, looked up before full parsing so that even a parse
 * error comes back as JSON. */
static bool wants_json(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if ((strcmp(argv[i], "--format") == 0 || strcmp(argv[i], "-f") == 0) && i + 1 < argc &&
            strcmp(argv[i + 1], "json") == 0)
            return true;
        if (strcmp(argv[i], "--format=json") == 0)
            return true;
    }
    return false;
}

int cli_run_action(int argc, char **argv)
{
    bool json = wants_json(argc, argv);
    const struct action_def *action = actions_find(argv[0]);
    if (action == NULL) {
        char msg[256];
        snprintf(msg, sizeof(msg), "unknown action '%s' (run 'pgwarden --help' for the list)",
                 argv[0]);
        return usage_error(argv[0], json, msg);
    }
    log_configure(LOG_LEVEL_WARNING, LOG_FORMAT_TEXT, NULL);

    struct cli_invocation inv = {
        .action = action, .format = OUTPUT_TABLE, .probe_timeout_ms = 5000};
    options_init_defaults(&inv.opts);
    char err[512];
    if (!parse_args(argc, argv, &inv, err, sizeof(err))) {
        options_free(&inv.opts);
        return usage_error(action->name, json, err);
    }
    if (inv.help) {
        print_action_help(action, stdout);
        options_free(&inv.opts);
        return EXIT_OK;
    }

    char ts[40];
    timestamp_format_iso(timestamp_now_ms(), ts, sizeof(ts));
    double started = timestamp_monotonic_ms();
    const char *conninfo = inspect_session_resolve_conninfo(inv.target);
    struct action_run run = {
        .action = action,
        .opts = &inv.opts,
        .conninfo = conninfo,
        .source = target_source_for(conninfo),
        .assume_yes = inv.assume_yes,
        .probe_timeout_ms = inv.probe_timeout_ms,
    };
    if (inv.watch_ms > 0) {
        struct watch_request req = {
            .base = &run, .format = inv.format, .every_ms = inv.watch_ms, .count = inv.watch_count};
        int code = watch_run(&req);
        options_free(&inv.opts);
        return code;
    }
    action->handler(&run);
    double duration = timestamp_monotonic_ms() - started;

    if (inv.format == OUTPUT_JSON)
        render_json(&run, action->name, ts, duration, stdout);
    else
        render_table(&run, stdout, stderr);

    int code = (int)run.exit_code;
    cJSON_Delete(run.data);
    options_free(&inv.opts);
    return code;
}

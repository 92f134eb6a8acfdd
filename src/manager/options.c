/* Manager settings: ONE table drives parsing, defaults and --help, so a key cannot be
 * accepted, defaulted and documented three different ways. */
#include "manager/options.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/cidr.h"
#include "common/units.h"
#include "manager/reclaim.h"

enum option_kind {
    OPT_DURATION,     /* int64_t milliseconds, > 0 */
    OPT_DURATION_OFF, /* int64_t milliseconds, 0 = off */
    OPT_PERCENT,      /* double, 0-100 */
    OPT_BOOL,         /* bool */
    OPT_INT,          /* int within [min, max] */
    OPT_STRING,       /* char * (owned), "" clears */
    OPT_LIST,         /* parsed by its own setter (lists, choices) */
};

typedef enum options_result (*option_setter_fn)(struct manager_options *opts, const char *key,
                                                const char *value, char *err, size_t err_len);

struct option_spec {
    const char *key; /* underscore spelling */
    enum option_kind kind;
    size_t offset;
    option_setter_fn setter; /* OPT_LIST only */
    int min, max;            /* OPT_INT only */
    const char *default_text;
    const char *meaning;
    unsigned uses; /* enum option_use bits: where the option matters (per-action --help) */
};

static enum options_result add_exclude_users(struct manager_options *opts, const char *key,
                                             const char *value, char *err, size_t err_len);
static enum options_result add_exclude_apps(struct manager_options *opts, const char *key,
                                            const char *value, char *err, size_t err_len);
static enum options_result add_exclude_addrs(struct manager_options *opts, const char *key,
                                             const char *value, char *err, size_t err_len);
static enum options_result set_leak_reclaim(struct manager_options *opts, const char *key,
                                            const char *value, char *err, size_t err_len);
static enum options_result set_threshold(struct manager_options *opts, const char *key,
                                         const char *value, char *err, size_t err_len);

#define FIELD(name) offsetof(struct manager_options, name)
#define U_MONITOR   OPTION_USE_MONITOR
#define U_LEAKS     OPTION_USE_DETECT_LEAKS
#define U_HEALTH    OPTION_USE_HEALTH_CHECK
#define U_SCALE     OPTION_USE_AUTO_SCALE
#define U_KILL      OPTION_USE_KILL_IDLE
#define U_ANALYSIS  OPTION_USE_FULL_ANALYSIS
#define U_STATUS    OPTION_USE_STATUS
#define U_SERVE     OPTION_USE_SERVE
/* The filters narrow what every action but health-check looks at. */
#define U_FILTERED (U_MONITOR | U_LEAKS | U_SCALE | U_KILL | U_ANALYSIS | U_STATUS)

static const struct option_spec option_table[] = {
    {"idle_timeout", OPT_DURATION, FIELD(idle_timeout_ms), NULL, 0, 0, "300s",
     "a connection idle this long is a kill-idle candidate",
     U_LEAKS | U_KILL | U_ANALYSIS | U_STATUS | U_SERVE},
    {"max_connection_age", OPT_DURATION_OFF, FIELD(max_connection_age_ms), NULL, 0, 0, "3600s",
     "older connections are retired (serve) or flagged (inspect); 0 turns this off",
     U_LEAKS | U_ANALYSIS | U_STATUS | U_SERVE},
    {"leak_detection_threshold", OPT_PERCENT, FIELD(leak_detection_threshold_pct), NULL, 0, 0,
     "80%", "pool/server utilisation above which leak suspects raise the risk level",
     U_MONITOR | U_LEAKS | U_ANALYSIS | U_STATUS | U_SERVE},
    {"leak_hold_threshold", OPT_DURATION, FIELD(leak_hold_threshold_ms), NULL, 0, 0, "60s",
     "idle-in-transaction or held-without-activity time that makes a suspect",
     U_LEAKS | U_KILL | U_ANALYSIS | U_STATUS | U_SERVE},
    {"leak_reclaim", OPT_LIST, 0, set_leak_reclaim, 0, 0, "off",
     "serve: how far the manager may go with a leak suspect, one step at a time: off, notice, "
     "cancel, rollback, disconnect",
     U_SERVE},
    {"health_check_interval", OPT_DURATION, FIELD(health_check_interval_ms), NULL, 0, 0, "30s",
     "background health probes (serve)", U_SERVE},
    {"live", OPT_BOOL, FIELD(live), NULL, 0, 0, "on",
     "serve: run the manager inside the pooler (read at start; off: the pools are served and "
     "nothing watches them)",
     U_SERVE},
    {"auto_scaling", OPT_BOOL, FIELD(auto_scaling), NULL, 0, 0, "on",
     "apply scaling decisions (serve); off = recommend only", U_SERVE},
    {"max_kill_percentage", OPT_PERCENT, FIELD(max_kill_percentage), NULL, 0, 0, "25%",
     "kill-idle never removes more than this share of client connections per run",
     U_KILL | U_ANALYSIS | U_SERVE},
    {"min_pool_size", OPT_INT, FIELD(min_pool_size), NULL, 0, 100000, "5",
     "smallest pool auto-scaling proposes", U_SCALE | U_ANALYSIS | U_SERVE},
    {"max_pool_size", OPT_INT, FIELD(max_pool_size), NULL, 1, 100000, "100",
     "largest pool auto-scaling proposes", U_SCALE | U_ANALYSIS | U_SERVE},
    {"growth_rate", OPT_PERCENT, FIELD(growth_rate_pct), NULL, 0, 0, "20%",
     "largest growth step of one scaling decision (0 = never grow)",
     U_SCALE | U_ANALYSIS | U_SERVE},
    {"shrink_rate", OPT_PERCENT, FIELD(shrink_rate_pct), NULL, 0, 0, "15%",
     "largest shrink step of one scaling decision (0 = never shrink)",
     U_SCALE | U_ANALYSIS | U_SERVE},
    {"interval", OPT_DURATION_OFF, FIELD(interval_ms), NULL, 0, 0, "1s",
     "time between the two samples that give rates (0 = one sample, no rates; serve: how often "
     "auto-scaling decides, at least 1 s)",
     U_MONITOR | U_LEAKS | U_SCALE | U_ANALYSIS | U_SERVE},
    {"connections", OPT_INT, FIELD(health_connections), NULL, 1, 1000, "5",
     "parallel probe connections of health-check", U_HEALTH | U_ANALYSIS},
    {"current_size", OPT_INT, FIELD(current_size), NULL, -1, 100000, "-1",
     "auto-scale: pool size to scale from; -1 = observed", U_SCALE | U_ANALYSIS},
    {"execute", OPT_BOOL, FIELD(execute), NULL, 0, 0, "off",
     "kill-idle: terminate instead of only planning (dry run)", U_KILL},
    {"user", OPT_STRING, FIELD(filter_user), NULL, 0, 0, "",
     "only connections of this user (trailing * matches a prefix)", U_FILTERED},
    {"database", OPT_STRING, FIELD(filter_database), NULL, 0, 0, "",
     "only connections to this database (trailing * matches a prefix)", U_FILTERED},
    {"application", OPT_STRING, FIELD(filter_application), NULL, 0, 0, "",
     "only connections of this application_name (trailing * matches a prefix)", U_FILTERED},
    {"exclude_user", OPT_LIST, 0, add_exclude_users, 0, 0, "",
     "never kill connections of these users (repeatable, comma-separated)",
     U_KILL | U_ANALYSIS | U_SERVE},
    {"exclude_app", OPT_LIST, 0, add_exclude_apps, 0, 0, "",
     "never kill connections of these applications (repeatable, comma-separated)",
     U_KILL | U_ANALYSIS | U_SERVE},
    {"warning", OPT_LIST, 0, set_threshold, 0, 0, "",
     "status: WARNING from this many client connections in use, or this share of the "
     "capacity (80%); replaces the utilisation rule",
     U_STATUS},
    {"critical", OPT_LIST, 0, set_threshold, 0, 0, "",
     "status: CRITICAL from this many client connections in use, or this share of the "
     "capacity (95%)",
     U_STATUS},
    {"exclude_addr", OPT_LIST, 0, add_exclude_addrs, 0, 0, "",
     "never kill connections from these client addresses or CIDR blocks, e.g. another "
     "pooler's host (repeatable, comma-separated)",
     U_KILL | U_ANALYSIS | U_SERVE},
};

#define N_OPTIONS (sizeof(option_table) / sizeof(option_table[0]))
_Static_assert(N_OPTIONS <= 64, "explicitly_set has one bit per option");

/* "--idle-timeout" and "idle_timeout" name the same option. Returns false if too long. */
static bool normalize_key(const char *key, char *out, size_t out_len)
{
    if (key == NULL)
        return false;
    while (*key == '-')
        key++;
    size_t n = strlen(key);
    if (n == 0 || n >= out_len)
        return false;
    for (size_t i = 0; i <= n; i++)
        out[i] = key[i] == '-' ? '_' : key[i];
    return true;
}

static const struct option_spec *find_spec(const char *key)
{
    char norm[64];
    if (!normalize_key(key, norm, sizeof(norm)))
        return NULL;
    for (size_t i = 0; i < N_OPTIONS; i++) {
        if (strcasecmp(option_table[i].key, norm) == 0)
            return &option_table[i];
    }
    return NULL;
}

static bool parse_bool(const char *value, bool *out)
{
    static const char *const yes[] = {"on", "true", "yes", "1"};
    static const char *const no[] = {"off", "false", "no", "0"};
    if (value == NULL)
        return false;
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(value, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(value, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

static bool parse_int(const char *value, long *out)
{
    if (value == NULL || *value == '\0')
        return false;
    char *end;
    long v = strtol(value, &end, 10);
    end += strspn(end, " \t");
    if (end == value || *end != '\0')
        return false;
    *out = v;
    return true;
}

/* Appends each comma-separated name to list, skipping blanks and duplicates. */
/* The next item of a comma-separated list at *p, blanks trimmed: its start and length
 * (*len 0 for an empty item). Advances *p past it; false at the end of the list. */
static bool next_item(const char **p, const char **item, size_t *len)
{
    *p += strspn(*p, " \t,");
    if (**p == '\0')
        return false;
    size_t n = strcspn(*p, ",");
    *item = *p;
    *p += n;
    while (n > 0 && ((*item)[n - 1] == ' ' || (*item)[n - 1] == '\t'))
        n--;
    *len = n;
    return true;
}

static enum options_result add_names(char **list, size_t *n, const char *key, const char *value,
                                     char *err, size_t err_len)
{
    const char *rest = value ? value : "", *p;
    size_t trimmed;
    while (next_item(&rest, &p, &trimmed)) {
        if (trimmed > 0) {
            bool dup = false;
            for (size_t i = 0; i < *n; i++) {
                if (strlen(list[i]) == trimmed && strncmp(list[i], p, trimmed) == 0)
                    dup = true;
            }
            if (!dup) {
                if (*n >= OPTIONS_MAX_EXCLUDES) {
                    snprintf(err, err_len, "%s: cannot add '%.*s', the list already holds %d names",
                             key, (int)trimmed, p, OPTIONS_MAX_EXCLUDES);
                    return OPTIONS_BAD_VALUE;
                }
                char *copy = strndup(p, trimmed);
                if (copy == NULL) {
                    snprintf(err, err_len, "%s: out of memory", key);
                    return OPTIONS_NO_MEMORY;
                }
                list[(*n)++] = copy;
            }
        }
    }
    return OPTIONS_OK;
}

static enum options_result add_exclude_users(struct manager_options *opts, const char *key,
                                             const char *value, char *err, size_t err_len)
{
    return add_names(opts->exclude_users, &opts->n_exclude_users, key, value, err, err_len);
}

static enum options_result add_exclude_apps(struct manager_options *opts, const char *key,
                                            const char *value, char *err, size_t err_len)
{
    return add_names(opts->exclude_apps, &opts->n_exclude_apps, key, value, err, err_len);
}

static enum options_result add_exclude_addrs(struct manager_options *opts, const char *key,
                                             const char *value, char *err, size_t err_len)
{
    const char *rest = value ? value : "", *p;
    size_t trimmed;
    while (next_item(&rest, &p, &trimmed)) {
        if (trimmed > 0) {
            char item[CIDR_TEXT_LEN];
            snprintf(item, sizeof(item), "%.*s", (int)trimmed, p);
            struct cidr range;
            if (trimmed >= sizeof(item) || !cidr_parse(item, &range)) {
                snprintf(err, err_len,
                         "%s: '%.*s' is not an IP address or CIDR block (use 10.0.0.5, "
                         "10.1.0.0/16 or fd00::/8)",
                         key, (int)trimmed, p);
                return OPTIONS_BAD_VALUE;
            }
            bool dup = false;
            for (size_t i = 0; i < opts->n_exclude_addrs; i++)
                dup |= strcmp(opts->exclude_addrs[i].text, range.text) == 0;
            if (!dup) {
                if (opts->n_exclude_addrs >= OPTIONS_MAX_EXCLUDES) {
                    snprintf(err, err_len,
                             "%s: cannot add '%.*s', the list already holds %d addresses", key,
                             (int)trimmed, p, OPTIONS_MAX_EXCLUDES);
                    return OPTIONS_BAD_VALUE;
                }
                opts->exclude_addrs[opts->n_exclude_addrs++] = range;
            }
        }
    }
    return OPTIONS_OK;
}

enum options_result options_set(struct manager_options *opts, const char *key, const char *value,
                                char *err, size_t err_len)
{
    char scratch[256];
    if (err == NULL || err_len == 0) {
        err = scratch;
        err_len = sizeof(scratch);
    }
    err[0] = '\0';
    const struct option_spec *spec = find_spec(key);
    if (spec == NULL) {
        snprintf(err, err_len, "unknown manager option '%s'", key ? key : "");
        return OPTIONS_UNKNOWN_KEY;
    }
    const char *v = value ? value : "";
    char *field = (char *)opts + spec->offset;
    char why[160];
    opts->explicitly_set |= 1ull << (spec - option_table);

    switch (spec->kind) {
    case OPT_DURATION:
    case OPT_DURATION_OFF: {
        int64_t ms;
        if (!units_parse_duration_ms(v, &ms, why, sizeof(why))) {
            snprintf(err, err_len, "%s: %s", spec->key, why);
            return OPTIONS_BAD_VALUE;
        }
        if (ms == 0 && spec->kind == OPT_DURATION) {
            snprintf(err, err_len, "%s: '%s' must be longer than zero", spec->key, v);
            return OPTIONS_BAD_VALUE;
        }
        memcpy(field, &ms, sizeof(ms));
        return OPTIONS_OK;
    }
    case OPT_PERCENT: {
        double pct;
        if (!units_parse_percent(v, &pct, why, sizeof(why))) {
            snprintf(err, err_len, "%s: %s", spec->key, why);
            return OPTIONS_BAD_VALUE;
        }
        memcpy(field, &pct, sizeof(pct));
        return OPTIONS_OK;
    }
    case OPT_BOOL: {
        bool b;
        if (!parse_bool(v, &b)) {
            snprintf(err, err_len,
                     "%s: '%s' is not a boolean (use on/off, true/false, yes/no, 1/0)", spec->key,
                     v);
            return OPTIONS_BAD_VALUE;
        }
        memcpy(field, &b, sizeof(b));
        return OPTIONS_OK;
    }
    case OPT_INT: {
        long n;
        if (!parse_int(v, &n)) {
            snprintf(err, err_len, "%s: '%s' is not a whole number", spec->key, v);
            return OPTIONS_BAD_VALUE;
        }
        if (n < spec->min || n > spec->max) {
            snprintf(err, err_len, "%s: '%s' is outside the range %d to %d", spec->key, v,
                     spec->min, spec->max);
            return OPTIONS_BAD_VALUE;
        }
        int i = (int)n;
        memcpy(field, &i, sizeof(i));
        return OPTIONS_OK;
    }
    case OPT_STRING: {
        char **slot = (char **)(void *)field;
        char *copy = NULL;
        if (*v != '\0') {
            copy = strdup(v);
            if (copy == NULL) {
                snprintf(err, err_len, "%s: out of memory", spec->key);
                return OPTIONS_NO_MEMORY;
            }
        }
        free(*slot);
        *slot = copy;
        return OPTIONS_OK;
    }
    case OPT_LIST:
        return spec->setter(opts, spec->key, v, err, err_len);
    }
    snprintf(err, err_len, "unknown manager option '%s'", key);
    return OPTIONS_UNKNOWN_KEY;
}

static enum options_result set_threshold(struct manager_options *opts, const char *key,
                                         const char *value, char *err, size_t err_len)
{
    struct options_threshold *t =
        strcmp(key, "warning") == 0 ? &opts->status_warning : &opts->status_critical;
    struct options_threshold parsed = {.set = true};
    size_t n = value ? strlen(value) : 0;
    char why[128];
    if (n > 0 && value[n - 1] == '%') {
        parsed.percent = true;
        if (!units_parse_percent(value, &parsed.value, why, sizeof(why))) {
            snprintf(err, err_len, "%s: %s", key, why);
            return OPTIONS_BAD_VALUE;
        }
    } else {
        char *end;
        long v = value ? strtol(value, &end, 10) : -1;
        if (!value || end == value || *end != '\0' || v < 0 || v > 1000000) {
            snprintf(err, err_len,
                     "%s: '%s' is not a number of connections (80) or a share of the capacity "
                     "(80%%)",
                     key, value ? value : "");
            return OPTIONS_BAD_VALUE;
        }
        parsed.value = (double)v;
    }
    *t = parsed;
    return OPTIONS_OK;
}

static enum options_result set_leak_reclaim(struct manager_options *opts, const char *key,
                                            const char *value, char *err, size_t err_len)
{
    if (reclaim_level_from_text(value, &opts->leak_reclaim))
        return OPTIONS_OK;
    if (err)
        snprintf(err, err_len, "%s: '%.64s' is not off, notice, cancel, rollback or disconnect",
                 key, value ? value : "");
    return OPTIONS_BAD_VALUE;
}

void options_init_defaults(struct manager_options *opts)
{
    memset(opts, 0, sizeof(*opts));
    /* The defaults are the table's default texts, parsed like user input, so --help can never
     * show a default that differs from the real one. */
    for (size_t i = 0; i < N_OPTIONS; i++) {
        if (option_table[i].default_text[0] == '\0')
            continue;
        enum options_result rc =
            options_set(opts, option_table[i].key, option_table[i].default_text, NULL, 0);
        (void)rc; /* the table's defaults are valid; test_manager_options checks them */
    }
    opts->explicitly_set = 0;
}

bool options_is_set(const struct manager_options *opts, const char *key)
{
    const struct option_spec *spec = find_spec(key);
    return spec && (opts->explicitly_set >> (spec - option_table) & 1);
}

void options_free(struct manager_options *opts)
{
    free(opts->filter_user);
    free(opts->filter_database);
    free(opts->filter_application);
    opts->filter_user = opts->filter_database = opts->filter_application = NULL;
    for (size_t i = 0; i < opts->n_exclude_users; i++)
        free(opts->exclude_users[i]);
    for (size_t i = 0; i < opts->n_exclude_apps; i++)
        free(opts->exclude_apps[i]);
    opts->n_exclude_users = 0;
    opts->n_exclude_apps = 0;
    opts->n_exclude_addrs = 0;
}

bool options_validate(const struct manager_options *opts, char *err, size_t err_len)
{
    /* A default minimum above a chosen maximum is no contradiction: the minimum yields. */
    if (opts->min_pool_size > opts->max_pool_size && options_is_set(opts, "min_pool_size") &&
        options_is_set(opts, "max_pool_size")) {
        if (err != NULL && err_len > 0)
            snprintf(err, err_len,
                     "min_pool_size %d is larger than max_pool_size %d; lower the minimum or "
                     "raise the maximum",
                     opts->min_pool_size, opts->max_pool_size);
        return false;
    }
    const struct options_threshold *w = &opts->status_warning, *c = &opts->status_critical;
    if (w->set && c->set && w->percent == c->percent && w->value > c->value) {
        if (err != NULL && err_len > 0)
            snprintf(err, err_len, "--warning %g%s is above --critical %g%s", w->value,
                     w->percent ? "%" : "", c->value, c->percent ? "%" : "");
        return false;
    }
    return true;
}

bool options_is_known_key(const char *key)
{
    return find_spec(key) != NULL;
}

/* Options that shape one run of an action rather than describe a pool's policy. */
static bool is_per_run(const char *key)
{
    static const char *const keys[] = {"interval", "connections", "current_size", "execute",
                                       "user",     "database",    "application"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (!strcmp(keys[i], key))
            return true;
    return false;
}

/* The exclusion lists: protections. A target's lists are added to the run's own rather than
 * replaced by them (options_adopt), and options_each_value shares them. */
static bool is_protection(const struct option_spec *spec)
{
    static const option_setter_fn setters[] = {add_exclude_users, add_exclude_apps,
                                               add_exclude_addrs};
    for (size_t i = 0; i < sizeof(setters) / sizeof(setters[0]); i++)
        if (spec->setter == setters[i])
            return true;
    return false;
}

enum options_result options_adopt(struct manager_options *opts, const char *key, const char *value)
{
    const struct option_spec *spec = find_spec(key);
    if (spec == NULL)
        return OPTIONS_UNKNOWN_KEY;
    if (!is_protection(spec) && options_is_set(opts, key))
        return OPTIONS_OK;
    uint64_t given = opts->explicitly_set;
    enum options_result r = options_set(opts, key, value, NULL, 0);
    opts->explicitly_set = given; /* still the user's choices only */
    return r;
}

/* Emits key with the names joined by commas (as the list was given); nothing when memory
 * runs out, which the caller's reader sees as an empty list. */
static void emit_list(options_value_fn emit, void *ctx, const char *key, const char *const *names,
                      size_t n)
{
    size_t len = 1;
    for (size_t i = 0; i < n; i++)
        len += strlen(names[i]) + 1;
    char *joined = malloc(len);
    if (joined == NULL)
        return;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(names[i]);
        if (i > 0)
            joined[o++] = ',';
        memcpy(joined + o, names[i], l);
        o += l;
    }
    joined[o] = '\0';
    emit(ctx, key, joined);
    free(joined);
}

void options_each_value(const struct manager_options *opts, options_value_fn emit, void *ctx)
{
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const struct option_spec *spec = &option_table[i];
        if (is_per_run(spec->key))
            continue;
        const char *field = (const char *)opts + spec->offset;
        char buf[64];
        const char *text = buf;
        switch (spec->kind) {
        case OPT_DURATION:
        case OPT_DURATION_OFF:
            snprintf(buf, sizeof(buf), "%lldms", (long long)*(const int64_t *)field);
            break;
        case OPT_PERCENT:
            snprintf(buf, sizeof(buf), "%g%%", *(const double *)field);
            break;
        case OPT_BOOL:
            text = *(const bool *)field ? "on" : "off";
            break;
        case OPT_INT:
            snprintf(buf, sizeof(buf), "%d", *(const int *)field);
            break;
        case OPT_STRING:
            text = *(char *const *)field ? *(char *const *)field : "";
            break;
        case OPT_LIST:
            continue; /* lists and choices: per-run filters and serve-only settings */
        }
        emit(ctx, spec->key, text);
    }
    /* The protections last: a reader that adopts them must honour them too. */
    emit_list(emit, ctx, "exclude_user", (const char *const *)opts->exclude_users,
              opts->n_exclude_users);
    emit_list(emit, ctx, "exclude_app", (const char *const *)opts->exclude_apps,
              opts->n_exclude_apps);
    const char *addrs[OPTIONS_MAX_EXCLUDES];
    for (size_t i = 0; i < opts->n_exclude_addrs; i++)
        addrs[i] = opts->exclude_addrs[i].text;
    emit_list(emit, ctx, "exclude_addr", addrs, opts->n_exclude_addrs);
}

void options_describe(unsigned uses, options_help_fn emit, void *ctx)
{
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (option_table[i].uses & uses)
            emit(ctx, option_table[i].key, option_table[i].default_text, option_table[i].meaning);
}

static bool name_matches(const char *pattern, const char *name)
{
    if (name == NULL)
        name = "";
    size_t len = strlen(pattern);
    if (len > 0 && pattern[len - 1] == '*')
        return strncmp(pattern, name, len - 1) == 0;
    return strcmp(pattern, name) == 0;
}

bool options_match_filters(const struct manager_options *opts, const struct conn_record *rec)
{
    if (opts->filter_user != NULL && !name_matches(opts->filter_user, rec->user))
        return false;
    if (opts->filter_database != NULL && !name_matches(opts->filter_database, rec->database))
        return false;
    if (opts->filter_application != NULL &&
        !name_matches(opts->filter_application, rec->application))
        return false;
    return true;
}

static bool in_list(char *const *list, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++) {
        if (name_matches(list[i], name))
            return true;
    }
    return false;
}

bool options_user_excluded(const struct manager_options *opts, const char *user)
{
    return in_list(opts->exclude_users, opts->n_exclude_users, user);
}

bool options_app_excluded(const struct manager_options *opts, const char *application)
{
    return in_list(opts->exclude_apps, opts->n_exclude_apps, application);
}

bool options_addr_excluded(const struct manager_options *opts, const char *client_addr)
{
    if (client_addr == NULL || client_addr[0] == '\0' || opts->n_exclude_addrs == 0)
        return false;
    struct cidr host;
    if (strchr(client_addr, '/') != NULL || !cidr_parse(client_addr, &host))
        return false;
    for (size_t i = 0; i < opts->n_exclude_addrs; i++) {
        if (cidr_contains(&opts->exclude_addrs[i], host.family, host.addr))
            return true;
    }
    return false;
}

/* Manager settings: one table of keys (CLI --dash-names and [manager] underscore_names),
 * with units, defaults and validation shared by the command line and config files. */
#ifndef PGWARDEN_MANAGER_OPTIONS_H
#define PGWARDEN_MANAGER_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/cidr.h"
#include "manager/reclaim.h"
#include "manager/snapshot.h"

#define OPTIONS_MAX_EXCLUDES 32

/* A monitoring threshold (status --warning/--critical), Nagios style: client connections in
 * use as a count ("80") or as a share of the capacity ("80%"). */
struct options_threshold {
    bool set;
    bool percent;
    double value;
};

struct manager_options {
    int64_t idle_timeout_ms;             /* idle this long: kill-idle candidate */
    int64_t max_connection_age_ms;       /* older: retired (serve) / flagged (inspect) */
    double leak_detection_threshold_pct; /* utilisation above which suspects raise the risk */
    int64_t leak_hold_threshold_ms;      /* idle-in-transaction time that makes a suspect */
    enum reclaim_level leak_reclaim;     /* serve: furthest reclaim step for suspects */
    int64_t health_check_interval_ms;    /* background probes (serve) */
    bool live;                           /* serve: run the live manager (read at start) */
    bool auto_scaling;                   /* apply scaling decisions (serve) */
    double max_kill_percentage;          /* share of client connections one kill run may remove */
    int min_pool_size;
    int max_pool_size;
    double growth_rate_pct; /* largest growth step of one scaling decision */
    double shrink_rate_pct; /* largest shrink step of one scaling decision */

    /* Per-run options of the actions. */
    int64_t interval_ms;    /* time between the two samples that give rates */
    int health_connections; /* parallel probe connections of health-check */
    int current_size;       /* auto-scale: pool size to scale from; -1 = observed */
    bool execute;           /* kill-idle: act instead of planning */
    struct options_threshold status_warning;  /* status: thresholds replacing the */
    struct options_threshold status_critical; /* utilisation rule when given */

    /* Filters applied by every action; NULL = no filter. Strings are owned. */
    char *filter_user;
    char *filter_database;
    char *filter_application;
    char *exclude_users[OPTIONS_MAX_EXCLUDES]; /* owned */
    size_t n_exclude_users;
    char *exclude_apps[OPTIONS_MAX_EXCLUDES]; /* owned */
    size_t n_exclude_apps;
    uint64_t explicitly_set; /* one bit per option given by the user (not a default) */
    /* Client addresses kill-idle never touches: other poolers' server connections. */
    struct cidr exclude_addrs[OPTIONS_MAX_EXCLUDES];
    size_t n_exclude_addrs;
};

/* Where an option matters: the actions (for per-action --help) and the live manager in
 * `pgwarden serve` ([manager] keys). */
enum option_use {
    OPTION_USE_MONITOR = 1u << 0,
    OPTION_USE_DETECT_LEAKS = 1u << 1,
    OPTION_USE_HEALTH_CHECK = 1u << 2,
    OPTION_USE_AUTO_SCALE = 1u << 3,
    OPTION_USE_KILL_IDLE = 1u << 4,
    OPTION_USE_FULL_ANALYSIS = 1u << 5,
    OPTION_USE_STATUS = 1u << 6,
    OPTION_USE_SERVE = 1u << 7,
};

enum options_result {
    OPTIONS_OK,
    OPTIONS_UNKNOWN_KEY,
    OPTIONS_BAD_VALUE,
    OPTIONS_NO_MEMORY,
};

void options_init_defaults(struct manager_options *opts);
void options_free(struct manager_options *opts);

/* Sets one key. The key may use dashes or underscores ("idle-timeout" == "idle_timeout").
 * On failure writes one sentence into err (e.g. "idle_timeout: '5x' is not a duration (use
 * 300s, 5min, 250ms)"). Booleans take on/off/true/false/yes/no/1/0. "user", "database" and
 * "application" set the filters (an empty value clears one); "exclude_user" and
 * "exclude_app" append to their lists (a comma-separated value adds several), and so does
 * "exclude_addr" with IPv4/IPv6 addresses or CIDR blocks ("10.0.0.5", "10.1.0.0/16"). Durations
 * must be > 0, except max_connection_age where 0 turns the age check off. */
enum options_result options_set(struct manager_options *opts, const char *key, const char *value,
                                char *err, size_t err_len);

/* Checks what single keys cannot: min_pool_size <= max_pool_size. Call it once all keys are
 * set. On failure writes one sentence into err. */
bool options_validate(const struct manager_options *opts, char *err, size_t err_len)
    __attribute__((warn_unused_result));

/* True when the key names a manager option (either spelling). */
bool options_is_known_key(const char *key);
/* True when key was given by the user (command line or config), not left at its default. */
bool options_is_set(const struct manager_options *opts, const char *key);

/* Takes a target's setting (a pooler's [manager] section): a scalar only when the user did
 * not set it, an exclusion list always, added to the user's, so running the CLI against a
 * pooler never lifts a protection configured there. Leaves explicitly_set as it was. */
enum options_result options_adopt(struct manager_options *opts, const char *key, const char *value);

/* Describes the options for --help: calls emit once per key used where uses says (enum
 * option_use bits) with its name (underscore spelling), default and meaning. */
typedef void (*options_help_fn)(void *ctx, const char *key, const char *default_text,
                                const char *meaning);
void options_describe(unsigned uses, options_help_fn emit, void *ctx);
/* Emits the current value of every scalar policy option (thresholds, limits, sizes; not the
 * per-run ones such as interval, execute or the filters) in a form options_set accepts
 * ("60000ms", "80%", "on", "5"), then the exclusion lists (exclude_user, exclude_app,
 * exclude_addr) comma-separated, possibly empty; other lists and choices are left out. */
typedef void (*options_value_fn)(void *ctx, const char *key, const char *value);
void options_each_value(const struct manager_options *opts, options_value_fn emit, void *ctx);

/* True when the record passes the --user/--database/--application filters. Names compare
 * exactly (PostgreSQL names are case-sensitive); a pattern ending in '*' matches by prefix
 * ("PostgREST*"). The same matching applies to the exclude lists. */
bool options_match_filters(const struct manager_options *opts, const struct conn_record *rec);
bool options_user_excluded(const struct manager_options *opts, const char *user);
bool options_app_excluded(const struct manager_options *opts, const char *application);
/* True when client_addr (pg_stat_activity's host(client_addr) text; "" for unix sockets,
 * never excluded) lies in an exclude_addr block. IPv4-mapped IPv6 addresses match as IPv4. */
bool options_addr_excluded(const struct manager_options *opts, const char *client_addr);

#endif

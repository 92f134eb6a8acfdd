/* Manager settings: one table of keys (CLI --dash-names and [manager] underscore_names),
 * with units, defaults and validation shared by the command line and config files. */
#ifndef PGWARDEN_MANAGER_OPTIONS_H
#define PGWARDEN_MANAGER_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "manager/snapshot.h"

#define OPTIONS_MAX_EXCLUDES 32

struct manager_options {
    int64_t idle_timeout_ms;          /* idle this long: kill-idle candidate */
    int64_t max_connection_age_ms;    /* older: retired (serve) / flagged (inspect) */
    double leak_detection_threshold_pct; /* utilisation above which suspects raise the risk */
    int64_t leak_hold_threshold_ms;   /* idle-in-transaction time that makes a suspect */
    int64_t health_check_interval_ms; /* background probes (serve) */
    bool auto_scaling;                /* apply scaling decisions (serve) */
    double max_kill_percentage;       /* share of client connections one kill run may remove */
    int min_pool_size;
    int max_pool_size;
    double growth_rate_pct;           /* largest growth step of one scaling decision */
    double shrink_rate_pct;           /* largest shrink step of one scaling decision */

    /* Per-run options of the actions. */
    int64_t interval_ms;    /* time between the two samples that give rates */
    int health_connections; /* parallel probe connections of health-check */
    int current_size;       /* auto-scale: pool size to scale from; -1 = observed */
    bool execute;           /* kill-idle: act instead of planning */

    /* Filters applied by every action; NULL = no filter. Strings are owned. */
    char *filter_user;
    char *filter_database;
    char *filter_application;
    char *exclude_users[OPTIONS_MAX_EXCLUDES]; /* owned */
    size_t n_exclude_users;
    char *exclude_apps[OPTIONS_MAX_EXCLUDES]; /* owned */
    size_t n_exclude_apps;
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
 * "exclude_app" append to their lists (a comma-separated value adds several). Durations
 * must be > 0, except max_connection_age where 0 turns the age check off. */
enum options_result options_set(struct manager_options *opts, const char *key, const char *value,
                                char *err, size_t err_len);

/* Checks what single keys cannot: min_pool_size <= max_pool_size. Call it once all keys are
 * set. On failure writes one sentence into err. */
bool options_validate(const struct manager_options *opts, char *err, size_t err_len)
    __attribute__((warn_unused_result));

/* True when the key names a manager option (either spelling). */
bool options_is_known_key(const char *key);

/* Describes every option for --help: calls emit once per key with its name (underscore
 * spelling), default and meaning. */
typedef void (*options_help_fn)(void *ctx, const char *key, const char *default_text,
                                const char *meaning);
void options_describe(options_help_fn emit, void *ctx);

/* True when the record passes the --user/--database/--application filters. Names compare
 * exactly (PostgreSQL names are case-sensitive); a pattern ending in '*' matches by prefix
 * ("PostgREST*"). The same matching applies to the exclude lists. */
bool options_match_filters(const struct manager_options *opts, const struct conn_record *rec);
bool options_user_excluded(const struct manager_options *opts, const char *user);
bool options_app_excluded(const struct manager_options *opts, const char *application);

#endif

/* The action registry: name -> handler and table renderer, shared by the command line (and
 * later the HTTP API). A handler fills an action_run: the `data` JSON on success, or an
 * error; the renderer wraps it in the result envelope. */
#ifndef PGWARDEN_CLI_ACTION_H
#define PGWARDEN_CLI_ACTION_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>

#include "cli/target_source.h"
#include "inspect/session.h"
#include "manager/options.h"
#include "manager/report.h"

enum output_format {
    OUTPUT_TABLE,
    OUTPUT_JSON,
};

struct action_run {
    /* Inputs (borrowed). */
    const struct action_def *action;
    struct manager_options *opts; /* the target's own settings may fill what the user left */
    const char *conninfo;
    const struct target_source *source; /* inspect or serve mode, from conninfo */
    bool assume_yes;                    /* skip the interactive confirmation of --execute */
    int probe_timeout_ms;

    /* Outputs. */
    bool have_target;
    struct inspect_target target;
    cJSON *data; /* owned; NULL on failure */
    bool failed;
    struct inspect_error error;
    enum exit_code exit_code;
    char verdict[1024]; /* one line for people, printed first in table output */
};

typedef void (*action_handler_fn)(struct action_run *run);
typedef void (*action_table_fn)(const struct action_run *run, FILE *out);
/* One report from snapshots taken elsewhere: prev is the sample before cur (NULL when there
 * is none, so no rates). Fills the run like a handler. --watch repeats it over one open
 * connection (cli/watch.c). */
typedef void (*action_report_fn)(struct action_run *run, const struct snapshot *prev,
                                 const struct snapshot *cur);

struct action_def {
    const char *name;
    const char *summary;
    const char *details; /* extra --help text: what it reads, what it may change */
    bool samples_twice;  /* takes two snapshots --interval apart (rates) */
    action_handler_fn handler;
    action_table_fn render_table;
    action_report_fn watch_report; /* NULL: --watch is refused for this action */
    unsigned option_use;           /* enum option_use bit: the manager options it reads */
};

/* NULL when no action has that name. */
const struct action_def *actions_find(const char *name);
/* The registry, terminated by an entry with name NULL. */
const struct action_def *actions_all(void);

#endif

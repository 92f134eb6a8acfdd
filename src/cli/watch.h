/* `ACTION --watch D`: the action's report again every D over one open connection, redrawn in
 * place on a terminal, one after another in a pipe, or as JSON Lines, until Ctrl-C. */
#ifndef PGWARDEN_CLI_WATCH_H
#define PGWARDEN_CLI_WATCH_H

#include <stdint.h>

#include "cli/actions.h"

struct watch_request {
    const struct action_run *base; /* borrowed: the inputs of every report (action, opts,
                                      conninfo, source); its action has a watch_report */
    enum output_format format;
    int64_t every_ms; /* time from the start of one report to the start of the next */
    long count;       /* stop after this many reports; 0 = until interrupted */
};

/* Runs the watch in the foreground. Returns the process exit code: that of the last report
 * when --count ends it, EXIT_OK when SIGINT/SIGTERM does, EXIT_CANNOT_RUN when the target
 * cannot be read (after one reconnect). */
int watch_run(const struct watch_request *req);

#endif

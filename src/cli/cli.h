/* The command line of the manager actions: `pgwarden ACTION [--target T] [--format F]
 * [options]`. */
#ifndef PGWARDEN_CLI_CLI_H
#define PGWARDEN_CLI_CLI_H

#include <stdbool.h>
#include <stdio.h>

/* argv[0] is the action name. Returns the process exit code (DESIGN.md exit codes). */
int cli_run_action(int argc, char **argv);
/* Whether a command line starting with arg (argv[1]) is PgBouncer's
 * `pgwarden [-d] [-q] [-v] [-u USER] FILE.ini`, to be run as `serve`, rather than an action:
 * arg is an option (main handles --help and --version before), or it is not an action's name
 * and names a file (it exists, holds a '/' or ends in .ini). */
bool cli_is_pgbouncer_command_line(const char *arg);
/* The top-level usage text (all subcommands). */
void cli_print_usage(FILE *out);

#endif

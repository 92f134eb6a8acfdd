/* The command line of the manager actions: `pgwarden ACTION [--target T] [--format F]
 * [options]`. */
#ifndef PGWARDEN_CLI_CLI_H
#define PGWARDEN_CLI_CLI_H

#include <stdio.h>

/* argv[0] is the action name. Returns the process exit code (DESIGN.md exit codes). */
int cli_run_action(int argc, char **argv);
/* The top-level usage text (all subcommands). */
void cli_print_usage(FILE *out);

#endif

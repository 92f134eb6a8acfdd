/* pgwarden entry point: subcommand dispatch only. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "pool/serve.h"

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        cli_print_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 3 : 0;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
        printf("pgwarden %s\n", PGWARDEN_VERSION);
        return 0;
    }
    if (strcmp(argv[1], "serve") == 0)
        return serve_main(argc - 1, argv + 1);
    if (cli_is_pgbouncer_command_line(argv[1]))
        return serve_main(argc, argv); /* `pgwarden [-d] [-q] [-v] [-u USER] FILE.ini` */
    return cli_run_action(argc - 1, argv + 1);
}

/* `pgwarden serve`: the pooler runtime's entry point. Parses the command line, loads the
 * configuration, runs the event loop until shutdown. */
#ifndef PGWARDEN_POOL_SERVE_H
#define PGWARDEN_POOL_SERVE_H

/* argv[0] is "serve". Options: -c/--config FILE, -v/--verbose (repeat for trace), -h/--help.
 * Returns the process exit code (0 after a clean shutdown, 3 for bad input or config). */
int serve_main(int argc, char **argv);

#endif

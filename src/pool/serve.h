/* `pgwarden serve`: the pooler runtime's entry point. Parses the command line, loads the
 * configuration, runs the event loop until shutdown. Also the pooler-wide actions the admin
 * console triggers (its one way to act on the pooler). */
#ifndef PGWARDEN_POOL_SERVE_H
#define PGWARDEN_POOL_SERVE_H

#include <stdbool.h>
#include <stddef.h>

struct pooler;

/* argv[0] is "serve", or the program's name for PgBouncer's `pgwarden [-d] [-q] [-v] [-u USER]
 * FILE.ini`. Options: -c/--config FILE, -d/--daemon, -q/--quiet, -v/--verbose (repeat for
 * trace), -u/--user USER, -V/--version, -h/--help, --describe-config; -R/--reboot is refused.
 * Returns the process exit code (0 after a clean shutdown, 3 for bad input or config, or a
 * start that failed; with -d, in the started process, 0 once the daemon listens). */
int serve_main(int argc, char **argv);

/* ---- pooler actions (PAUSE, RESUME, RELOAD, SHUTDOWN on the admin console) ---- */
void serve_pause(struct pooler *p);
void serve_resume(struct pooler *p);
/* SUSPEND: false (nothing changed) unless the pooler was running. */
bool serve_suspend(struct pooler *p);
/* Returns false with the reason in err when the new configuration was refused. */
bool serve_reload(struct pooler *p, char *err, size_t err_len);
enum serve_set_result {
    SERVE_SET_APPLIED,
    SERVE_SET_TLS_NOT_APPLIED, /* a TLS key: the value is kept (SHOW CONFIG shows it), but its
                                  side's settings do not build, so TLS goes on with the
                                  previous ones; err says why. A later SET that completes the
                                  set (a key after its certificate) applies them all. */
    SERVE_SET_REFUSED,         /* unknown key or bad value: nothing changed; err says why */
};
/* SET key = value: changes one key of the running configuration (until the next RELOAD) and
 * applies it. */
enum serve_set_result serve_set(struct pooler *p, const char *key, const char *value, char *err,
                                size_t err_len);
void serve_shutdown(struct pooler *p);
/* SHUTDOWN WAIT_FOR_SERVERS (false) / WAIT_FOR_CLIENTS (true): as SIGINT / SIGTERM. */
void serve_shutdown_when(struct pooler *p, bool wait_for_clients);

#endif

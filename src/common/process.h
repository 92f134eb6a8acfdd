/* The process around the pooler: files it writes without ever blocking, the pidfile, the
 * switch to an unprivileged user once listeners are bound, and going to the background (-d)
 * so that the started process reports whether the pooler came up. */
#ifndef PGWARDEN_COMMON_PROCESS_H
#define PGWARDEN_COMMON_PROCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

/* Opens a log or pid file for writing without ever blocking (a FIFO named there would hang
 * startup or a reload until a reader came). Only regular files are accepted; NULL with errno
 * set otherwise (EINVAL for a file that is not regular). */
FILE *process_open_regular_for_writing(const char *path, bool append);

/* The pid a pidfile holds: 0 when missing, empty, not a regular file or without a pid, -1
 * when it cannot be read (errno set). */
long process_pidfile_read(const char *path);
/* False (with the reason) when the pidfile names a live process other than this one. */
bool process_pidfile_check(const char *path, char *err, size_t err_len);
/* Writes this process's pid; false (logged) when the file cannot be written. */
bool process_pidfile_write(const char *path);
/* Removes the pidfile this process wrote, only while it still holds this process's pid. */
void process_pidfile_remove(void);

/* Who to become once the listeners are bound (the user key, or -u). */
struct process_run_as {
    bool needed; /* false: stay as started */
    uid_t uid;
    gid_t gid;
    char name[256];
};

bool process_run_as_resolve(const char *name, struct process_run_as *r, char *err, size_t err_len);
/* The group named by name: a group name, or a number taken as it is (as PgBouncer reads
 * unix_socket_group). An empty name gives (gid_t)-1, which chown(2) reads as "unchanged". */
bool process_group_resolve(const char *name, gid_t *gid, char *err, size_t err_len);
/* Drops root for good (groups, group, user) and checks it cannot be regained. */
bool process_run_as_switch(const struct process_run_as *r, char *err, size_t err_len);

enum process_daemon_role {
    PROCESS_DAEMON_PARENT, /* the started process: *exit_code says how the daemon started */
    PROCESS_DAEMON_CHILD,  /* the background process: go on starting */
};

/* Forks to the background (see process.c); the parent returns once the daemon is ready or
 * gone, with *exit_code 0 or 3. */
enum process_daemon_role process_daemon_start(int *exit_code);
/* In the daemon, once it serves: stdio to /dev/null and the waiting parent released. */
void process_daemon_ready(void);

#endif

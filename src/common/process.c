/* Files, pidfile, user switch and background start (see process.h). */
#include "common/process.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"

/* Opens a log or pid file for writing without ever blocking: a FIFO named there would hang
 * startup or a reload until a reader came. Only regular files are accepted. NULL with errno
 * set otherwise (EINVAL for a file that is not regular). */
FILE *process_open_regular_for_writing(const char *path, bool append)
{
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        errno = EINVAL; /* say so, rather than what open() of it would say (ENXIO) */
        return NULL;
    }
    int fd =
        open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NONBLOCK | (append ? O_APPEND : 0), 0644);
    if (fd < 0)
        return NULL;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        errno = EINVAL;
        return NULL;
    }
    if (!append && ftruncate(fd, 0) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return NULL;
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0)
        (void)fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    FILE *f = fdopen(fd, append ? "a" : "w");
    if (!f)
        close(fd);
    return f;
}

static char pidfile_written[4096]; /* the pidfile this process wrote ("" = none) */

/* Reads the pid held in a pidfile: the pid, 0 when the file is missing, empty, not a regular
 * file or holds no pid, -1 when it cannot be read (errno set). Never blocks (see
 * process_open_regular_for_writing). */
long process_pidfile_read(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return errno == ENOENT ? 0 : -1;
    if (!S_ISREG(st.st_mode))
        return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return -1;
    char buf[32];
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    int e = errno;
    close(fd);
    if (n < 0) {
        errno = e;
        return -1;
    }
    buf[n] = '\0';
    char *end;
    long pid = strtol(buf, &end, 10);
    return pid > 0 && end != buf && (*end == '\0' || *end == '\n') ? pid : 0;
}

/* Refuses a pidfile that names a live process other than this one (another pgwarden, most
 * likely). A stale one (its process is gone) is overwritten later. */
bool process_pidfile_check(const char *path, char *err, size_t err_len)
{
    long pid = process_pidfile_read(path);
    if (pid < 0) {
        snprintf(err, err_len, "cannot read pidfile %s: %s", path, strerror(errno));
        return false;
    }
    if (pid == 0 || pid == (long)getpid())
        return true;
    /* EPERM: the process exists but belongs to someone else; it is alive all the same. */
    if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) {
        snprintf(err, err_len,
                 "pidfile %s names process %ld, which is running: is another pgwarden using "
                 "this configuration? (remove the file if not)",
                 path, pid);
        return false;
    }
    log_info("serve", "pidfile %s names process %ld, which is gone: replacing it", path, pid);
    return true;
}

bool process_pidfile_write(const char *path)
{
    FILE *f = process_open_regular_for_writing(path, false);
    if (!f) {
        log_warning("serve", "cannot write pidfile %s: %s", path,
                    errno == EINVAL ? "not a regular file" : strerror(errno));
        return false;
    }
    fprintf(f, "%d\n", (int)getpid());
    if (fclose(f) != 0) {
        log_warning("serve", "cannot write pidfile %s: %s", path, strerror(errno));
        return false;
    }
    snprintf(pidfile_written, sizeof(pidfile_written), "%s", path);
    return true;
}

/* Removes the pidfile at exit, but only while it still holds this process's pid: a newer
 * instance may have replaced it (and a failed start never wrote it). */
void process_pidfile_remove(void)
{
    if (pidfile_written[0] && process_pidfile_read(pidfile_written) == (long)getpid())
        unlink(pidfile_written);
    pidfile_written[0] = '\0';
}

bool process_run_as_resolve(const char *name, struct process_run_as *r, char *err, size_t err_len)
{
    memset(r, 0, sizeof(*r));
    if (!name || !name[0])
        return true;
    errno = 0;
    struct passwd *pw = getpwnam(name);
    if (!pw) {
        snprintf(err, err_len, "user %s: %s", name, errno ? strerror(errno) : "no such user");
        return false;
    }
    if (pw->pw_uid == geteuid() && pw->pw_uid == getuid())
        return true; /* already that user (PgBouncer allows this too) */
    if (geteuid() != 0) {
        snprintf(err, err_len, "switching to user %s needs root (running as uid %d)", name,
                 (int)geteuid());
        return false;
    }
    r->needed = true;
    r->uid = pw->pw_uid;
    r->gid = pw->pw_gid;
    snprintf(r->name, sizeof(r->name), "%s", pw->pw_name);
    return true;
}

bool process_group_resolve(const char *name, gid_t *gid, char *err, size_t err_len)
{
    *gid = (gid_t)-1;
    if (!name || !name[0])
        return true;
    char *end;
    errno = 0;
    unsigned long n = strtoul(name, &end, 10);
    if (*end == '\0' && errno == 0 && n < (unsigned long)(gid_t)-1) {
        *gid = (gid_t)n;
        return true;
    }
    errno = 0;
    struct group *gr = getgrnam(name);
    if (!gr) {
        snprintf(err, err_len, "group %s: %s", name, errno ? strerror(errno) : "no such group");
        return false;
    }
    *gid = gr->gr_gid;
    return true;
}

/* Drops root for good: supplementary groups, group, then user (in this order: after setuid
 * the others are no longer allowed). Checks that root cannot be regained. */
bool process_run_as_switch(const struct process_run_as *r, char *err, size_t err_len)
{
    if (!r->needed)
        return true;
    if (initgroups(r->name, r->gid) != 0 || setgid(r->gid) != 0 || setuid(r->uid) != 0) {
        snprintf(err, err_len, "cannot switch to user %s: %s", r->name, strerror(errno));
        return false;
    }
    if (setuid(0) == 0 || geteuid() != r->uid || getegid() != r->gid) {
        snprintf(err, err_len, "switching to user %s did not drop root", r->name);
        return false;
    }
    log_info("serve", "running as user %s (uid %d, gid %d)", r->name, (int)r->uid, (int)r->gid);
    return true;
}

/*
 * -d: the process that was started waits, in process_daemon_start, until the background one says it
 * listens, so `pgwarden -d` returns 0 only for a pooler that is up, and 3 (with the reason on
 * its stderr, which the background process still shares until then) for one that failed:
 *
 *   started ── fork ──► child: setsid, fork ──► daemon: loop, listeners, user, pidfile,
 *      │                  (exits)                 stdio → /dev/null, 'R' into the pipe
 *      └── reads the pipe: 'R' → exit 0; end of file (the daemon died) → exit 3
 */
static int daemon_ready_fd = -1; /* write end of that pipe, in the daemon until it is ready */

enum process_daemon_role process_daemon_start(int *exit_code)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        fprintf(stderr, "pgwarden: cannot go to the background: pipe: %s\n", strerror(errno));
        *exit_code = 3;
        return PROCESS_DAEMON_PARENT;
    }
    fflush(NULL); /* nothing buffered is written twice */
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "pgwarden: cannot go to the background: fork: %s\n", strerror(errno));
        close(fds[0]);
        close(fds[1]);
        *exit_code = 3;
        return PROCESS_DAEMON_PARENT;
    }
    if (pid > 0) {
        close(fds[1]);
        char c = 0;
        ssize_t n;
        while ((n = read(fds[0], &c, 1)) < 0 && errno == EINTR)
            ;
        close(fds[0]);
        (void)waitpid(pid, NULL, 0); /* the intermediate child exits at once */
        *exit_code = n == 1 && c == 'R' ? 0 : 3;
        if (*exit_code != 0)
            fprintf(stderr, "pgwarden: the background process did not start\n");
        return PROCESS_DAEMON_PARENT;
    }
    close(fds[0]);
    /* A session of its own, without a controlling terminal; the second fork makes the daemon
     * a non-leader, so opening a terminal can never make it its controlling one. */
    if (setsid() < 0)
        _exit(3);
    pid = fork();
    if (pid < 0)
        _exit(3);
    if (pid > 0)
        _exit(0);
    daemon_ready_fd = fds[1];
    return PROCESS_DAEMON_CHILD;
}

/* In the daemon, once it serves: lets go of the terminal's stdio and releases the waiting
 * parent. */
void process_daemon_ready(void)
{
    if (daemon_ready_fd < 0)
        return;
    int fd = open("/dev/null", O_RDWR);
    if (fd >= 0) {
        (void)dup2(fd, STDIN_FILENO);
        (void)dup2(fd, STDOUT_FILENO);
        (void)dup2(fd, STDERR_FILENO);
        if (fd > STDERR_FILENO)
            close(fd);
    }
    ssize_t n;
    while ((n = write(daemon_ready_fd, "R", 1)) < 0 && errno == EINTR)
        ;
    close(daemon_ready_fd);
    daemon_ready_fd = -1;
}

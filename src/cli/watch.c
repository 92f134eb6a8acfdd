/* The --watch loop: one connection, one report every D, until --count reports or a signal.
 *
 *   connect ── baseline sample ── wait --interval ──┐
 *                                                   v
 *        ┌──> sample newer than prev ── report(prev, cur) ── print ── prev = cur
 *        └──────── wait until the report's start + D (a signal ends it at once) <──┘
 *
 * Each report's snapshot is the base of the next one's rates, so only the first report waits
 * --interval. A sample that fails gets one fresh connection, announced in one line; if that
 * fails too the watch ends with exit code 3. SIGINT/SIGTERM set a flag and write to a
 * self-pipe, so even a wait that began just after the signal ends at once. */
#include "cli/watch.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "cli/render.h"
#include "common/timestamp.h"
#include "common/units.h"

#define CLEAR_AND_HOME "\033[H\033[2J"
#define HIDE_CURSOR    "\033[?25l"
#define SHOW_CURSOR    "\033[?25h"

/* What the signal handler may touch: flags and the self-pipe's descriptors. */
static volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t cursor_hidden;
static int wake_fds[2] = {-1, -1};

struct watch {
    const struct watch_request *req; /* borrowed */
    bool redraw;                     /* a table on a terminal: clear and home before each report */
    PGconn *conn;                    /* owned */
    struct inspect_target target;
    struct snapshot prev; /* owned when have_prev: the base of the next report's rates */
    bool have_prev;
    long reports;
    char note[640]; /* the last reconnect, kept under the header since stderr is redrawn over */
};

struct saved_signals {
    struct sigaction sigint;
    struct sigaction sigterm;
};

static void write_ignoring_errors(int fd, const char *text, size_t len)
{
    ssize_t written = write(fd, text, len);
    (void)written; /* nothing better to do from a signal handler or on the way out */
}

static void on_stop_signal(int sig)
{
    (void)sig;
    int saved_errno = errno;
    if (stop_requested) {
        /* A second Ctrl-C: the first is waiting behind a slow connect or query. */
        if (cursor_hidden)
            write_ignoring_errors(STDOUT_FILENO, SHOW_CURSOR, sizeof(SHOW_CURSOR) - 1);
        _exit(EXIT_OK);
    }
    stop_requested = 1;
    if (wake_fds[1] >= 0)
        write_ignoring_errors(wake_fds[1], "", 1);
    errno = saved_errno;
}

/* Without the pipe (out of descriptors) a signal still interrupts poll(); only one that
 * lands between the flag check and poll() would then wait out the interval. */
static void signals_install(struct saved_signals *saved)
{
    stop_requested = 0;
    if (pipe(wake_fds) == 0) {
        for (int i = 0; i < 2; i++) {
            (void)fcntl(wake_fds[i], F_SETFL, O_NONBLOCK);
            (void)fcntl(wake_fds[i], F_SETFD, FD_CLOEXEC);
        }
    } else {
        wake_fds[0] = wake_fds[1] = -1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &saved->sigint);
    sigaction(SIGTERM, &sa, &saved->sigterm);
}

static void signals_restore(const struct saved_signals *saved)
{
    sigaction(SIGINT, &saved->sigint, NULL);
    sigaction(SIGTERM, &saved->sigterm, NULL);
    for (int i = 0; i < 2; i++) {
        if (wake_fds[i] >= 0)
            close(wake_fds[i]);
        wake_fds[i] = -1;
    }
}

/* Waits until the monotonic deadline; false when a stop signal came first. */
static bool wait_until(double deadline_ms)
{
    while (!stop_requested) {
        double left = deadline_ms - timestamp_monotonic_ms();
        if (left <= 0)
            return true;
        struct pollfd pfd = {.fd = wake_fds[0], .events = POLLIN};
        (void)poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)ceil(left));
    }
    return false;
}

/* The target for the header and messages, from what the connection described: never the
 * connection string, which may hold a password. */
static void describe_target(const struct watch *w, char *out, size_t len)
{
    const struct target_source *source = w->req->base->source;
    const struct inspect_target *t = &w->target;
    if (source->scheme != NULL)
        snprintf(out, len, "%s%s@%s:%s", source->scheme, t->user, t->host, t->port);
    else
        snprintf(out, len, "%s@%s:%s/%s", t->user, t->host, t->port, t->database);
}

static void local_time(char *out, size_t len, const char *format)
{
    time_t now = time(NULL);
    struct tm tm;
    if (localtime_r(&now, &tm) == NULL || strftime(out, len, format, &tm) == 0)
        snprintf(out, len, "?");
}

/* A run with the request's inputs and this watch's target, ready for one report. */
static void run_init(const struct watch *w, struct action_run *run)
{
    const struct action_run *base = w->req->base;
    memset(run, 0, sizeof(*run));
    run->action = base->action;
    run->opts = base->opts;
    run->conninfo = base->conninfo;
    run->source = base->source;
    run->assume_yes = base->assume_yes;
    run->probe_timeout_ms = base->probe_timeout_ms;
    run->have_target = true;
    run->target = w->target;
}

static bool watch_connect(struct watch *w, struct inspect_error *err)
{
    const struct action_run *base = w->req->base;
    w->conn = base->source->connect(base->conninfo, &w->target, err);
    if (w->conn == NULL)
        return false;
    /* Again after a reconnect: a pooler that was reloaded meanwhile has new settings. */
    if (base->source->adopt_settings)
        base->source->adopt_settings(w->conn, base->opts);
    return true;
}

static void forget_prev(struct watch *w)
{
    if (w->have_prev)
        snapshot_free(&w->prev);
    w->have_prev = false;
}

/* One snapshot newer than the last. A failure gets one fresh connection; the base of the
 * rates goes with the old one, since a restarted server or pooler counts from zero again. */
static bool watch_sample(struct watch *w, struct snapshot *snap, struct inspect_error *err)
{
    const struct action_run *base = w->req->base;
    int64_t newer_than = w->have_prev ? w->prev.taken_ms : 0;
    if (base->source->take_snapshot(w->conn, base->opts, newer_than, snap, err))
        return true;
    if (stop_requested)
        return false;
    char where[400], at[16];
    describe_target(w, where, sizeof(where));
    fprintf(stderr, "pgwarden %s: %s: %s; reconnecting\n", base->action->name, where, err->message);
    local_time(at, sizeof(at), "%H:%M:%S");
    snprintf(w->note, sizeof(w->note), "reconnected at %s after: %s", at, err->message);
    PQfinish(w->conn);
    w->conn = NULL;
    forget_prev(w);
    memset(err, 0, sizeof(*err));
    return watch_connect(w, err) && base->source->take_snapshot(w->conn, base->opts, 0, snap, err);
}

/* Ends the watch on an error the way a single run reports one: a line on stderr, or an
 * envelope (here one JSON line). */
static int watch_fail(const struct watch *w, const struct inspect_error *err)
{
    if (stop_requested)
        return EXIT_OK;
    struct action_run run;
    run_init(w, &run);
    run.failed = true;
    run.error = *err;
    run.exit_code = EXIT_CANNOT_RUN;
    if (w->req->format == OUTPUT_JSON) {
        char ts[40];
        timestamp_format_iso(timestamp_now_ms(), ts, sizeof(ts));
        render_json_line(&run, run.action->name, ts, 0.0, stdout);
        fflush(stdout);
    } else {
        render_table(&run, stdout, stderr);
    }
    return EXIT_CANNOT_RUN;
}

static void print_header(const struct watch *w, FILE *out)
{
    char every[32], where[400], now[32];
    units_format_duration(w->req->every_ms, every, sizeof(every));
    describe_target(w, where, sizeof(where));
    local_time(now, sizeof(now), "%Y-%m-%d %H:%M:%S");
    fprintf(out, "Every %s: pgwarden %s %s (%s)   %s\n", every, w->req->base->action->name, where,
            w->req->base->source->mode_name, now);
}

/* Writes as much of the screen as fits the terminal, so the header never scrolls away; a
 * line wider than the terminal takes several rows (bytes stand in for columns, which can
 * only cut early). */
static void fit_to_terminal(const char *screen, size_t len, FILE *out)
{
    struct winsize ws;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) != 0 || ws.ws_row < 3 || ws.ws_col == 0) {
        fwrite(screen, 1, len, out);
        return;
    }
    /* The last row stays empty: writing into it would scroll the header off. */
    size_t rows_left = (size_t)ws.ws_row - 1;
    size_t needed = 0;
    for (const char *p = screen; p < screen + len;) {
        const char *nl = memchr(p, '\n', (size_t)(screen + len - p));
        size_t line = nl ? (size_t)(nl - p) : (size_t)(screen + len - p);
        needed += line == 0 ? 1 : (line + ws.ws_col - 1) / ws.ws_col;
        p = nl ? nl + 1 : screen + len;
    }
    if (needed <= rows_left) {
        fwrite(screen, 1, len, out);
        return;
    }
    rows_left--; /* for the line that says what was cut */
    size_t hidden = 0;
    for (const char *p = screen; p < screen + len;) {
        const char *nl = memchr(p, '\n', (size_t)(screen + len - p));
        size_t line = nl ? (size_t)(nl - p) : (size_t)(screen + len - p);
        size_t rows = line == 0 ? 1 : (line + ws.ws_col - 1) / ws.ws_col;
        if (hidden == 0 && rows <= rows_left) {
            fwrite(p, 1, line, out);
            fputc('\n', out);
            rows_left -= rows;
        } else {
            hidden++;
        }
        p = nl ? nl + 1 : screen + len;
    }
    /* Short, so that it fits one row of even a narrow terminal. */
    fprintf(out, "... %zu more line%s", hidden, hidden == 1 ? "" : "s");
}

/* On a terminal the screen is composed in memory and written at once, so a redraw does not
 * flicker; in a pipe each report follows the last after a blank line. */
static void watch_print(struct watch *w, const struct action_run *run, const char *timestamp,
                        double duration_ms)
{
    FILE *out = stdout;
    if (w->req->format == OUTPUT_JSON) {
        render_json_line(run, run->action->name, timestamp, duration_ms, out);
        fflush(out);
        return;
    }
    if (!w->redraw) {
        if (w->reports > 0)
            fputc('\n', out);
        print_header(w, out);
        render_table(run, out, stderr);
        fflush(out);
        return;
    }
    char *screen = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&screen, &len);
    fputs(CLEAR_AND_HOME, out);
    if (mem == NULL) {
        print_header(w, out);
        render_table(run, out, stderr);
    } else {
        print_header(w, mem);
        if (w->note[0])
            fprintf(mem, "%s\n", w->note);
        fputc('\n', mem);
        render_table(run, mem, stderr);
        fclose(mem);
        fit_to_terminal(screen, len, out);
        free(screen);
    }
    fflush(out);
}

/* Samples, reports from the previous sample and this one, prints. Returns false when the
 * watch must end, with *code the exit code. */
static bool watch_report(struct watch *w, int *code)
{
    char timestamp[40];
    timestamp_format_iso(timestamp_now_ms(), timestamp, sizeof(timestamp));
    double started = timestamp_monotonic_ms();
    struct snapshot cur;
    struct inspect_error err = {0};
    if (!watch_sample(w, &cur, &err)) {
        *code = watch_fail(w, &err);
        return false;
    }
    struct action_run run;
    run_init(w, &run);
    w->req->base->action->watch_report(&run, w->have_prev ? &w->prev : NULL, &cur);
    watch_print(w, &run, timestamp, timestamp_monotonic_ms() - started);
    w->reports++;
    forget_prev(w);
    w->prev = cur;
    w->have_prev = true;
    cJSON_Delete(run.data);
    *code = (int)run.exit_code;
    return !run.failed;
}

/* The first report's rates need a sample --interval before it, as a single run takes. */
static bool watch_baseline(struct watch *w, int *code)
{
    const struct action_run *base = w->req->base;
    int64_t interval = base->opts->interval_ms;
    if (!base->action->samples_twice || interval <= 0)
        return true;
    struct snapshot snap;
    struct inspect_error err = {0};
    if (!watch_sample(w, &snap, &err)) {
        *code = watch_fail(w, &err);
        return false;
    }
    w->prev = snap;
    w->have_prev = true;
    if (isatty(STDERR_FILENO)) {
        char buf[32];
        fprintf(stderr, "pgwarden: sampling for %s...\n",
                units_format_duration(interval, buf, sizeof(buf)));
    }
    if (!wait_until(timestamp_monotonic_ms() + (double)interval)) {
        *code = EXIT_OK;
        return false;
    }
    return true;
}

static int watch_loop(struct watch *w)
{
    struct inspect_error err = {0};
    if (!watch_connect(w, &err))
        return watch_fail(w, &err);
    if (w->redraw) {
        fputs(HIDE_CURSOR, stdout);
        fflush(stdout);
        cursor_hidden = 1;
    }
    int code = EXIT_OK;
    if (!watch_baseline(w, &code))
        return code;
    for (;;) {
        if (stop_requested)
            return EXIT_OK;
        double started = timestamp_monotonic_ms();
        if (!watch_report(w, &code))
            return code;
        if (w->req->count > 0 && w->reports >= w->req->count)
            return code;
        if (!wait_until(started + (double)w->req->every_ms))
            return EXIT_OK;
    }
}

int watch_run(const struct watch_request *req)
{
    struct watch w;
    memset(&w, 0, sizeof(w));
    w.req = req;
    w.redraw = req->format == OUTPUT_TABLE && isatty(STDOUT_FILENO);
    struct saved_signals saved;
    signals_install(&saved);
    int code = watch_loop(&w);
    if (cursor_hidden) {
        /* The last report stays on the screen; the prompt starts below it. */
        fputs(SHOW_CURSOR "\n", stdout);
        fflush(stdout);
        cursor_hidden = 0;
    }
    signals_restore(&saved);
    forget_prev(&w);
    if (w.conn != NULL)
        PQfinish(w.conn);
    return code;
}

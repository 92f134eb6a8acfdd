/* `pgwarden serve`: command line, configuration (load and SIGHUP reload), listeners,
 * signals as PgBouncer has them, and the event loop's lifetime. */
#include "pool/serve.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "http/http_server.h"
#include "live/live_manager.h"
#include "pool/cancel.h"
#include "pool/handout.h"
#include "pool/janitor.h"
#include "pool/objects.h"
#include "pool/server.h"
#include "pool/states.h"

#define JANITOR_PERIOD_MS 500

static void usage(FILE *out)
{
    fprintf(out, "Usage: pgwarden serve [-c FILE] [-v] [FILE]\n"
                 "Runs the connection pooler with a pgbouncer.ini-compatible configuration.\n\n"
                 "  -c, --config FILE   configuration file (pgbouncer.ini syntax)\n"
                 "  -v, --verbose       more logging (repeat for trace)\n"
                 "  -h, --help          this help\n"
                 "      --describe-config  print every configuration key as a markdown table\n\n"
                 "Signals: SIGINT shutdown after servers are released, SIGTERM shutdown after\n"
                 "clients leave (a second SIGINT/SIGTERM exits at once), SIGQUIT immediate,\n"
                 "SIGUSR1 pause, SIGUSR2 resume, SIGHUP reload.\n");
}

static void describe_key(void *ctx, const char *section, const char *key, const char *default_text,
                         bool pgbouncer_compatible, const char *meaning)
{
    (void)ctx;
    printf("| `%s` | [%s] | `%s` | %s | %s |\n", key, section,
           default_text[0] ? default_text : "(empty)", pgbouncer_compatible ? "yes" : "no",
           meaning);
}

static void describe_manager_key(void *ctx, const char *key, const char *default_text,
                                 const char *meaning)
{
    (void)ctx;
    printf("| `%s` | `%s` | %s |\n", key, default_text, meaning);
}

/* Prints the key tables of docs/CONFIG.md, so the document is generated from the code. */
static void print_config_keys(void)
{
    printf("| key | section | default | PgBouncer-compatible | meaning |\n");
    printf("|---|---|---|---|---|\n");
    pooler_config_describe(describe_key, NULL);
    printf("\n| `[manager]` key | default | meaning |\n|---|---|---|\n");
    options_describe(describe_manager_key, NULL);
}

static FILE *log_file;

/* Opens a log or pid file for writing without ever blocking: a FIFO named there would hang
 * startup or a reload until a reader came. Only regular files are accepted. NULL with errno
 * set otherwise (EINVAL for a file that is not regular). */
static FILE *open_regular_for_writing(const char *path, bool append)
{
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        errno = EINVAL; /* say so, rather than what open() of it would say (ENXIO) */
        return NULL;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NONBLOCK | (append ? O_APPEND : 0),
                  0644);
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

static void apply_logging(const struct pooler_config *cfg, int extra_verbose)
{
    int v = cfg->verbose + extra_verbose;
    enum log_level level = v >= 2 ? LOG_LEVEL_TRACE : v == 1 ? LOG_LEVEL_DEBUG : LOG_LEVEL_INFO;
    enum log_format fmt = strcmp(cfg->log_format, "json") == 0 ? LOG_FORMAT_JSON : LOG_FORMAT_TEXT;
    FILE *out = stderr;
    if (cfg->logfile && cfg->logfile[0]) {
        FILE *f = open_regular_for_writing(cfg->logfile, true);
        if (f) {
            setvbuf(f, NULL, _IOLBF, 0);
            if (log_file)
                fclose(log_file);
            log_file = f;
            out = f;
        } else {
            log_warning("serve", "cannot open logfile %s: %s", cfg->logfile,
                        errno == EINVAL ? "not a regular file" : strerror(errno));
        }
    }
    log_configure(level, fmt, out);
}

static int extra_verbose;

static void apply_tcp_opts(const struct pooler_config *cfg)
{
    struct net_tcp_opts o = {
        .keepalive = cfg->tcp_keepalive,
        .keepidle_s = cfg->tcp_keepidle,
        .keepintvl_s = cfg->tcp_keepintvl,
        .keepcnt = cfg->tcp_keepcnt,
        .user_timeout_ms = cfg->tcp_user_timeout_ms,
    };
    net_set_tcp_opts(&o);
}

/* ---- accepting ---- */

static void resume_accept_cb(void *arg)
{
    struct pooler *p = arg;
    if (p->accept_paused && p->run_state != POOLER_SHUTDOWN_CLIENTS &&
        p->run_state != POOLER_SHUTDOWN_SERVERS) {
        for (int i = 0; i < p->n_listeners; i++)
            net_io_resume(p->listen_ios[i]);
        p->accept_paused = false;
    }
}

static struct net_timer *accept_timer;
static struct http_server *http_srv; /* owned; NULL when http_listen is empty */

static void accept_cb(int fd, unsigned what, void *arg)
{
    (void)what;
    struct pooler *p = arg;
    int cfd;
    struct net_addr addr;
    /* One accept per wake-up: the level-triggered listener fires again while more are
     * queued, which costs no extra system call compared to looping into EAGAIN. */
    switch (net_accept(fd, &cfd, &addr)) {
    case NET_ACCEPT_OK:
        break;
    case NET_ACCEPT_AGAIN:
        return;
    case NET_ACCEPT_NO_FDS:
        log_warning("serve", "accept: out of file descriptors; pausing accepts for 1s");
        for (int i = 0; i < p->n_listeners; i++)
            net_io_pause(p->listen_ios[i]);
        p->accept_paused = true;
        if (!accept_timer)
            accept_timer = net_timer_new(p->loop, resume_accept_cb, p);
        if (accept_timer)
            net_timer_start(accept_timer, 1000, false);
        return;
    case NET_ACCEPT_ERROR:
        log_warning("serve", "accept failed: %s", strerror(errno));
        return;
    }
    if (!client_new(p, cfd, &addr))
        close(cfd);
}

static bool open_listeners(struct pooler *p, char *err, size_t err_len)
{
    const struct pooler_config *cfg = p->cfg;
    /* listen_addr is a comma-separated list, as in PgBouncer ("127.0.0.1,::1", "*"). */
    const char *a = cfg->listen_addr ? cfg->listen_addr : "";
    while (*a) {
        while (*a == ',' || *a == ' ')
            a++;
        size_t n = strcspn(a, ", ");
        if (n == 0)
            break;
        char addr[128];
        if (n >= sizeof(addr) || p->n_listeners >= POOLER_MAX_LISTENERS - 1) {
            snprintf(err, err_len, "listen_addr: too many or too long addresses");
            return false;
        }
        memcpy(addr, a, n);
        addr[n] = '\0';
        a += n;
        int fd = net_listen_tcp(addr, cfg->listen_port, cfg->listen_backlog, cfg->tcp_defer_accept,
                                err, err_len);
        if (fd < 0)
            return false;
        p->listen_fds[p->n_listeners++] = fd;
    }
    if (cfg->unix_socket_dir && cfg->unix_socket_dir[0]) {
        int fd = net_listen_unix(cfg->unix_socket_dir, cfg->listen_port, cfg->listen_backlog,
                                 p->unix_path, sizeof(p->unix_path), err, err_len);
        if (fd < 0)
            return false;
        p->listen_fds[p->n_listeners++] = fd;
    }
    if (p->n_listeners == 0) {
        snprintf(err, err_len, "neither listen_addr nor unix_socket_dir is set");
        return false;
    }
    for (int i = 0; i < p->n_listeners; i++) {
        p->listen_ios[i] = net_io_new(p->loop, p->listen_fds[i], NET_IO_LEVEL_READ, accept_cb, p);
        if (!p->listen_ios[i]) {
            snprintf(err, err_len, "cannot watch listener");
            return false;
        }
    }
    return true;
}

static void close_listeners(struct pooler *p)
{
    for (int i = 0; i < p->n_listeners; i++) {
        net_io_free(p->listen_ios[i]);
        close(p->listen_fds[i]);
    }
    p->n_listeners = 0;
    if (p->unix_path[0]) {
        unlink(p->unix_path);
        p->unix_path[0] = '\0';
    }
}

/* ---- signals ---- */

static void resume_all(struct pooler *p)
{
    for (struct plist *n = p->pools.next; n != &p->pools; n = n->next)
        pool_activate(plist_entry(n, struct pool, node));
}

static void begin_shutdown(struct pooler *p, enum pooler_run_state how, const char *sig)
{
    if (p->run_state == POOLER_SHUTDOWN_SERVERS || p->run_state == POOLER_SHUTDOWN_CLIENTS) {
        log_info("serve", "%s again: shutting down now", sig);
        net_loop_stop(p->loop);
        return;
    }
    log_info("serve", "%s: %s", sig,
             how == POOLER_SHUTDOWN_SERVERS ? "shutting down after servers are released"
                                            : "shutting down after clients disconnect");
    p->run_state = how;
    if (p->cfg->shutdown_timeout_ms > 0)
        p->shutdown_deadline_us = pooler_now(p) + p->cfg->shutdown_timeout_ms * 1000;
    /* Stop accepting TCP clients; the process exits once the condition holds. */
    close_listeners(p);
    janitor_run(p);
}

static void on_sigint(void *arg)
{
    begin_shutdown(arg, POOLER_SHUTDOWN_SERVERS, "SIGINT");
}

static void on_sigterm(void *arg)
{
    begin_shutdown(arg, POOLER_SHUTDOWN_CLIENTS, "SIGTERM");
}

static void on_sigquit(void *arg)
{
    struct pooler *p = arg;
    log_info("serve", "SIGQUIT: shutting down now");
    net_loop_stop(p->loop);
}

void pooler_pause(struct pooler *p)
{
    if (p->run_state == POOLER_RUNNING) {
        log_info("serve", "pausing: no servers are handed out until resumed");
        p->run_state = POOLER_PAUSED;
    }
}

void pooler_resume(struct pooler *p)
{
    if (p->run_state == POOLER_PAUSED) {
        log_info("serve", "resuming");
        p->run_state = POOLER_RUNNING;
        resume_all(p);
    }
}

void pooler_shutdown(struct pooler *p)
{
    log_info("serve", "SHUTDOWN requested on the admin console");
    net_loop_stop(p->loop);
}

bool pooler_reload(struct pooler *p, char *err, size_t err_len)
{
    struct pooler_config *next = calloc(1, sizeof(*next));
    if (!next) {
        snprintf(err, err_len, "out of memory");
        return false;
    }
    if (!pooler_config_load(p->cfg->config_file, next, err, err_len)) {
        log_error("serve", "reload failed, keeping the current configuration: %s", err);
        free(next);
        return false;
    }
    /* Listeners and buffer sizes are fixed for the process's life. */
    struct pooler_config *old = p->cfg;
    if (strcmp(next->listen_addr, old->listen_addr) || next->listen_port != old->listen_port ||
        strcmp(next->unix_socket_dir, old->unix_socket_dir) || next->pkt_buf != old->pkt_buf)
        log_warning("serve", "reload: listen_addr, listen_port, unix_socket_dir and pkt_buf "
                             "changes need a restart; keeping the old values");
    next->listen_port = old->listen_port;
    next->pkt_buf = old->pkt_buf;
    char *t = next->listen_addr;
    next->listen_addr = old->listen_addr;
    old->listen_addr = t;
    t = next->unix_socket_dir;
    next->unix_socket_dir = old->unix_socket_dir;
    old->unix_socket_dir = t;
    p->cfg = next;
    for (struct plist *n = p->pools.next; n != &p->pools; n = n->next)
        pool_apply_config(plist_entry(n, struct pool, node));
    pooler_config_free(old);
    free(old);
    apply_logging(p->cfg, extra_verbose);
    apply_tcp_opts(p->cfg); /* new server connections; accepted clients inherit the listener's */
    http_server_reload(http_srv);
    log_info("serve", "configuration reloaded from %s", p->cfg->config_file);
    resume_all(p);
    return true;
}

static void on_sigusr1(void *arg)
{
    log_info("serve", "SIGUSR1");
    pooler_pause(arg);
}

static void on_sigusr2(void *arg)
{
    log_info("serve", "SIGUSR2");
    pooler_resume(arg);
}

static void on_sighup(void *arg)
{
    char err[1024];
    log_info("serve", "SIGHUP: reloading");
    (void)pooler_reload(arg, err, sizeof(err));
}

/* ---- teardown ---- */

static struct pool *admin_pool_new(struct pooler *p)
{
    struct pool *pool = calloc(1, sizeof(*pool));
    if (!pool)
        return NULL;
    pool->pooler = p;
    pool->is_admin = true;
    pool->mode = POOL_MODE_SESSION;
    pool->db_name = strdup("pgbouncer");
    pool->user_name = strdup("");
    pool->host = strdup("");
    pool->server_db = strdup("");
    pool->server_user = strdup("");
    pool_init_lists(pool);
    plist_init(&pool->node);
    if (!pool->db_name || !pool->user_name || !pool->host || !pool->server_db ||
        !pool->server_user) {
        pool_free(pool);
        return NULL;
    }
    return pool;
}

static void close_everything(struct pooler *p)
{
    struct plist *n;
    while ((n = plist_first(&p->login_clients)) != NULL)
        client_close(plist_entry(n, struct client, node), "shutdown");
    if (p->admin_pool) {
        while ((n = plist_first(&p->admin_pool->active_clients)) != NULL)
            client_close(plist_entry(n, struct client, node), "shutdown");
    }
    for (n = p->pools.next; n != &p->pools; n = n->next) {
        struct pool *pool = plist_entry(n, struct pool, node);
        struct plist *lists[] = {&pool->active_clients, &pool->waiting_clients,
                                 &pool->waiting_login_clients};
        for (size_t i = 0; i < 3; i++) {
            struct plist *m;
            while ((m = plist_first(lists[i])) != NULL)
                client_fail(plist_entry(m, struct client, node), "57P01",
                            "pgwarden is shutting down");
        }
        struct plist *slists[] = {&pool->idle_servers, &pool->active_servers, &pool->tested_servers,
                                  &pool->login_servers, &pool->canceling_servers};
        for (size_t i = 0; i < 5; i++) {
            struct plist *m;
            while ((m = plist_first(slists[i])) != NULL)
                server_close(plist_entry(m, struct server, node), "shutdown");
        }
    }
    pooler_reap(p);
    cancel_reqs_free_all(p);
    while ((n = plist_first(&p->pools)) != NULL) {
        plist_remove(n);
        pool_free(plist_entry(n, struct pool, node));
    }
    if (p->admin_pool) {
        pool_free(p->admin_pool);
        p->admin_pool = NULL;
    }
}

int serve_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {"describe-config", no_argument, NULL, 'D'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL;
    int opt;
    optind = 1;
    extra_verbose = 0;
    while ((opt = getopt_long(argc, argv, "c:vh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            config_path = optarg;
            break;
        case 'v':
            extra_verbose++;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'D':
            print_config_keys();
            return 0;
        default:
            usage(stderr);
            return 3;
        }
    }
    if (!config_path && optind < argc)
        config_path = argv[optind++];
    if (!config_path || optind < argc) {
        usage(stderr);
        return 3;
    }

    int rc = 3;
    char err[1024];
    struct pooler p;
    memset(&p, 0, sizeof(p));
    p.cfg = calloc(1, sizeof(*p.cfg));
    if (!p.cfg)
        return 3;
    log_configure(extra_verbose >= 2 ? LOG_LEVEL_TRACE
                  : extra_verbose    ? LOG_LEVEL_DEBUG
                                     : LOG_LEVEL_INFO,
                  LOG_FORMAT_TEXT, stderr);
    if (!pooler_config_load(config_path, p.cfg, err, sizeof(err))) {
        fprintf(stderr, "pgwarden serve: %s\n", err);
        free(p.cfg);
        return 3;
    }
    apply_logging(p.cfg, extra_verbose);
    apply_tcp_opts(p.cfg);
    signal(SIGPIPE, SIG_IGN);

    plist_init(&p.pools);
    plist_init(&p.login_clients);
    plist_init(&p.justfree_clients);
    plist_init(&p.justfree_servers);
    plist_init(&p.cancel_reqs);
    plist_init(&p.flush_clients);
    plist_init(&p.flush_servers);
    iobuf_cache_init(&p.bufs, (uint32_t)p.cfg->pkt_buf);
    /* About one bucket per allowed client: the table's pages are touched as keys spread over
     * it, so an oversized table would show up as memory per idle client. */
    p.cancel_buckets = 256;
    while (p.cancel_buckets < (size_t)p.cfg->max_client_conn && p.cancel_buckets < (1u << 20))
        p.cancel_buckets <<= 1;
    p.cancel_table = calloc(p.cancel_buckets, sizeof(*p.cancel_table));
    p.loop = net_loop_new();
    p.admin_pool = admin_pool_new(&p);
    if (!p.cancel_table || !p.loop || !stmt_registry_init(&p.stmts) || !p.admin_pool) {
        fprintf(stderr, "pgwarden serve: cannot create the event loop\n");
        goto out;
    }
    if (p.cfg->io_uring) {
        p.sendq = net_sendq_new(POOLER_SEND_BATCH, err, sizeof(err));
        if (p.sendq)
            log_info("serve", "sends are batched per loop turn with io_uring");
        else
            log_warning("serve", "%s: sending with one send() per message", err);
    }
    if (!open_listeners(&p, err, sizeof(err))) {
        fprintf(stderr, "pgwarden serve: %s\n", err);
        goto out;
    }
    if (http_server_start(&p, &http_srv, err, sizeof(err)) == HTTP_START_FAILED) {
        fprintf(stderr, "pgwarden serve: %s\n", err);
        goto out;
    }
    p.janitor = net_timer_new(p.loop, janitor_run, &p);
    if (!p.janitor || !net_signal_add(p.loop, SIGINT, on_sigint, &p) ||
        !net_signal_add(p.loop, SIGTERM, on_sigterm, &p) ||
        !net_signal_add(p.loop, SIGQUIT, on_sigquit, &p) ||
        !net_signal_add(p.loop, SIGUSR1, on_sigusr1, &p) ||
        !net_signal_add(p.loop, SIGUSR2, on_sigusr2, &p) ||
        !net_signal_add(p.loop, SIGHUP, on_sighup, &p)) {
        fprintf(stderr, "pgwarden serve: cannot install timers and signal handlers\n");
        goto out;
    }
    net_timer_start(p.janitor, JANITOR_PERIOD_MS, true);
    if (p.cfg->manager.live) {
        p.manager = live_manager_new(&p);
        if (!p.manager) {
            fprintf(stderr, "pgwarden serve: cannot start the pool manager\n");
            goto out;
        }
    } else {
        log_info("serve", "[manager] live = off: the pools are served, nothing watches them");
    }
    if (p.cfg->pidfile && p.cfg->pidfile[0]) {
        FILE *f = open_regular_for_writing(p.cfg->pidfile, false);
        if (f) {
            fprintf(f, "%d\n", (int)getpid());
            fclose(f);
        } else {
            log_warning("serve", "cannot write pidfile %s: %s", p.cfg->pidfile,
                        errno == EINVAL ? "not a regular file" : strerror(errno));
        }
    }
    log_info("serve", "pgwarden %s listening on %s:%d%s%s (%s, %s pooling, backend %s)",
             PGWARDEN_VERSION, p.cfg->listen_addr, p.cfg->listen_port,
             p.unix_path[0] ? " and " : "", p.unix_path,
             p.cfg->auth_type == POOLER_AUTH_TRUST ? "trust auth" : "password auth",
             pool_mode_name(p.cfg->pool_mode), net_loop_backend(p.loop));
    if (!net_loop_run(p.loop)) {
        fprintf(stderr, "pgwarden serve: event loop failed\n");
        goto out;
    }
    rc = 0;
    log_info("serve", "shut down");
out:
    http_server_stop(http_srv);
    http_srv = NULL;
    close_everything(&p);
    close_listeners(&p);
    if (p.cfg->pidfile && p.cfg->pidfile[0])
        unlink(p.cfg->pidfile);
    live_manager_free(p.manager);
    net_timer_free(p.janitor);
    net_timer_free(p.reaper);
    net_timer_free(p.flusher);
    net_sendq_free(p.sendq);
    net_timer_free(accept_timer);
    accept_timer = NULL;
    net_loop_free(p.loop);
    iobuf_cache_destroy(&p.bufs);
    stmt_registry_destroy(&p.stmts);
    free(p.cancel_table);
    pooler_config_free(p.cfg);
    free(p.cfg);
    log_configure(LOG_LEVEL_INFO, LOG_FORMAT_TEXT, stderr);
    if (log_file) {
        fclose(log_file);
        log_file = NULL;
    }
    return rc;
}

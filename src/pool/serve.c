/* `pgwarden serve`: command line, configuration (load and SIGHUP reload), listeners,
 * signals as PgBouncer has them, pidfile, user switch and -d, and the event loop's lifetime. */
#include "pool/serve.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/process.h"
#include "http/http_server.h"
#include "live/live_manager.h"
#include "net/tls.h"
#include "pool/cancel.h"
#include "pool/control.h"
#include "pool/handout.h"
#include "pool/janitor.h"
#include "pool/objects.h"
#include "pool/server.h"
#include "pool/states.h"
#include "proto/scram.h"
#include "proto/wire.h"

#define JANITOR_PERIOD_MS 500

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: pgwarden serve [-c FILE] [-d] [-q] [-v]... [-u USER] [FILE]\n"
            "       pgwarden [-d] [-q] [-v]... [-u USER] FILE.ini   (PgBouncer's command line)\n"
            "Runs the connection pooler with a pgbouncer.ini-compatible configuration.\n\n"
            "  -c, --config FILE   configuration file (pgbouncer.ini syntax)\n"
            "  -d, --daemon        run in the background (needs logfile and pidfile); returns\n"
            "                      0 once the pooler listens, 3 when it could not start\n"
            "  -q, --quiet         no log lines on stderr (a reason not to start still is)\n"
            "  -v, --verbose       more logging (repeat for trace)\n"
            "  -u, --user USER     switch to USER once the listeners are bound (needs root;\n"
            "                      overrides the user key)\n"
            "  -V, --version       print the version\n"
            "  -h, --help          this help\n"
            "      --describe-config  print every configuration key as a markdown table\n"
            "  -R, --reboot        PgBouncer's online restart: not supported, refused\n\n"
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
    options_describe(~0u, describe_manager_key, NULL); /* all: the CLI reads [manager] too */
}

static FILE *log_file;

static FILE *quiet_sink; /* owned: /dev/null, where -q sends log lines when there is no logfile */
static bool quiet;       /* -q, or -d once in the background: no log lines on stderr */

static void apply_logging(const struct pooler_config *cfg, int extra_verbose)
{
    int v = cfg->verbose + extra_verbose;
    enum log_level level = v >= 2 ? LOG_LEVEL_TRACE : v == 1 ? LOG_LEVEL_DEBUG : LOG_LEVEL_INFO;
    enum log_format fmt = strcmp(cfg->log_format, "json") == 0 ? LOG_FORMAT_JSON : LOG_FORMAT_TEXT;
    FILE *out = stderr;
    if (cfg->logfile && cfg->logfile[0]) {
        FILE *f = process_open_regular_for_writing(cfg->logfile, true);
        if (f) {
            setvbuf(f, NULL, _IOLBF, 0);
            if (log_file)
                fclose(log_file);
            log_file = f;
            out = f;
        } else if (log_file) {
            /* A reload after the switch to `user` may no longer open a file root opened:
             * logging goes on to the one that is open rather than to a detached stderr. */
            out = log_file;
            log_warning("serve", "cannot open logfile %s again: %s; logging on to the open file",
                        cfg->logfile, errno == EINVAL ? "not a regular file" : strerror(errno));
        } else {
            log_warning("serve", "cannot open logfile %s: %s", cfg->logfile,
                        errno == EINVAL ? "not a regular file" : strerror(errno));
        }
    }
    if (out == stderr && quiet) {
        if (!quiet_sink)
            quiet_sink = fopen("/dev/null", "we");
        if (quiet_sink)
            out = quiet_sink;
    }
    /* syslog first: the lines that follow (the load's warnings among them) go there too. */
    log_configure_syslog(cfg->syslog, cfg->syslog_ident, cfg->syslog_facility);
    log_configure(level, fmt, out);
}

/* Back to stderr, closing the files apply_logging opened. */
static void release_logging(void)
{
    log_configure(LOG_LEVEL_INFO, LOG_FORMAT_TEXT, stderr);
    log_configure_syslog(false, NULL, NULL);
    if (log_file) {
        fclose(log_file);
        log_file = NULL;
    }
    if (quiet_sink) {
        fclose(quiet_sink);
        quiet_sink = NULL;
    }
}

static int extra_verbose;

/* A reason not to start: on stderr (a daemon shares its caller's until it is ready), and in
 * the logfile when one is open and in syslog when it is on. */
static void startup_failed(const char *why)
{
    fprintf(stderr, "pgwarden serve: %s\n", why);
    if (log_file || log_syslog_enabled())
        log_error("serve", "not starting: %s", why);
}

static void apply_tcp_opts(const struct pooler_config *cfg)
{
    struct net_tcp_opts o = {
        .keepalive = cfg->tcp_keepalive,
        .keepidle_s = cfg->tcp_keepidle,
        .keepintvl_s = cfg->tcp_keepintvl,
        .keepcnt = cfg->tcp_keepcnt,
        .user_timeout_ms = cfg->tcp_user_timeout_ms,
        .socket_buffer = cfg->tcp_socket_buffer,
    };
    net_set_tcp_opts(&o);
}

/* ---- accepting ---- */

/* An IPv4 client of a dual-stack listener ("*", "::") arrives as ::ffff:a.b.c.d: it is
 * recorded as the IPv4 address it is, so logs, SHOW CLIENTS and exclude_addr see one form. */
static void unmap_ipv4(struct net_addr *a)
{
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (a->family != AF_INET6 || memcmp(a->ip, v4mapped, sizeof(v4mapped)) != 0)
        return;
    a->family = AF_INET;
    memmove(a->ip, a->ip + 12, 4);
    memset(a->ip + 4, 0, sizeof(a->ip) - 4);
}

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

/* A descriptor held in reserve (/dev/null) for the moment the process runs out (EMFILE): it
 * is closed to accept one more client, which is told why it cannot be served, and taken
 * again. Without it, over-limit clients would wait in the backlog or be dropped without a
 * word. */
static int spare_fd = -1;
static int64_t refused_since_log;
static int64_t refusal_logged_us;

static void spare_fd_take(void)
{
    if (spare_fd < 0)
        spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

/* Accepts one client on lfd with the spare descriptor and refuses it with an error; false
 * when even that was impossible. */
static bool refuse_over_limit(struct pooler *p, int lfd)
{
    if (spare_fd < 0)
        return false;
    close(spare_fd);
    spare_fd = -1;
    int cfd;
    struct net_addr addr;
    bool accepted = net_accept(lfd, &cfd, &addr) == NET_ACCEPT_OK;
    if (accepted) {
        uint8_t buf[256];
        struct wire_buf b;
        wire_buf_init(&b, buf, sizeof(buf));
        wire_build_error(&b, "FATAL", "53300",
                         "sorry, too many clients already: pgwarden has no file descriptor "
                         "left (raise its open-file limit or lower max_client_conn)");
        net_refuse(cfd, buf, b.len);
        refused_since_log++;
    }
    spare_fd_take();
    int64_t now = pooler_now(p);
    if (refused_since_log > 0 && now - refusal_logged_us >= 1000000) {
        log_warning("serve", "out of file descriptors: refused %lld client%s with an error",
                    (long long)refused_since_log, refused_since_log == 1 ? "" : "s");
        refused_since_log = 0;
        refusal_logged_us = now;
    }
    return accepted;
}

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
        if (refuse_over_limit(p, fd))
            return;
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
    unmap_ipv4(&addr);
    if (!objects_client_new(p, cfd, &addr)) {
        /* Out of memory for this one client: it is told so (net_refuse closes the socket), the
         * others are not affected. */
        uint8_t buf[128];
        struct wire_buf b;
        wire_buf_init(&b, buf, sizeof(buf));
        wire_build_error(&b, "FATAL", "53200", "out of memory");
        net_refuse(cfd, buf, b.len);
        log_warning("serve", "out of memory accepting a client: refused it");
    }
}

static bool add_tcp_listener(struct pooler *p, const char *addr, char *err, size_t err_len)
{
    const struct pooler_config *cfg = p->cfg;
    if (p->n_listeners >= POOLER_MAX_LISTENERS - 1) {
        snprintf(err, err_len, "listen_addr: too many addresses");
        return false;
    }
    int fd = cfg->so_reuseport ? net_listen_tcp_shared(addr, cfg->listen_port, cfg->listen_backlog,
                                                       cfg->tcp_defer_accept, err, err_len)
                               : net_listen_tcp(addr, cfg->listen_port, cfg->listen_backlog,
                                                cfg->tcp_defer_accept, err, err_len);
    if (fd < 0)
        return false;
    p->listen_fds[p->n_listeners++] = fd;
    return true;
}

/* "*" is every address of both families, as in PgBouncer. "::" is bound first: Linux makes it
 * dual-stack (IPv4 too) unless net.ipv6.bindv6only is set, and 0.0.0.0 would then collide
 * with it, so 0.0.0.0 is added only for a socket that is IPv6-only. A kernel without IPv6
 * gets 0.0.0.0 alone, with a warning. */
static bool listen_tcp_everywhere(struct pooler *p, char *err, size_t err_len)
{
    char why[256];
    if (!add_tcp_listener(p, "::", why, sizeof(why))) {
        log_warning("serve", "listen_addr *: no IPv6 listener (%s); listening on IPv4 only", why);
        return add_tcp_listener(p, "0.0.0.0", err, err_len);
    }
    int fd = p->listen_fds[p->n_listeners - 1], v6only = 1;
    socklen_t len = sizeof(v6only);
    bool dual_stack = getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &len) == 0 && !v6only;
    return dual_stack || add_tcp_listener(p, "0.0.0.0", err, err_len);
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
        if (n >= sizeof(addr)) {
            snprintf(err, err_len, "listen_addr: too long an address");
            return false;
        }
        memcpy(addr, a, n);
        addr[n] = '\0';
        a += n;
        if (!(strcmp(addr, "*") == 0 ? listen_tcp_everywhere(p, err, err_len)
                                     : add_tcp_listener(p, addr, err, err_len)))
            return false;
    }
    if (cfg->unix_socket_dir && cfg->unix_socket_dir[0]) {
        gid_t gid;
        if (!process_group_resolve(cfg->unix_socket_group, &gid, err, err_len))
            return false;
        int fd = net_listen_unix(cfg->unix_socket_dir, cfg->listen_port, cfg->listen_backlog,
                                 (mode_t)cfg->unix_socket_mode, gid, p->unix_path,
                                 sizeof(p->unix_path), err, err_len);
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

/* A graceful shutdown stops taking TCP clients; the unix socket stays open for the admin
 * console (PgBouncer) until the process exits. */
static void close_tcp_listeners(struct pooler *p)
{
    int kept = 0;
    for (int i = 0; i < p->n_listeners; i++) {
        if (p->unix_path[0] && i == p->n_listeners - 1) { /* open_listeners adds it last */
            p->listen_fds[kept] = p->listen_fds[i];
            p->listen_ios[kept++] = p->listen_ios[i];
            continue;
        }
        net_io_free(p->listen_ios[i]);
        close(p->listen_fds[i]);
    }
    p->n_listeners = kept;
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
        handout_activate(plist_entry(n, struct pool, node));
}

/* After SUSPEND: every pooled client and linked server whose socket was left unread gets its
 * read callback again (the edge that announced the bytes has passed). */
static void wake_suspended_reads(struct pooler *p)
{
    for (struct plist *n = p->pools.next; n != &p->pools; n = n->next) {
        struct pool *pool = plist_entry(n, struct pool, node);
        for (struct plist *it = pool->active_servers.next; it != &pool->active_servers;
             it = it->next) {
            struct server *s = plist_entry(it, struct server, node);
            if (s->conn.may_read)
                net_io_activate_read(s->conn.io);
        }
        for (struct plist *it = pool->active_clients.next; it != &pool->active_clients;
             it = it->next) {
            struct client *c = plist_entry(it, struct client, node);
            if (c->conn.may_read)
                net_io_activate_read(c->conn.io);
        }
    }
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
    bool was_suspended = p->run_state == POOLER_SUSPENDED;
    p->run_state = how;
    if (was_suspended)
        wake_suspended_reads(p);
    p->shutdown_since_us = pooler_now(p);
    p->shutdown_last_id = p->next_id;
    if (p->cfg->shutdown_timeout_ms > 0)
        p->shutdown_deadline_us = pooler_now(p) + p->cfg->shutdown_timeout_ms * 1000;
    /* Stop accepting TCP clients; the process exits once the condition holds. Clients that
     * come over the unix socket meanwhile may use the admin console only. */
    close_tcp_listeners(p);
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

void serve_pause(struct pooler *p)
{
    if (p->run_state == POOLER_RUNNING) {
        log_info("serve", "pausing: no servers are handed out until resumed");
        p->run_state = POOLER_PAUSED;
    }
}

bool serve_suspend(struct pooler *p)
{
    if (p->run_state != POOLER_RUNNING)
        return false;
    log_info("serve", "suspending: pooled clients and their servers are not read until resumed");
    p->run_state = POOLER_SUSPENDED;
    p->suspend_since_us = pooler_now(p);
    return true;
}

void serve_resume(struct pooler *p)
{
    if (p->run_state == POOLER_PAUSED || p->run_state == POOLER_SUSPENDED) {
        log_info("serve", "resuming");
        bool was_suspended = p->run_state == POOLER_SUSPENDED;
        p->run_state = POOLER_RUNNING;
        if (was_suspended)
            wake_suspended_reads(p);
        resume_all(p);
    }
}

void serve_shutdown_when(struct pooler *p, bool wait_for_clients)
{
    begin_shutdown(p, wait_for_clients ? POOLER_SHUTDOWN_CLIENTS : POOLER_SHUTDOWN_SERVERS,
                   wait_for_clients ? "SHUTDOWN WAIT_FOR_CLIENTS" : "SHUTDOWN WAIT_FOR_SERVERS");
}

void serve_shutdown(struct pooler *p)
{
    log_info("serve", "SHUTDOWN requested on the admin console");
    net_loop_stop(p->loop);
}

/* ---- TLS contexts ---- */

/* Builds one side's context from cfg into *out: NULL (and true) when its sslmode is disable;
 * false with a reason naming the setting and file in err. */
static bool tls_build(const struct pooler_config *cfg, bool client_side, struct tls_context **out,
                      char *err, size_t err_len)
{
    struct tls_settings set;
    pooler_config_tls_settings(cfg, client_side, &set);
    *out = NULL;
    if (set.sslmode == TLS_DISABLE)
        return true;
    *out = client_side ? tls_context_new_accept(&set, err, err_len)
                       : tls_context_new_connect(&set, err, err_len);
    return *out != NULL;
}

/* PgBouncer reconnects servers when TLS settings change: idle ones are closed now (the next
 * client must not get one made with the old settings), the others once released. A failed
 * login cached under the old settings no longer fast-fails clients: the next one tries the
 * new settings at once. */
static void replace_servers(struct pooler *p)
{
    for (struct plist *n = p->pools.next; n != &p->pools; n = n->next) {
        struct pool *pool = plist_entry(n, struct pool, node);
        objects_pool_forget_login_failure(pool);
        objects_pool_mark_servers_obsolete(pool);
        struct plist *m;
        while ((m = plist_first(&pool->idle_servers)) != NULL)
            server_close(plist_entry(m, struct server, node), "obsolete connection");
    }
}

/* After p->cfg changed (reload, SET): builds one side's new context first. When that fails
 * the old context stays, the reason is logged and put in err, and false is returned. Open
 * connections keep the context they were made with; a changed server context closes server
 * connections as they are released. */
static bool tls_apply(struct pooler *p, bool client_side, char *err, size_t err_len)
{
    const char *side = client_side ? "client" : "server";
    struct tls_context **cur = client_side ? &p->client_tls : &p->server_tls;
    struct tls_context *next;
    if (!tls_build(p->cfg, client_side, &next, err, err_len)) {
        log_error("serve", "%s_tls_* settings not applied, TLS goes on with the previous ones: %s",
                  side, err);
        return false;
    }
    if (tls_context_same(*cur, next)) {
        tls_context_free(next);
        return true;
    }
    tls_context_free(*cur);
    *cur = next;
    log_info("serve", "%s TLS: %s from now on%s", side,
             next ? tls_sslmode_name(tls_context_sslmode(next)) : "disable",
             client_side ? " (for new clients)" : "; server connections are replaced");
    if (!client_side)
        replace_servers(p);
    return true;
}

/* Brings pools, logging and socket options in line with p->cfg after it changed. */
static void apply_config(struct pooler *p)
{
    params_track_extra(p->cfg->track_extra_parameters);
    scram_set_iterations(p->cfg->scram_iterations);
    for (struct plist *n = p->pools.next; n != &p->pools; n = n->next)
        objects_pool_apply_config(plist_entry(n, struct pool, node));
    apply_logging(p->cfg, extra_verbose);
    apply_tcp_opts(p->cfg); /* new server connections; accepted clients inherit the listener's */
}

/* A read-at-start string key: the new config takes the running value, the old one (freed
 * next) the value the file asked for. */
static void keep_string(char **next, char **old)
{
    char *t = *next;
    *next = *old;
    *old = t;
}

bool serve_reload(struct pooler *p, char *err, size_t err_len)
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
        strcmp(next->unix_socket_dir, old->unix_socket_dir) || next->pkt_buf != old->pkt_buf ||
        next->unix_socket_mode != old->unix_socket_mode ||
        strcmp(next->unix_socket_group, old->unix_socket_group) ||
        next->disable_pqexec != old->disable_pqexec)
        log_warning("serve", "reload: listen_addr, listen_port, unix_socket_dir, "
                             "unix_socket_mode, unix_socket_group, pkt_buf and disable_pqexec "
                             "changes need a restart; keeping the old values");
    if (strcmp(next->resolv_conf, old->resolv_conf))
        log_warning("serve", "reload: resolv_conf changes need a restart; keeping %s",
                    old->resolv_conf[0] ? old->resolv_conf : "the system's resolver");
    next->listen_port = old->listen_port;
    next->disable_pqexec = old->disable_pqexec;
    next->pkt_buf = old->pkt_buf;
    next->unix_socket_mode = old->unix_socket_mode;
    keep_string(&next->unix_socket_group, &old->unix_socket_group);
    keep_string(&next->listen_addr, &old->listen_addr);
    keep_string(&next->unix_socket_dir, &old->unix_socket_dir);
    /* The resolver read it at start (net_resolve_use_conf): SHOW CONFIG shows that file. */
    keep_string(&next->resolv_conf, &old->resolv_conf);
    p->cfg = next;
    pooler_config_free(old);
    free(old);
    apply_config(p);
    char tls_err[512]; /* logged by tls_apply; the rest of the reload stands */
    (void)tls_apply(p, true, tls_err, sizeof(tls_err));
    (void)tls_apply(p, false, tls_err, sizeof(tls_err));
    pooler_config_log_warnings(p->cfg);
    http_server_reload(http_srv);
    log_info("serve", "configuration reloaded from %s", p->cfg->config_file);
    resume_all(p);
    return true;
}

enum serve_set_result serve_set(struct pooler *p, const char *key, const char *value, char *err,
                                size_t err_len)
{
    if (pooler_config_set(p->cfg, key, value, err, err_len) != POOLER_SET_OK)
        return SERVE_SET_REFUSED;
    /* PgBouncer keeps a TLS value whose settings do not build yet: rotating a certificate
     * takes one SET per file, and the key and certificate match only once both are set. */
    bool client_tls = !strncasecmp(key, "client_tls", 10);
    bool tls = client_tls || !strncasecmp(key, "server_tls", 10);
    bool tls_applied = !tls || tls_apply(p, client_tls, err, err_len);
    apply_config(p);
    log_info("serve", "SET %s = '%s' on the admin console (until the next RELOAD)", key, value);
    resume_all(p);
    return tls_applied ? SERVE_SET_APPLIED : SERVE_SET_TLS_NOT_APPLIED;
}

static void on_sigusr1(void *arg)
{
    log_info("serve", "SIGUSR1");
    serve_pause(arg);
}

static void on_sigusr2(void *arg)
{
    struct pooler *p = arg;
    if (p->run_state == POOLER_SHUTDOWN_SERVERS || p->run_state == POOLER_SHUTDOWN_CLIENTS) {
        log_info("serve", "got SIGUSR2 while shutting down, ignoring");
        return;
    }
    log_info("serve", "SIGUSR2");
    serve_resume(p);
}

static void on_sighup(void *arg)
{
    char err[1024];
    log_info("serve", "SIGHUP: reloading");
    (void)serve_reload(arg, err, sizeof(err));
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
    states_init_pool_lists(pool);
    plist_init(&pool->node);
    if (!pool->db_name || !pool->user_name || !pool->host || !pool->server_db ||
        !pool->server_user) {
        objects_pool_free(pool);
        return NULL;
    }
    return pool;
}

static void close_everything(struct pooler *p)
{
    if (spare_fd >= 0) {
        close(spare_fd);
        spare_fd = -1;
    }
    objects_close_all(p);
}

/* The command line: `serve [-c FILE] [FILE]`, and PgBouncer's `[-d] [-q] [-v] [-u USER]
 * FILE.ini` (main.c hands that form over whole). */
struct serve_args {
    const char *config_path; /* borrowed from argv */
    const char *user;        /* borrowed: -u, NULL = the user key */
    bool daemon;
};

/* Returns true to go on serving; false with the process exit code in *exit_code when the
 * command line is wrong or asked for something else (help, version). */
static bool parse_serve_args(int argc, char **argv, struct serve_args *a, int *exit_code)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},    {"daemon", no_argument, NULL, 'd'},
        {"quiet", no_argument, NULL, 'q'},           {"verbose", no_argument, NULL, 'v'},
        {"user", required_argument, NULL, 'u'},      {"reboot", no_argument, NULL, 'R'},
        {"version", no_argument, NULL, 'V'},         {"help", no_argument, NULL, 'h'},
        {"describe-config", no_argument, NULL, 'D'}, {NULL, 0, NULL, 0},
    };
    int opt;
    memset(a, 0, sizeof(*a));
    optind = 1;
    extra_verbose = 0;
    quiet = false;
    *exit_code = 0;
    while ((opt = getopt_long(argc, argv, "c:dqvu:RVh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            a->config_path = optarg;
            break;
        case 'd':
            a->daemon = true;
            break;
        case 'q':
            quiet = true;
            break;
        case 'v':
            extra_verbose++;
            break;
        case 'u':
            a->user = optarg;
            break;
        case 'R':
            fprintf(stderr, "pgwarden: -R/--reboot (online restart, deprecated in PgBouncer) is "
                            "not supported: stop the running pooler (SIGINT lets its "
                            "transactions finish), then start the new one\n");
            *exit_code = 3;
            return false;
        case 'V':
            printf("pgwarden %s\n", PGWARDEN_VERSION);
            return false;
        case 'h':
            usage(stdout);
            return false;
        case 'D':
            print_config_keys();
            return false;
        default:
            usage(stderr);
            *exit_code = 3;
            return false;
        }
    }
    if (!a->config_path && optind < argc)
        a->config_path = argv[optind++];
    if (!a->config_path || optind < argc) {
        usage(stderr);
        *exit_code = 3;
        return false;
    }
    return true;
}

/* What -d needs, checked before going to the background, where nobody would see the error. */
static bool daemon_check(const struct pooler_config *cfg, char *err, size_t err_len)
{
    bool has_logfile = cfg->logfile && cfg->logfile[0];
    if (!cfg->pidfile || !cfg->pidfile[0] || (!has_logfile && !cfg->syslog)) {
        snprintf(err, err_len, "-d needs pidfile, and logfile or syslog = 1, in %s",
                 cfg->config_file);
        return false;
    }
    if (has_logfile && !log_file) {
        snprintf(err, err_len, "-d needs a logfile it can open (%s)", cfg->logfile);
        return false;
    }
    return true;
}

int serve_main(int argc, char **argv)
{
    struct serve_args args;
    int rc;
    if (!parse_serve_args(argc, argv, &args, &rc))
        return rc;
    rc = 3; /* until the loop ends cleanly */
    if (args.daemon)
        quiet = true; /* as PgBouncer: once in the background, nothing goes to stderr */

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
    if (!pooler_config_load(args.config_path, p.cfg, err, sizeof(err))) {
        fprintf(stderr, "pgwarden serve: %s\n", err);
        free(p.cfg);
        return 3;
    }
    apply_logging(p.cfg, extra_verbose);
    params_track_extra(p.cfg->track_extra_parameters);
    scram_set_iterations(p.cfg->scram_iterations);
    /* The load's warnings go out now that the log target is open, so they reach the logfile. */
    pooler_config_log_warnings(p.cfg);
    struct process_run_as run_as;
    int code = -1; /* >= 0: this process is done (a refusal, or the parent of a daemon) */
    if (!process_run_as_resolve(args.user ? args.user : p.cfg->user, &run_as, err, sizeof(err)) ||
        (p.cfg->pidfile[0] && !process_pidfile_check(p.cfg->pidfile, err, sizeof(err))) ||
        (args.daemon && !daemon_check(p.cfg, err, sizeof(err)))) {
        startup_failed(err);
        code = 3;
    } else if (args.daemon && process_daemon_start(&code) == PROCESS_DAEMON_CHILD) {
        code = -1;
    }
    if (code >= 0) {
        pooler_config_free(p.cfg);
        free(p.cfg);
        release_logging();
        return code;
    }
    apply_tcp_opts(p.cfg);
    signal(SIGPIPE, SIG_IGN);

    objects_init_pooler_lists(&p);
    iobuf_cache_init(&p.bufs, (uint32_t)p.cfg->pkt_buf);
    /* About one bucket per allowed client: the table's pages are touched as keys spread over
     * it, so an oversized table would show up as memory per idle client. */
    p.cancel_buckets = 256;
    while (p.cancel_buckets < (size_t)p.cfg->max_client_conn && p.cancel_buckets < (1u << 20))
        p.cancel_buckets <<= 1;
    p.cancel_table = calloc(p.cancel_buckets, sizeof(*p.cancel_table));
    p.loop = net_loop_new();
    p.admin_pool = admin_pool_new(&p);
    if (!p.cancel_table || !p.loop || !prepared_registry_init(&p.stmts) || !p.admin_pool) {
        startup_failed("cannot create the event loop");
        goto out;
    }
    if (p.cfg->io_uring) {
        p.sendq = net_sendq_new(POOLER_SEND_BATCH, err, sizeof(err));
        if (p.sendq)
            log_info("serve", "sends are batched per loop turn with io_uring");
        else
            log_warning("serve", "%s: sending with one send() per message", err);
    }
    spare_fd_take();
    /* Read once, at start, like PgBouncer: a file that names no nameserver stops the start
     * rather than leaving every server host name unresolvable. */
    if (p.cfg->resolv_conf[0] &&
        !net_resolve_use_conf(p.loop, p.cfg->resolv_conf, err, sizeof(err))) {
        startup_failed(err);
        goto out;
    }
    /* Before the switch to `user`: key files are often readable by root only. A reload after
     * the switch reads them as that user. */
    if (!tls_build(p.cfg, true, &p.client_tls, err, sizeof(err)) ||
        !tls_build(p.cfg, false, &p.server_tls, err, sizeof(err))) {
        startup_failed(err);
        goto out;
    }
    if (!open_listeners(&p, err, sizeof(err)) ||
        http_server_start(&p, &http_srv, err, sizeof(err)) == HTTP_START_FAILED ||
        !process_run_as_switch(&run_as, err, sizeof(err))) { /* root is needed up to here only */
        startup_failed(err);
        goto out;
    }
    p.janitor = net_timer_new(p.loop, janitor_run, &p);
    if (!p.janitor || !net_signal_add(p.loop, SIGINT, on_sigint, &p) ||
        !net_signal_add(p.loop, SIGTERM, on_sigterm, &p) ||
        !net_signal_add(p.loop, SIGQUIT, on_sigquit, &p) ||
        !net_signal_add(p.loop, SIGUSR1, on_sigusr1, &p) ||
        !net_signal_add(p.loop, SIGUSR2, on_sigusr2, &p) ||
        !net_signal_add(p.loop, SIGHUP, on_sighup, &p)) {
        startup_failed("cannot install timers and signal handlers");
        goto out;
    }
    net_timer_start(p.janitor, JANITOR_PERIOD_MS, true);
    if (p.cfg->manager.live) {
        p.manager = live_manager_new(&p);
        if (!p.manager) {
            startup_failed("cannot start the pool manager");
            goto out;
        }
    } else {
        log_info("serve", "[manager] live = off: the pools are served, nothing watches them");
    }
    /* Written as the user the pooler runs as (as PgBouncer), so it can remove it at exit. A
     * daemon is found through its pidfile only: without one it does not start. */
    if (p.cfg->pidfile[0] && !process_pidfile_write(p.cfg->pidfile) && args.daemon) {
        snprintf(err, sizeof(err), "cannot write pidfile %s", p.cfg->pidfile);
        startup_failed(err);
        goto out;
    }
    log_info("serve", "pgwarden %s listening on %s:%d%s%s (%s, %s pooling, backend %s)",
             PGWARDEN_VERSION, p.cfg->listen_addr, p.cfg->listen_port,
             p.unix_path[0] ? " and " : "", p.unix_path,
             p.cfg->auth_type == POOLER_AUTH_TRUST ? "trust auth" : "password auth",
             pooler_config_pool_mode_name(p.cfg->pool_mode), net_loop_backend(p.loop));
    process_daemon_ready();
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
    process_pidfile_remove();
    live_manager_free(p.manager);
    net_timer_free(p.janitor);
    net_timer_free(p.reaper);
    net_timer_free(p.flusher);
    net_sendq_free(p.sendq);
    net_timer_free(accept_timer);
    accept_timer = NULL;
    net_loop_free(p.loop);
    tls_context_free(p.client_tls);
    tls_context_free(p.server_tls);
    iobuf_cache_destroy(&p.bufs);
    prepared_registry_destroy(&p.stmts);
    free(p.cancel_table);
    pooler_config_free(p.cfg);
    free(p.cfg);
    release_logging();
    return rc;
}

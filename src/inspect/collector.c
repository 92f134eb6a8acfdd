/* pg_stat_* collector: three catalog queries per snapshot, all read-only, all through
 * PQexecParams (unnamed statements) so they also work through transaction poolers. */
#include "inspect/collector.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Environment, capacity and settings in one round trip. Settings missing on older versions
 * come back NULL (current_setting(name, true)), which doubles as the version gate. */
static const char environment_sql[] =
    "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint,"
    " pg_is_in_recovery(),"
    " r.rolsuper,"
    " r.rolsuper OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE'),"
    " r.rolsuper OR pg_has_role(current_user, 'pg_signal_backend', 'USAGE'),"
    " EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'supabase_admin'),"
    " current_setting('max_connections')::int,"
    " current_setting('superuser_reserved_connections')::int,"
    " COALESCE(current_setting('reserved_connections', true)::int, 0),"
    " (SELECT setting::bigint FROM pg_settings WHERE name = 'idle_in_transaction_session_timeout'),"
    " COALESCE((SELECT setting::bigint FROM pg_settings WHERE name = 'idle_session_timeout'), 0),"
    " (SELECT setting::bigint FROM pg_settings WHERE name = 'statement_timeout'),"
    " (SELECT count(*) FROM pg_stat_activity WHERE backend_type IS DISTINCT FROM 'client backend')"
    " FROM pg_roles r WHERE r.rolname = current_user";

/* One row per client backend. Rows hidden from an unprivileged role show NULL backend_type
 * but keep datid, so a NULL type with a database is counted as a (hidden) client session.
 * Walsenders (replication connections, logical ones included) are not client backends and
 * take no max_connections slot: they stay out of the snapshot (non_client_backends counts
 * them), so no record here is a replication connection. A role's REPLICATION attribute says
 * nothing about a session: initdb's superuser has it, and its sessions are analysed like any
 * other (kill-idle protects them as superuser sessions).
 * Timestamps as epoch milliseconds; backend_start also as text
 * for exact identity re-checks. blocking_others: the pid appears in some lock waiter's
 * pg_blocking_pids() (computed only for rows waiting on a lock, which keeps it cheap). */
static const char activity_sql[] =
    "WITH blockers AS ("
    "  SELECT DISTINCT unnest(pg_blocking_pids(pid)) AS pid FROM pg_stat_activity"
    "  WHERE wait_event_type = 'Lock')"
    " SELECT a.pid,"
    " COALESCE(a.usename::text, ''), COALESCE(a.datname::text, ''),"
    " COALESCE(a.application_name, ''), COALESCE(host(a.client_addr), ''),"
    " a.state,"
    " (extract(epoch FROM a.backend_start) * 1000)::bigint,"
    " (extract(epoch FROM a.state_change) * 1000)::bigint,"
    " (extract(epoch FROM a.xact_start) * 1000)::bigint,"
    " (extract(epoch FROM a.query_start) * 1000)::bigint,"
    " a.backend_start::text,"
    " COALESCE(a.wait_event_type, ''),"
    " left(a.query, 250),"
    " COALESCE(r.rolsuper, false),"
    " a.pid = pg_backend_pid(),"
    " a.pid IN (SELECT pid FROM blockers),"
    " a.query IS DISTINCT FROM '<insufficient privilege>'"
    " FROM pg_stat_activity a LEFT JOIN pg_roles r ON r.oid = a.usesysid"
    " WHERE a.backend_type = 'client backend'"
    "    OR (a.backend_type IS NULL AND a.datid IS NOT NULL)"
    " ORDER BY a.backend_start";

/* Cumulative counters summed over the databases the filter selects ($1 NULL = all). The
 * session columns exist from PostgreSQL 14. */
static const char counters_sql_14[] =
    "SELECT sum(xact_commit)::bigint, sum(xact_rollback)::bigint, sum(sessions)::bigint,"
    " sum(sessions_abandoned)::bigint, sum(sessions_fatal)::bigint,"
    " sum(sessions_killed)::bigint, sum(session_time)::float8, sum(active_time)::float8,"
    " sum(idle_in_transaction_time)::float8"
    " FROM pg_stat_database WHERE datname IS NOT NULL AND ($1::text IS NULL OR datname LIKE $1)";
static const char counters_sql_12[] =
    "SELECT sum(xact_commit)::bigint, sum(xact_rollback)::bigint"
    " FROM pg_stat_database WHERE datname IS NOT NULL AND ($1::text IS NULL OR datname LIKE $1)";

static int64_t get_i64(const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        return 0;
    return strtoll(PQgetvalue(res, row, col), NULL, 10);
}

static double get_f64(const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        return 0.0;
    return strtod(PQgetvalue(res, row, col), NULL);
}

static bool get_bool(const PGresult *res, int row, int col)
{
    return !PQgetisnull(res, row, col) && PQgetvalue(res, row, col)[0] == 't';
}

/* Interns a column's text as a record name (cut at max - 1 bytes); false when memory ran
 * out. */
static bool get_name(struct snapshot *snap, const char **field, size_t max, const PGresult *res,
                     int row, int col)
{
    *field = snapshot_name(snap, PQgetisnull(res, row, col) ? "" : PQgetvalue(res, row, col), max);
    return *field != NULL;
}

static bool dup_text(char **field, size_t max, const PGresult *res, int row, int col)
{
    return snapshot_set_text(field, PQgetisnull(res, row, col) ? "" : PQgetvalue(res, row, col),
                             max);
}

/* NAMEDATALEN - 1: pg_stat_activity keeps at most this many bytes of a name. */
#define SERVER_NAME_MAX 63

/* Cuts at most SERVER_NAME_MAX bytes without splitting a UTF-8 character, as the server's
 * pg_mbcliplen does; returns the kept length. */
static size_t clip_name(const char *name, size_t len)
{
    if (len <= SERVER_NAME_MAX)
        return len;
    size_t n = SERVER_NAME_MAX;
    while (n > 0 && ((unsigned char)name[n] & 0xC0) == 0x80)
        n--;
    return n;
}

/* A name (its '*' suffix removed) in the server's form, then the '*' again; NULL when
 * memory ran out. The caller frees the result. */
static char *server_form(const char *name, bool application, int version_num)
{
    size_t len = strlen(name);
    bool prefix = len > 0 && name[len - 1] == '*';
    if (prefix)
        len--;
    char *out = malloc(len * 4 + 2);
    if (out == NULL)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!application || (c >= 32 && c <= 126))
            out[o++] = (char)c;
        else if (version_num >= 160000)
            o += (size_t)sprintf(out + o, "\\x%02x", c);
        else
            out[o++] = '?';
    }
    o = application ? (o > SERVER_NAME_MAX ? SERVER_NAME_MAX : o) : clip_name(out, o);
    if (prefix)
        out[o++] = '*';
    out[o] = '\0';
    return out;
}

static void adopt_name(char **name, bool application, int version_num)
{
    if (*name == NULL)
        return;
    char *form = server_form(*name, application, version_num);
    if (form == NULL)
        return;
    free(*name);
    *name = form;
}

void collector_adopt_names(PGconn *conn, struct manager_options *opts)
{
    int version = PQserverVersion(conn);
    adopt_name(&opts->filter_user, false, version);
    adopt_name(&opts->filter_database, false, version);
    adopt_name(&opts->filter_application, true, version);
    for (size_t i = 0; i < opts->n_exclude_users; i++)
        adopt_name(&opts->exclude_users[i], false, version);
    for (size_t i = 0; i < opts->n_exclude_apps; i++)
        adopt_name(&opts->exclude_apps[i], true, version);
}

static bool read_environment(PGconn *conn, struct snapshot *snap, struct inspect_error *err)
{
    PGresult *res = inspect_session_query(conn, environment_sql, 0, NULL, err);
    if (res == NULL)
        return false;
    if (PQntuples(res) != 1) {
        inspect_session_error_set(err, "query_failed", NULL, "the current role is not in pg_roles");
        PQclear(res);
        return false;
    }
    snap->taken_ms = get_i64(res, 0, 0);
    snap->server.version_num = PQserverVersion(conn);
    snap->server.in_recovery = get_bool(res, 0, 1);
    snap->server.is_superuser = get_bool(res, 0, 2);
    snap->server.can_read_all = get_bool(res, 0, 3);
    snap->server.can_signal = get_bool(res, 0, 4);
    snap->server.looks_like_supabase = get_bool(res, 0, 5);
    snap->capacity.max_connections = (int)get_i64(res, 0, 6);
    snap->capacity.superuser_reserved = (int)get_i64(res, 0, 7);
    snap->capacity.reserved = (int)get_i64(res, 0, 8);
    snap->capacity.usable = snap->capacity.max_connections - snap->capacity.superuser_reserved -
                            snap->capacity.reserved;
    if (snap->capacity.usable < 0)
        snap->capacity.usable = 0;
    snap->server.idle_in_xact_session_timeout_ms = get_i64(res, 0, 9);
    snap->server.idle_session_timeout_ms = get_i64(res, 0, 10);
    snap->server.statement_timeout_ms = get_i64(res, 0, 11);
    snap->server.non_client_backends = (int)get_i64(res, 0, 12);
    PQclear(res);
    return true;
}

static bool read_activity(PGconn *conn, struct snapshot *snap, struct inspect_error *err)
{
    PGresult *res = inspect_session_query(conn, activity_sql, 0, NULL, err);
    if (res == NULL)
        return false;
    int rows = PQntuples(res);
    for (int i = 0; i < rows; i++) {
        struct conn_record *rec = snapshot_add_conn(snap);
        if (rec == NULL) {
            inspect_session_error_set(err, "out_of_memory", NULL,
                                      "out of memory reading %d sessions", rows);
            PQclear(res);
            return false;
        }
        rec->id = get_i64(res, i, 0);
        rec->pid = (int32_t)rec->id;
        rec->state =
            snapshot_conn_state_from_text(PQgetisnull(res, i, 5) ? NULL : PQgetvalue(res, i, 5));
        rec->connected_ms = get_i64(res, i, 6);
        rec->state_change_ms = get_i64(res, i, 7);
        rec->xact_start_ms = get_i64(res, i, 8);
        rec->query_start_ms = get_i64(res, i, 9);
        if (!get_name(snap, &rec->user, SNAPSHOT_NAME_LEN, res, i, 1) ||
            !get_name(snap, &rec->database, SNAPSHOT_NAME_LEN, res, i, 2) ||
            !get_name(snap, &rec->application, SNAPSHOT_NAME_LEN, res, i, 3) ||
            !get_name(snap, &rec->client_addr, SNAPSHOT_ADDR_LEN, res, i, 4) ||
            !dup_text(&rec->backend_start_text, SNAPSHOT_TIMESTAMP_LEN, res, i, 10) ||
            !dup_text(&rec->wait_event_type, SNAPSHOT_NAME_LEN, res, i, 11) ||
            !dup_text(&rec->last_query, SNAPSHOT_QUERY_LEN, res, i, 12)) {
            inspect_session_error_set(err, "out_of_memory", NULL,
                                      "out of memory reading %d sessions", rows);
            PQclear(res);
            return false;
        }
        rec->is_superuser = get_bool(res, i, 13);
        rec->is_self = get_bool(res, i, 14);
        rec->blocking_others = get_bool(res, i, 15);
        rec->visible = get_bool(res, i, 16);
        rec->waiting_on_lock = strcmp(rec->wait_event_type, "Lock") == 0; /* set just above */
        rec->is_infrastructure =
            snapshot_is_infrastructure(SNAPSHOT_MODE_INSPECT, rec->user, rec->application);
        if (!rec->visible)
            snap->server.invisible_rows++;
    }
    PQclear(res);
    return true;
}

/* The --database filter as a LIKE pattern: literal except for a trailing '*' (a prefix
 * match, as options_match_filters treats it). */
static void database_like_pattern(const char *filter, char *out, size_t out_len)
{
    size_t o = 0;
    size_t n = strlen(filter);
    bool prefix = n > 0 && filter[n - 1] == '*';
    if (prefix)
        n--;
    for (size_t i = 0; i < n && o + 3 < out_len; i++) {
        if (filter[i] == '%' || filter[i] == '_' || filter[i] == '\\')
            out[o++] = '\\';
        out[o++] = filter[i];
    }
    if (prefix && o + 1 < out_len)
        out[o++] = '%';
    out[o] = '\0';
}

static bool read_counters(PGconn *conn, const struct manager_options *opts, struct snapshot *snap,
                          struct inspect_error *err)
{
    bool sessions = snap->server.version_num >= 140000;
    char pattern[2 * SNAPSHOT_NAME_LEN + 2];
    const char *params[1] = {NULL};
    if (opts->filter_database != NULL && opts->filter_database[0] != '\0') {
        database_like_pattern(opts->filter_database, pattern, sizeof(pattern));
        params[0] = pattern;
    }
    PGresult *res =
        inspect_session_query(conn, sessions ? counters_sql_14 : counters_sql_12, 1, params, err);
    if (res == NULL)
        return false;
    struct snapshot_counters *c = &snap->counters;
    if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0)) {
        c->has_xacts = true;
        c->xact_commit = get_i64(res, 0, 0);
        c->xact_rollback = get_i64(res, 0, 1);
        if (sessions) {
            c->has_sessions = true;
            c->sessions = get_i64(res, 0, 2);
            c->sessions_abandoned = get_i64(res, 0, 3);
            c->sessions_fatal = get_i64(res, 0, 4);
            c->sessions_killed = get_i64(res, 0, 5);
            c->session_time_ms = get_f64(res, 0, 6);
            c->active_time_ms = get_f64(res, 0, 7);
            c->idle_in_xact_time_ms = get_f64(res, 0, 8);
        }
    }
    PQclear(res);
    return true;
}

bool collector_take_snapshot(PGconn *conn, const struct manager_options *opts,
                             struct snapshot *snap, struct inspect_error *err)
{
    snapshot_init(snap, SNAPSHOT_MODE_INSPECT, 0);
    if (!read_environment(conn, snap, err) || !read_activity(conn, snap, err) ||
        !read_counters(conn, opts, snap, err)) {
        snapshot_free(snap);
        return false;
    }
    return true;
}

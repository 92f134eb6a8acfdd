/* libpq pipeline mode through pgwarden: PGW_CLIENTS threads, one connection each (default
 * settings), each iteration one pipeline: named prepared statements, a committed and a rolled
 * back transaction, a 2000-row result and a type round trip, all sent before one Sync, then
 * every result checked in order against values computed here. Prints "OK ..." and exits 0,
 * or prints what differed and exits 1.
 * Build: cc -o pipeline pipeline.c -I"$(pg_config --includedir)" -lpq -lpthread */
#include <libpq-fe.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *env(const char *k, const char *d)
{
    const char *v = getenv(k);
    return v && v[0] ? v : d;
}

static int clients, iters, rows, batch;
static const char *table;
static char conninfo[1024];
static long checks_total;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

struct client {
    int k;
    PGconn *conn; /* owned */
    long checks;
    char error[1024];
};

/* Records the first failure of a client; later checks of the same client are skipped. */
static int fail(struct client *c, int i, const char *fmt, ...)
{
    if (c->error[0])
        return 0;
    int n = snprintf(c->error, sizeof(c->error), "client %d iter %d: ", c->k, i);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->error + n, sizeof(c->error) - (size_t)n, fmt, ap);
    va_end(ap);
    return 0;
}

/* The next result of the pipeline must have status want; returns it (caller clears) or NULL. */
static PGresult *next(struct client *c, int i, ExecStatusType want, const char *what)
{
    PGresult *r = PQgetResult(c->conn);
    if (!r) {
        fail(c, i, "%s: no result", what);
        return NULL;
    }
    if (PQresultStatus(r) != want) {
        fail(c, i, "%s: %s (%s)", what, PQresStatus(PQresultStatus(r)), PQresultErrorMessage(r));
        PQclear(r);
        return NULL;
    }
    /* each query's results end with a NULL before the next query's */
    if (want != PGRES_PIPELINE_SYNC) {
        PGresult *end = PQgetResult(c->conn);
        if (end) {
            fail(c, i, "%s: more than one result", what);
            PQclear(end);
            PQclear(r);
            return NULL;
        }
    }
    c->checks++;
    return r;
}

static int expect_value(struct client *c, int i, PGresult *r, int row, int col, const char *want,
                        const char *what)
{
    c->checks++;
    if (!r)
        return 0;
    const char *got = PQgetvalue(r, row, col);
    if (strcmp(got, want) != 0)
        return fail(c, i, "%s: got '%s', want '%s'", what, got, want);
    return 1;
}

static void hex(const unsigned char *b, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t j = 0; j < n; j++) {
        out[2 * j] = digits[b[j] >> 4];
        out[2 * j + 1] = digits[b[j] & 15];
    }
    out[2 * n] = '\0';
}

static int send_params(struct client *c, int i, const char *stmt, int n, const char *const *vals)
{
    if (!PQsendQueryPrepared(c->conn, stmt, n, vals, NULL, NULL, 0))
        return fail(c, i, "send %s: %s", stmt, PQerrorMessage(c->conn));
    return 1;
}

static int send_sql(struct client *c, int i, const char *sql)
{
    if (!PQsendQueryParams(c->conn, sql, 0, NULL, NULL, NULL, NULL, 0))
        return fail(c, i, "send %s: %s", sql, PQerrorMessage(c->conn));
    return 1;
}

static void iteration(struct client *c, int i)
{
    int k = c->k, v = k * 1000 + i;
    char sv[32], sk[32], si[32], sr[32], tag[64], val[64], want[512];
    snprintf(sv, sizeof(sv), "%d", v);
    snprintf(sk, sizeof(sk), "%d", k);
    snprintf(si, sizeof(si), "%d", i);
    snprintf(sr, sizeof(sr), "%d", rows);
    snprintf(tag, sizeof(tag), "c%d", k);
    snprintf(val, sizeof(val), "libpq %d/%d", k, i);

    /* the type round trip's values, as text */
    char num[64], ts[80], ts_utc[64], epoch[64], f[64], text[128];
    unsigned char data[258];
    char bytea[2 + 2 * sizeof(data) + 1];
    snprintf(num, sizeof(num), "12345678901234567890.%02d%04d", k, i);
    time_t base = 1709210096 + k * 3600 + i; /* 2024-02-29 12:34:56 UTC + k h + i s */
    struct tm tm;
    gmtime_r(&base, &tm);
    strftime(ts_utc, sizeof(ts_utc), "%Y-%m-%d %H:%M:%S.789012", &tm);
    snprintf(ts, sizeof(ts), "%s+00", ts_utc);
    snprintf(epoch, sizeof(epoch), "%lld.789012", (long long)base);
    double fv = k + i / 3.0;
    snprintf(f, sizeof(f), "%.17g", fv);
    for (int b = 0; b < 256; b++)
        data[b] = (unsigned char)b;
    data[256] = (unsigned char)k;
    data[257] = (unsigned char)i;
    bytea[0] = '\\';
    bytea[1] = 'x';
    hex(data, sizeof(data), bytea + 2);
    snprintf(text, sizeof(text), "héllo wörld ✓ 日本語 🐘 ß€ c%d i%d", k, i);

    if (!PQenterPipelineMode(c->conn)) {
        fail(c, i, "enter pipeline mode: %s", PQerrorMessage(c->conn));
        return;
    }
    if (i == 0) {
        /* named statements, prepared once per connection inside the first pipeline */
        PQsendPrepare(c->conn, "doubled", "SELECT $1::int * 2, $2::text || '-' || $3::text", 3,
                      NULL);
        char sql[256];
        snprintf(sql, sizeof(sql), "INSERT INTO %s (client, iter, val) VALUES ($1, $2, $3)", table);
        PQsendPrepare(c->conn, "insert", sql, 3, NULL);
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s WHERE client = $1", table);
        PQsendPrepare(c->conn, "count", sql, 1, NULL);
        PQsendPrepare(c->conn, "plus", "SELECT $1::int + $2::int", 2, NULL);
    }
    const char *doubled[] = {sv, tag, sv};
    send_params(c, i, "doubled", 3, doubled);
    /* committed */
    send_sql(c, i, "BEGIN");
    const char *ins[] = {sk, si, val};
    send_params(c, i, "insert", 3, ins);
    const char *cnt[] = {sk};
    send_params(c, i, "count", 1, cnt);
    send_sql(c, i, "COMMIT");
    /* rolled back */
    char si_rb[32];
    snprintf(si_rb, sizeof(si_rb), "%d", 100000 + i);
    const char *ins_rb[] = {sk, si_rb, "rolled back"};
    send_sql(c, i, "BEGIN");
    send_params(c, i, "insert", 3, ins_rb);
    send_params(c, i, "count", 1, cnt);
    send_sql(c, i, "ROLLBACK");
    send_params(c, i, "count", 1, cnt);
    /* many rows */
    const char *many[] = {sv, sr};
    PQsendQueryParams(c->conn,
                      "SELECT g, g * $1::bigint, repeat('x', g % 50) FROM generate_series(1, $2) g",
                      2, NULL, many, NULL, NULL, 0);
    /* types, in text: the server's output is compared with strings made here */
    const char *types[] = {num, ts, bytea, text, f};
    PQsendQueryParams(c->conn,
                      "SELECT $1::numeric, $1::numeric * 3, extract(epoch FROM $2::timestamptz),"
                      " $3::bytea, length($3::bytea), $4::text, length($4::text),"
                      " octet_length($4::text), $5::float8, $5::float8 * 2,"
                      " (0.1::float8 + 0.2::float8)::text, $2::timestamptz AT TIME ZONE 'UTC'",
                      5, NULL, types, NULL, NULL, 0);
    /* a batch of the same named statement */
    char sj[64][16];
    for (int j = 0; j < batch && j < 64; j++) {
        snprintf(sj[j], sizeof(sj[j]), "%d", j);
        const char *plus[] = {sv, sj[j]};
        send_params(c, i, "plus", 2, plus);
    }
    if (!PQpipelineSync(c->conn)) {
        fail(c, i, "pipeline sync: %s", PQerrorMessage(c->conn));
        return;
    }

    PGresult *r;
    if (i == 0)
        for (int s = 0; s < 4; s++)
            PQclear(next(c, i, PGRES_COMMAND_OK, "prepare"));
    r = next(c, i, PGRES_TUPLES_OK, "doubled");
    snprintf(want, sizeof(want), "%d", 2 * v);
    expect_value(c, i, r, 0, 0, want, "doubled");
    snprintf(want, sizeof(want), "c%d-%d", k, v);
    expect_value(c, i, r, 0, 1, want, "tag");
    PQclear(r);
    PQclear(next(c, i, PGRES_COMMAND_OK, "BEGIN"));
    PQclear(next(c, i, PGRES_COMMAND_OK, "insert"));
    r = next(c, i, PGRES_TUPLES_OK, "count");
    snprintf(want, sizeof(want), "%d", i + 1);
    expect_value(c, i, r, 0, 0, want, "count in transaction");
    PQclear(r);
    PQclear(next(c, i, PGRES_COMMAND_OK, "COMMIT"));
    PQclear(next(c, i, PGRES_COMMAND_OK, "BEGIN"));
    PQclear(next(c, i, PGRES_COMMAND_OK, "insert (rollback)"));
    r = next(c, i, PGRES_TUPLES_OK, "count");
    snprintf(want, sizeof(want), "%d", i + 2);
    expect_value(c, i, r, 0, 0, want, "count before rollback");
    PQclear(r);
    PQclear(next(c, i, PGRES_COMMAND_OK, "ROLLBACK"));
    r = next(c, i, PGRES_TUPLES_OK, "count");
    snprintf(want, sizeof(want), "%d", i + 1);
    expect_value(c, i, r, 0, 0, want, "count after rollback");
    PQclear(r);

    r = next(c, i, PGRES_TUPLES_OK, "many rows");
    if (r) {
        c->checks++;
        if (PQntuples(r) != rows)
            fail(c, i, "many rows: %d rows, want %d", PQntuples(r), rows);
        for (int n = 1; n <= PQntuples(r) && !c->error[0]; n++) {
            char g[32], m[32];
            snprintf(g, sizeof(g), "%d", n);
            snprintf(m, sizeof(m), "%lld", (long long)n * v);
            if (strcmp(PQgetvalue(r, n - 1, 0), g) || strcmp(PQgetvalue(r, n - 1, 1), m) ||
                (int)strlen(PQgetvalue(r, n - 1, 2)) != n % 50)
                fail(c, i, "row %d: got %s,%s", n, PQgetvalue(r, n - 1, 0),
                     PQgetvalue(r, n - 1, 1));
        }
        PQclear(r);
    }

    r = next(c, i, PGRES_TUPLES_OK, "types");
    expect_value(c, i, r, 0, 0, num, "numeric");
    /* numeric * 3: 12345678901234567890 * 3 = 37037036703703703670, and the six decimals
     * (k * 10000 + i) times 3 stay below 1000000 for k < 33, so nothing carries */
    snprintf(want, sizeof(want), "37037036703703703670.%06d", (k * 10000 + i) * 3);
    expect_value(c, i, r, 0, 1, want, "numeric * 3");
    expect_value(c, i, r, 0, 2, epoch, "timestamptz (epoch)");
    expect_value(c, i, r, 0, 3, bytea, "bytea");
    expect_value(c, i, r, 0, 4, "258", "length(bytea)");
    expect_value(c, i, r, 0, 5, text, "text");
    {
        int chars = 0;
        for (const unsigned char *p = (const unsigned char *)text; *p; p++)
            chars += (*p & 0xC0) != 0x80;
        snprintf(want, sizeof(want), "%d", chars);
        expect_value(c, i, r, 0, 6, want, "length(text)");
        snprintf(want, sizeof(want), "%zu", strlen(text));
        expect_value(c, i, r, 0, 7, want, "octet_length(text)");
    }
    if (r) {
        c->checks += 2;
        double got = strtod(PQgetvalue(r, 0, 8), NULL), got2 = strtod(PQgetvalue(r, 0, 9), NULL);
        if (got != fv)
            fail(c, i, "float8: got %s, want %.17g", PQgetvalue(r, 0, 8), fv);
        if (got2 != fv * 2)
            fail(c, i, "float8 * 2: got %s, want %.17g", PQgetvalue(r, 0, 9), fv * 2);
    }
    expect_value(c, i, r, 0, 10, "0.30000000000000004", "(0.1 + 0.2)::text");
    expect_value(c, i, r, 0, 11, ts_utc, "timestamptz at time zone UTC");
    PQclear(r);

    for (int j = 0; j < batch && j < 64; j++) {
        r = next(c, i, PGRES_TUPLES_OK, "plus");
        snprintf(want, sizeof(want), "%d", v + j);
        expect_value(c, i, r, 0, 0, want, "pipelined plus");
        PQclear(r);
    }
    PQclear(next(c, i, PGRES_PIPELINE_SYNC, "sync"));

    /* An error in a pipeline: the queries after it are aborted until the Sync, and the
     * next Sync's queries run as usual. */
    char s1[16] = "1", s2[16] = "2", s3[16] = "3";
    const char *plus1[] = {sv, s1}, *plus2[] = {sv, s2}, *plus3[] = {sv, s3}, *zero[] = {"0"};
    send_params(c, i, "plus", 2, plus1);
    PQsendQueryParams(c->conn, "SELECT 10 / $1::int", 1, NULL, zero, NULL, NULL, 0);
    send_params(c, i, "plus", 2, plus2);
    PQpipelineSync(c->conn);
    send_params(c, i, "plus", 2, plus3);
    PQpipelineSync(c->conn);
    r = next(c, i, PGRES_TUPLES_OK, "plus before the error");
    snprintf(want, sizeof(want), "%d", v + 1);
    expect_value(c, i, r, 0, 0, want, "plus before the error");
    PQclear(r);
    r = next(c, i, PGRES_FATAL_ERROR, "division by zero");
    c->checks++;
    if (r) {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (!state || strcmp(state, "22012") != 0)
            fail(c, i, "division by zero: %s", PQresultErrorMessage(r));
    }
    PQclear(r);
    PQclear(next(c, i, PGRES_PIPELINE_ABORTED, "plus after the error"));
    PQclear(next(c, i, PGRES_PIPELINE_SYNC, "sync after the error"));
    r = next(c, i, PGRES_TUPLES_OK, "plus after the sync");
    snprintf(want, sizeof(want), "%d", v + 3);
    expect_value(c, i, r, 0, 0, want, "plus after the sync");
    PQclear(r);
    PQclear(next(c, i, PGRES_PIPELINE_SYNC, "second sync"));
    if (!PQexitPipelineMode(c->conn))
        fail(c, i, "exit pipeline mode: %s", PQerrorMessage(c->conn));
}

static void *run(void *arg)
{
    struct client *c = arg;
    c->conn = PQconnectdb(conninfo);
    if (PQstatus(c->conn) != CONNECTION_OK) {
        fail(c, -1, "connect: %s", PQerrorMessage(c->conn));
        return NULL;
    }
    for (int i = 0; i < iters && !c->error[0]; i++)
        iteration(c, i);
    PQfinish(c->conn);
    pthread_mutex_lock(&lock);
    checks_total += c->checks;
    pthread_mutex_unlock(&lock);
    return NULL;
}

int main(void)
{
    clients = atoi(env("PGW_CLIENTS", "12"));
    iters = atoi(env("PGW_ITERS", "12"));
    rows = atoi(env("PGW_ROWS", "2000"));
    batch = atoi(env("PGW_BATCH", "20"));
    table = env("PGW_TABLE", "drv_libpq");
    snprintf(conninfo, sizeof(conninfo),
             "host=%s port=%s user=%s password=%s dbname=%s connect_timeout=10",
             env("PGW_HOST", "127.0.0.1"), env("PGW_PORT", "6432"), env("PGW_USER", "app_user"),
             env("PGW_PASSWORD", ""), env("PGW_DB", "appdb"));
    struct client *cs = calloc((size_t)clients, sizeof(*cs));
    pthread_t *threads = calloc((size_t)clients, sizeof(*threads));
    if (!cs || !threads)
        return 2;
    for (int n = 0; n < clients; n++) {
        cs[n].k = n + 1;
        pthread_create(&threads[n], NULL, run, &cs[n]);
    }
    int failed = 0;
    for (int n = 0; n < clients; n++) {
        pthread_join(threads[n], NULL);
        if (cs[n].error[0]) {
            printf("FAIL %s\n", cs[n].error);
            failed = 1;
        }
    }
    free(cs);
    free(threads);
    if (failed)
        return 1;
    printf("OK libpq %d pipeline clients=%d iters=%d checks=%ld\n", PQlibVersion(), clients, iters,
           checks_total);
    return 0;
}

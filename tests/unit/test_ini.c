/* Unit tests for the pgbouncer.ini tokenizer (syntax, file:line through %include, loops, depth,
 * missing files, limits, FIFOs) and for the libpq-style connection string parser. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "config/ini.h"

/* Collects entries as "section|key|value|file:line\n" lines. */
struct collected {
    char text[8192];
    int count;
    int reject_at; /* 1-based entry number to reject, 0 = never */
};

static bool collect(void *ctx, const char *section, const char *key, const char *value,
                    const char *file, int line, char *err, size_t err_len)
{
    struct collected *c = ctx;
    size_t n = strlen(c->text);
    const char *base = strrchr(file, '/');

    c->count++;
    if (c->reject_at == c->count) {
        snprintf(err, err_len, "bad value for %s", key);
        return false;
    }
    snprintf(c->text + n, sizeof(c->text) - n, "%s|%s|%s|%s:%d\n", section, key, value,
             base != NULL ? base + 1 : file, line);
    return true;
}

static char tmpdir[64];

static void write_file(const char *rel, const char *content)
{
    char path[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", tmpdir, rel);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
}

static int setup_dir(void **state)
{
    (void)state;
    char sub[128];

    snprintf(tmpdir, sizeof(tmpdir), "/tmp/pgwarden-ini-XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    snprintf(sub, sizeof(sub), "%s/sub", tmpdir);
    return mkdir(sub, 0700);
}

static int teardown_dir(void **state)
{
    (void)state;
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static bool parse_path(const char *rel, struct collected *c, char *err, size_t err_len)
{
    char path[512];

    snprintf(path, sizeof(path), "%s/%s", tmpdir, rel);
    return ini_parse_file(path, collect, c, err, err_len);
}

/* Error text with the temp dir replaced by "T", for stable comparisons. */
static const char *rel_err(const char *err)
{
    static char buf[1024];
    const char *p = strstr(err, tmpdir);

    if (p == NULL)
        return err;
    snprintf(buf, sizeof(buf), "%.*sT%s", (int)(p - err), err, p + strlen(tmpdir));
    /* Replace the second occurrence too (e.g. in "cannot open included file"). */
    p = strstr(buf, tmpdir);
    if (p != NULL) {
        char tail[1024];
        snprintf(tail, sizeof(tail), "%s", p + strlen(tmpdir));
        snprintf(buf + (p - buf), sizeof(buf) - (size_t)(p - buf), "T%s", tail);
    }
    return buf;
}

static void test_syntax(void **state)
{
    (void)state;
    struct collected c = {0};
    char err[256];
    const char *text = "; comment\n"
                       "# comment\n"
                       "\n"
                       "[databases]\n"
                       "mydb = host=127.0.0.1 port=5432 dbname=x\n"
                       "  quoted\t=\t\"keep the quotes\"  \r\n"
                       "* = host=/tmp\n"
                       "[  pgbouncer ]   \n"
                       "listen_port=6432\n"
                       "empty =\n"
                       "inline = a ; b # c\n"
                       "   ;indented comment\n"
                       "eq = a=b=c\n"
                       "[users]\n"
                       "user.name-1 = pool_mode=session";

    assert_true(ini_parse_string(text, "pgbouncer.ini", collect, &c, err, sizeof(err)));
    assert_string_equal(c.text, "databases|mydb|host=127.0.0.1 port=5432 dbname=x|pgbouncer.ini:5\n"
                                "databases|quoted|\"keep the quotes\"|pgbouncer.ini:6\n"
                                "databases|*|host=/tmp|pgbouncer.ini:7\n"
                                "pgbouncer|listen_port|6432|pgbouncer.ini:9\n"
                                "pgbouncer|empty||pgbouncer.ini:10\n"
                                "pgbouncer|inline|a ; b # c|pgbouncer.ini:11\n"
                                "pgbouncer|eq|a=b=c|pgbouncer.ini:13\n"
                                "users|user.name-1|pool_mode=session|pgbouncer.ini:15\n");
}

static void expect_string_error(const char *text, const char *expected)
{
    struct collected c = {0};
    char err[256] = "";

    assert_false(ini_parse_string(text, "x.ini", collect, &c, err, sizeof(err)));
    if (strcmp(err, expected) != 0)
        fail_msg("error \"%s\", expected \"%s\"", err, expected);
}

static void test_syntax_errors(void **state)
{
    (void)state;
    expect_string_error("key = v\n", "x.ini:1: key outside of any [section]");
    expect_string_error("[s]\nsecretpassword\n",
                        "x.ini:2: syntax error (expected key = value, [section], %include or a "
                        "comment)");
    expect_string_error("[s]\n\n = v\n", "x.ini:3: missing key before '='");
    expect_string_error("[s]\na b = v\n", "x.ini:2: a key cannot contain whitespace");
    expect_string_error("[s\n", "x.ini:1: malformed section header (expected [name])");
    expect_string_error("[s] x\n", "x.ini:1: malformed section header (expected [name])");
    expect_string_error("[s]]\n", "x.ini:1: malformed section header (expected [name])");
    expect_string_error("[ ]\n", "x.ini:1: invalid section name");
    expect_string_error("[a[b]\n", "x.ini:1: invalid section name");
    expect_string_error("[s]\n%includefoo\n",
                        "x.ini:2: unknown directive (only %include is known)");
    expect_string_error("[s]\n%include   \n", "x.ini:2: %include without a file name");
    expect_string_error("[s]\n%include\n", "x.ini:2: %include without a file name");
}

static void test_callback_error(void **state)
{
    (void)state;
    struct collected c = {.reject_at = 2};
    char err[256];

    assert_false(
        ini_parse_string("[s]\na = 1\n\nb = 2\nc = 3\n", "x.ini", collect, &c, err, sizeof(err)));
    assert_string_equal(err, "x.ini:4: bad value for b");
    assert_int_equal(c.count, 2);
}

static void test_long_line(void **state)
{
    (void)state;
    size_t n = INI_MAX_LINE_LEN + 16;
    char *text = malloc(n + 1);
    struct collected c = {0};
    char err[256];

    assert_non_null(text);
    memcpy(text, "[s]\nk = ", 8);
    memset(text + 8, 'v', n - 8);
    text[n] = '\0';
    assert_false(ini_parse_string(text, "x.ini", collect, &c, err, sizeof(err)));
    assert_string_equal(err, "x.ini:2: line too long (more than 65536 bytes)");
    /* Exactly at the limit is fine. */
    text[4 + INI_MAX_LINE_LEN] = '\0';
    assert_true(ini_parse_string(text, "x.ini", collect, &c, err, sizeof(err)));
    free(text);
}

static void test_includes(void **state)
{
    (void)state;
    struct collected c = {0};
    char err[512];

    write_file("main.ini", "[databases]\n"
                           "a = host=a\n"
                           "%include sub/inc.ini\n"
                           "b = host=b\n"
                           "[pgbouncer]\n"
                           "%include   other.ini  \n"
                           "%include other.ini\n");
    /* Relative to sub/, and the section carries over from the including file. */
    write_file("sub/inc.ini", "; included\n"
                              "c = host=c\n"
                              "%include ../other.ini\n"
                              "[users]\n"
                              "u = pool_mode=session\n");
    write_file("other.ini", "\n\nk = v\n");
    assert_true(parse_path("main.ini", &c, err, sizeof(err)));
    assert_string_equal(c.text, "databases|a|host=a|main.ini:2\n"
                                "databases|c|host=c|inc.ini:2\n"
                                "databases|k|v|other.ini:3\n"
                                "users|u|pool_mode=session|inc.ini:5\n"
                                "users|b|host=b|main.ini:4\n"
                                "pgbouncer|k|v|other.ini:3\n"
                                "pgbouncer|k|v|other.ini:3\n");
}

static void test_include_errors(void **state)
{
    (void)state;
    struct collected c = {0};
    char err[1024];

    /* Missing include: the including file and line. */
    write_file("missing.ini", "[s]\na = 1\n%include nothere.ini\n");
    assert_false(parse_path("missing.ini", &c, err, sizeof(err)));
    assert_string_equal(rel_err(err), "T/missing.ini:3: cannot open included file "
                                      "\"T/nothere.ini\": No such file or directory");

    /* Loop a -> b -> a, and a self-include. */
    write_file("loop_a.ini", "[s]\n%include loop_b.ini\n");
    write_file("loop_b.ini", "x = 1\n\n%include loop_a.ini\n");
    memset(&c, 0, sizeof(c));
    assert_false(parse_path("loop_a.ini", &c, err, sizeof(err)));
    assert_string_equal(rel_err(err), "T/loop_b.ini:3: %include loop: \"T/loop_a.ini\" is "
                                      "already being read");
    write_file("self.ini", "[s]\n%include ./self.ini\n");
    assert_false(parse_path("self.ini", &c, err, sizeof(err)));
    assert_non_null(strstr(err, "self.ini:2: %include loop"));

    /* An error inside an included file is reported with that file's name and line. */
    write_file("bad_inc.ini", "[s]\n%include sub/bad.ini\n");
    write_file("sub/bad.ini", "ok = 1\n\n\nnot a pair\n");
    assert_false(parse_path("bad_inc.ini", &c, err, sizeof(err)));
    assert_non_null(strstr(err, "/sub/bad.ini:4: syntax error"));

    /* Including a directory. */
    write_file("dir.ini", "[s]\n%include sub\n");
    assert_false(parse_path("dir.ini", &c, err, sizeof(err)));
    assert_non_null(strstr(err, "dir.ini:2: cannot include: "));
    assert_non_null(strstr(err, "not a regular file"));

    /* Missing top-level file. */
    assert_false(ini_parse_file("/nonexistent/pgbouncer.ini", collect, &c, err, sizeof(err)));
    assert_string_equal(err, "/nonexistent/pgbouncer.ini: cannot open: No such file or directory");
}

static void test_include_depth(void **state)
{
    (void)state;
    struct collected c = {0};
    char err[1024], name[32], content[64];

    /* d0 includes d1 ... includes d11: 10 levels of nesting are allowed, the 11th is not. */
    for (int i = 0; i <= 11; i++) {
        snprintf(name, sizeof(name), "d%d.ini", i);
        if (i < 11)
            snprintf(content, sizeof(content), "%s[s]\nk%d = v\n%%include d%d.ini\n",
                     i == 0 ? "" : "", i, i + 1);
        else
            snprintf(content, sizeof(content), "[s]\nk11 = v\n");
        write_file(name, content);
    }
    assert_false(parse_path("d0.ini", &c, err, sizeof(err)));
    assert_non_null(strstr(err, "/d10.ini:3: %include nested too deeply (more than 10 levels)"));
    memset(&c, 0, sizeof(c));
    assert_true(parse_path("d1.ini", &c, err, sizeof(err)));
    assert_int_equal(c.count, 11);
}

static void test_string_include_relative_to_name(void **state)
{
    (void)state;
    struct collected c = {0};
    char err[512], name[256];

    write_file("sub/s.ini", "k = from-sub\n");
    snprintf(name, sizeof(name), "%s/virtual.ini", tmpdir);
    assert_true(ini_parse_string("[x]\n%include sub/s.ini\n", name, collect, &c, err, sizeof(err)));
    assert_string_equal(c.text, "x|k|from-sub|s.ini:1\n");
}

static void test_read_file_limits(void **state)
{
    (void)state;
    char path[512], err[512], *buf;
    size_t len;

    write_file("ten.txt", "0123456789");
    snprintf(path, sizeof(path), "%s/ten.txt", tmpdir);
    assert_true(ini_read_file(path, 10, &buf, &len, err, sizeof(err)));
    assert_int_equal(len, 10);
    assert_string_equal(buf, "0123456789");
    free(buf);
    assert_false(ini_read_file(path, 9, &buf, &len, err, sizeof(err)));
    assert_non_null(strstr(err, "file too large (more than 9 bytes)"));
    assert_null(buf);

    /* A NUL byte inside a config file. */
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fwrite("[s]\na = 1\nb = \0x\n", 1, 17, f);
    fclose(f);
    struct collected c = {0};
    assert_false(ini_parse_file(path, collect, &c, err, sizeof(err)));
    assert_non_null(strstr(err, "ten.txt:3: NUL byte in line"));
}

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "test_ini: opening a FIFO blocked (no O_NONBLOCK)\n";
    ssize_t n = write(STDERR_FILENO, msg, sizeof(msg) - 1);
    (void)n;
    _exit(1);
}

/* A FIFO named as a config file or an include must be refused at once: a blocking open()
 * waits for a writer forever and hung a reload. The alarm turns such a hang into a failure. */
static void test_fifo_refused(void **state)
{
    (void)state;
    char fifo[512], err[1024], *buf = NULL;
    size_t len = 0;
    struct collected c = {0};

    snprintf(fifo, sizeof(fifo), "%s/sub/config.fifo", tmpdir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    signal(SIGALRM, on_alarm);
    alarm(10);

    assert_false(ini_read_file(fifo, 1024, &buf, &len, err, sizeof(err)));
    assert_null(buf);
    assert_string_equal(rel_err(err), "T/sub/config.fifo: not a regular file (a FIFO)");

    assert_false(ini_parse_file(fifo, collect, &c, err, sizeof(err)));
    assert_string_equal(rel_err(err), "T/sub/config.fifo: not a regular file (a FIFO)");

    write_file("fifo_inc.ini", "[s]\na = 1\n%include sub/config.fifo\n");
    memset(&c, 0, sizeof(c));
    assert_false(parse_path("fifo_inc.ini", &c, err, sizeof(err)));
    assert_string_equal(rel_err(err), "T/fifo_inc.ini:3: cannot include: T/sub/config.fifo: "
                                      "not a regular file (a FIFO)");

    alarm(0);
    signal(SIGALRM, SIG_DFL);
    unlink(fifo);
}

/* ---- connection strings ---- */

struct pairs {
    char text[1024];
    int stop_at;
    int count;
};

static bool collect_pair(void *ctx, const char *key, const char *value, char *err, size_t err_len)
{
    struct pairs *p = ctx;
    size_t n = strlen(p->text);

    if (++p->count == p->stop_at) {
        snprintf(err, err_len, "unknown parameter %s", key);
        return false;
    }
    snprintf(p->text + n, sizeof(p->text) - n, "[%s]=[%s]", key, value);
    return true;
}

static const char *connstr(const char *text)
{
    static struct pairs p;
    char err[256];

    memset(&p, 0, sizeof(p));
    if (!ini_parse_connstr(text, collect_pair, &p, err, sizeof(err)))
        fail_msg("unexpected error %s", err);
    return p.text;
}

static void test_connstr(void **state)
{
    (void)state;
    assert_string_equal(connstr("host=127.0.0.1 port=5432 dbname=x"),
                        "[host]=[127.0.0.1][port]=[5432][dbname]=[x]");
    assert_string_equal(connstr(""), "");
    assert_string_equal(connstr("   \t "), "");
    assert_string_equal(connstr("  host = h  user\t=\tu "), "[host]=[h][user]=[u]");
    assert_string_equal(connstr("application_name='my app' sslmode=disable"),
                        "[application_name]=[my app][sslmode]=[disable]");
}

static void test_connstr_quoting(void **state)
{
    (void)state;
    assert_string_equal(connstr("a='x y' b='' c='\\'q\\'' d='back\\\\slash'"),
                        "[a]=[x y][b]=[][c]=['q'][d]=[back\\slash]");
    assert_string_equal(connstr("a=x\\ y b=\\'"), "[a]=[x y][b]=[']");
    assert_string_equal(connstr("a='x'b=1"), "[a]=[x][b]=[1]");
    assert_string_equal(connstr("a=x=y"), "[a]=[x=y]");
    /* As in libpq, a value starts after the blanks that follow '=': "host= port=1" gives
     * host the value "port=1". */
    assert_string_equal(connstr("host= port=1"), "[host]=[port=1]");
    assert_string_equal(connstr("a="), "[a]=[]");
    assert_string_equal(connstr("a=trailing\\"), "[a]=[trailing]");
}

static void expect_connstr_error(const char *text, const char *expected)
{
    struct pairs p = {0};
    char err[256] = "";

    assert_false(ini_parse_connstr(text, collect_pair, &p, err, sizeof(err)));
    if (strcmp(err, expected) != 0)
        fail_msg("error \"%s\", expected \"%s\"", err, expected);
}

static void test_connstr_errors(void **state)
{
    (void)state;
    expect_connstr_error("host", "missing \"=\" after \"host\" in connection string");
    expect_connstr_error("host=a port", "missing \"=\" after \"port\" in connection string");
    /* A stray word that may be a password is not echoed. */
    expect_connstr_error("host=a hunter2!", "missing \"=\" after a word in connection string");
    /* '' is not an escaped quote in libpq syntax (use \'). */
    expect_connstr_error("password='it''s'", "missing \"=\" after a word in connection string");
    expect_connstr_error("=x", "empty key before \"=\" in connection string");
    expect_connstr_error("password='secret",
                         "unterminated quoted value for \"password\" in connection string");
    expect_connstr_error("password='secret\\'", "unterminated quoted value for \"password\" in "
                                                "connection string");

    struct pairs p = {.stop_at = 2};
    char err[256];
    assert_false(ini_parse_connstr("a=1 b=2 c=3", collect_pair, &p, err, sizeof(err)));
    assert_string_equal(err, "unknown parameter b");
}

/* A relative name is looked for next to the referrer first, then (PgBouncer's rule) in the
 * working directory; absolute names and long results are handled. */
static void test_relative_path(void **state)
{
    (void)state;
    char out[512], referrer[256], cwd[512], expect[512];
    snprintf(referrer, sizeof(referrer), "%s/main.ini", tmpdir);
    write_file("beside.txt", "x");
    write_file("sub/in-cwd.txt", "x");
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(chdir(tmpdir), 0);
    assert_int_equal(chdir("sub"), 0);

    assert_true(ini_relative_path(referrer, "beside.txt", out, sizeof(out)));
    snprintf(expect, sizeof(expect), "%s/beside.txt", tmpdir);
    assert_string_equal(out, expect);
    /* Only in the working directory: that one (PgBouncer's configurations keep working). */
    assert_true(ini_relative_path(referrer, "in-cwd.txt", out, sizeof(out)));
    assert_string_equal(out, "in-cwd.txt");
    /* Nowhere: the referrer's directory, so the error names where it was looked for. */
    assert_true(ini_relative_path(referrer, "nowhere.txt", out, sizeof(out)));
    snprintf(expect, sizeof(expect), "%s/nowhere.txt", tmpdir);
    assert_string_equal(out, expect);
    assert_true(ini_relative_path(referrer, "/etc/hosts", out, sizeof(out)));
    assert_string_equal(out, "/etc/hosts");
    assert_true(ini_relative_path("main.ini", "x.txt", out, sizeof(out)));
    assert_string_equal(out, "x.txt");
    assert_true(ini_relative_path("/main.ini", "x.txt", out, sizeof(out)));
    assert_string_equal(out, "/x.txt");
    assert_false(ini_relative_path(referrer, "beside.txt", out, 8));

    assert_int_equal(chdir(cwd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_syntax),
        cmocka_unit_test(test_syntax_errors),
        cmocka_unit_test(test_callback_error),
        cmocka_unit_test(test_long_line),
        cmocka_unit_test(test_includes),
        cmocka_unit_test(test_include_errors),
        cmocka_unit_test(test_include_depth),
        cmocka_unit_test(test_string_include_relative_to_name),
        cmocka_unit_test(test_relative_path),
        cmocka_unit_test(test_read_file_limits),
        cmocka_unit_test(test_fifo_refused),
        cmocka_unit_test(test_connstr),
        cmocka_unit_test(test_connstr_quoting),
        cmocka_unit_test(test_connstr_errors),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}

/* Unit tests for log lines: ordinary lines are written unchanged, control bytes from
 * client-supplied strings are escaped so that no message can forge or split a line, in the
 * text and in the JSON format; the syslog sink (through its seam) gets PgBouncer's levels,
 * ident and facility. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "common/log.h"

static FILE *out;
static char captured[65536];

static int setup(void **state)
{
    (void)state;
    out = tmpfile();
    return out == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    log_configure(LOG_LEVEL_INFO, LOG_FORMAT_TEXT, NULL);
    fclose(out);
    return 0;
}

static void start(enum log_format format)
{
    log_configure(LOG_LEVEL_INFO, format, out);
    assert_int_equal(ftruncate(fileno(out), 0), 0);
    rewind(out);
}

/* Everything written since start(), NUL-terminated. */
static const char *written(void)
{
    size_t n;

    fflush(out);
    rewind(out);
    n = fread(captured, 1, sizeof(captured) - 1, out);
    captured[n] = '\0';
    return captured;
}

/* The text line after its timestamp ("<ts> " is dropped), checking that there is exactly one
 * line and no control byte but its final newline. */
static const char *one_text_line(void)
{
    const char *text = written();
    const char *space = strchr(text, ' ');
    size_t len = strlen(text);

    assert_true(len > 0 && text[len - 1] == '\n');
    for (size_t i = 0; i + 1 < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c < 0x20 || c == 0x7f)
            fail_msg("control byte 0x%02x at offset %zu of %s", c, i, text);
    }
    assert_non_null(space);
    return space + 1;
}

static void test_plain_line_unchanged(void **state)
{
    (void)state;
    start(LOG_FORMAT_TEXT);
    log_info("pool", "client %d 127.0.0.1:5000 login db=%s user=%s", 7, "appdb", "app_user");
    assert_string_equal(one_text_line(),
                        "info pool: client 7 127.0.0.1:5000 login db=appdb user=app_user\n");

    /* Backslashes, quotes and UTF-8 are no control bytes: they stay as they are. */
    start(LOG_FORMAT_TEXT);
    log_warning("config", "path C:\\dir\\n \"quoted\" caf\xc3\xa9 100%%");
    assert_string_equal(one_text_line(),
                        "warning config: path C:\\dir\\n \"quoted\" caf\xc3\xa9 100%\n");
}

static void test_control_bytes_escaped(void **state)
{
    (void)state;
    start(LOG_FORMAT_TEXT);
    log_info("pool", "password authentication failed for user \"%s\"",
             "evil\n2024-01-01T00:00:00.000Z info pool: forged\r\tx\x1b[31m\x01\x7f");
    assert_string_equal(one_text_line(),
                        "info pool: password authentication failed for user \"evil\\n"
                        "2024-01-01T00:00:00.000Z info pool: forged\\r\\tx\\x1b[31m\\x01\\x7f\"\n");

    /* The component is escaped too. */
    start(LOG_FORMAT_TEXT);
    log_error("a\nb", "m");
    assert_string_equal(one_text_line(), "error a\\nb: m\n");
}

/* A message made only of control bytes (the longest escaped output) is never cut inside an
 * escape and stays on one line. */
static void test_long_message(void **state)
{
    (void)state;
    char big[3000];
    const char *line;
    size_t n_escapes = 0;

    memset(big, '\x1b', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    start(LOG_FORMAT_TEXT);
    log_info("pool", "%s", big);
    line = one_text_line();
    assert_true(strncmp(line, "info pool: \\x1b", 15) == 0);
    for (const char *p = line + strlen("info pool: "); *p != '\n'; p += 4) {
        assert_true(strncmp(p, "\\x1b", 4) == 0);
        n_escapes++;
    }
    assert_int_equal(n_escapes, 2047); /* the message is cut at 2047 bytes before escaping */
}

static void test_json_escapes(void **state)
{
    (void)state;
    const char *raw = "evil\n{\"forged\":1}\r\t\x1b\x01\x7f end \\ \"q\"";
    const char *text;
    cJSON *line, *msg;
    size_t len;

    start(LOG_FORMAT_JSON);
    log_info("pool", "user=%s", raw);
    text = written();
    len = strlen(text);
    assert_true(len > 0 && text[len - 1] == '\n');
    for (size_t i = 0; i + 1 < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c < 0x20 || c == 0x7f)
            fail_msg("control byte 0x%02x at offset %zu of %s", c, i, text);
    }
    assert_non_null(strstr(text, "\\u007f"));
    line = cJSON_Parse(text);
    assert_non_null(line);
    msg = cJSON_GetObjectItemCaseSensitive(line, "msg");
    assert_true(cJSON_IsString(msg));
    assert_true(strncmp(msg->valuestring, "user=", 5) == 0);
    assert_string_equal(msg->valuestring + 5, raw); /* the escapes decode to the original */
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(line, "level")->valuestring, "info");
    cJSON_Delete(line);

    /* A line without DEL is cJSON's output as it is. */
    start(LOG_FORMAT_JSON);
    log_info("pool", "plain");
    text = written();
    assert_non_null(strstr(text, "\"component\":\"pool\",\"msg\":\"plain\"}\n"));
}

/* ---- syslog, through the seam ---- */

static struct {
    int opens, closes;
    char ident[64];
    int option, facility;
    int n;
    int priority[16];
    char line[16][512];
} sent;

static void fake_open(const char *ident, int option, int facility)
{
    sent.opens++;
    snprintf(sent.ident, sizeof(sent.ident), "%s", ident);
    sent.option = option;
    sent.facility = facility;
}

static void fake_send(int priority, const char *line)
{
    if (sent.n < 16) {
        sent.priority[sent.n] = priority;
        snprintf(sent.line[sent.n], sizeof(sent.line[0]), "%s", line);
    }
    sent.n++;
}

static void fake_close(void)
{
    sent.closes++;
}

static const struct log_syslog_ops fake_ops = {fake_open, fake_send, fake_close};

static void test_syslog_levels_and_lines(void **state)
{
    (void)state;
    memset(&sent, 0, sizeof(sent));
    log_set_syslog_ops(&fake_ops);
    log_configure_syslog(true, "pgbouncer", "local3");
    start(LOG_FORMAT_JSON);
    log_configure(LOG_LEVEL_TRACE, LOG_FORMAT_JSON, out);
    assert_int_equal(sent.opens, 0); /* opened with the first line */
    log_error("pool", "e %d", 1);
    log_warning("config", "w");
    log_info("serve", "i\nforged");
    log_debug("pool", "not for syslog");
    log_trace("pool", "nor this");
    assert_int_equal(sent.opens, 1);
    assert_string_equal(sent.ident, "pgbouncer");
    assert_int_equal(sent.facility, LOG_LOCAL3);
    assert_true(sent.option & LOG_PID);
    assert_int_equal(sent.n, 3); /* info and above, as PgBouncer */
    assert_int_equal(sent.priority[0], LOG_ERR);
    assert_int_equal(sent.priority[1], LOG_WARNING);
    assert_int_equal(sent.priority[2], LOG_INFO);
    /* The text form, without a timestamp, whatever log_format says; control bytes escaped. */
    assert_string_equal(sent.line[0], "pool: e 1");
    assert_string_equal(sent.line[2], "serve: i\\nforged");
    /* The file still gets every line. */
    assert_non_null(strstr(written(), "not for syslog"));

    /* A reload with another ident or facility reopens; the same settings do not. */
    log_configure_syslog(true, "pgbouncer", "local3");
    log_info("serve", "same");
    assert_int_equal(sent.closes, 0);
    log_configure_syslog(true, "pgw-2", "user");
    assert_int_equal(sent.closes, 1);
    log_info("serve", "after reload");
    assert_int_equal(sent.opens, 2);
    assert_string_equal(sent.ident, "pgw-2");
    assert_int_equal(sent.facility, LOG_USER);

    /* Off: closed, and nothing more is sent. */
    int n = sent.n;
    log_configure_syslog(false, "pgw-2", "user");
    assert_int_equal(sent.closes, 2);
    log_error("pool", "file only");
    assert_int_equal(sent.n, n);
    log_set_syslog_ops(NULL);
}

static void test_syslog_facility_names(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int code;
    } names[] = {{"auth", LOG_AUTH}, {"authpriv", LOG_AUTHPRIV}, {"daemon", LOG_DAEMON},
                 {"user", LOG_USER}, {"local0", LOG_LOCAL0},     {"local7", LOG_LOCAL7}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        int code = -1;
        assert_true(log_syslog_facility_parse(names[i].name, &code));
        assert_int_equal(code, names[i].code);
    }
    int code;
    assert_false(log_syslog_facility_parse("local8", &code));
    assert_false(log_syslog_facility_parse("DAEMON", &code));
    assert_false(log_syslog_facility_parse("", &code));
    assert_false(log_syslog_facility_parse(NULL, &code));

    /* An unknown facility (a caller that did not check) falls back to daemon, as PgBouncer. */
    memset(&sent, 0, sizeof(sent));
    log_set_syslog_ops(&fake_ops);
    log_configure_syslog(true, "", "nonsense");
    start(LOG_FORMAT_TEXT);
    log_info("serve", "x");
    assert_int_equal(sent.facility, LOG_DAEMON);
    assert_string_equal(sent.ident, "pgwarden"); /* an empty ident names the program */
    log_configure_syslog(false, NULL, NULL);
    log_set_syslog_ops(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_line_unchanged),
        cmocka_unit_test(test_control_bytes_escaped),
        cmocka_unit_test(test_long_message),
        cmocka_unit_test(test_json_escapes),
        cmocka_unit_test(test_syslog_levels_and_lines),
        cmocka_unit_test(test_syslog_facility_names),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

/* The "options" startup parameter split into settings (see startup_options.h). */
#include "proto/startup_options.h"

#include <string.h>

static bool is_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v';
}

/* Copies the next word of *pos into out, unescaped; *pos moves past it. False when it does
 * not fit. PostgreSQL drops a backslash at the very end. */
static bool next_word(const char **pos, char *out, size_t cap)
{
    const char *p = *pos;
    size_t n = 0;
    bool escaped = false;
    for (; *p && (escaped || !is_space(*p)); p++) {
        if (!escaped && *p == '\\') {
            escaped = true;
            continue;
        }
        escaped = false;
        if (n + 1 >= cap)
            return false;
        out[n++] = *p;
    }
    out[n] = '\0';
    *pos = p;
    return true;
}

static const char *skip_spaces(const char *p)
{
    while (is_space(*p))
        p++;
    return p;
}

/* "name=value" in word: splits it in place and hands it to fn. */
static enum startup_options_result setting(char *word, startup_option_fn fn, void *ctx)
{
    char *eq = strchr(word, '=');
    if (!eq || eq == word)
        return STARTUP_OPTIONS_UNSUPPORTED;
    *eq = '\0';
    for (char *c = word; *c; c++)
        if (*c == '-')
            *c = '_';
    return fn(ctx, word, eq + 1) ? STARTUP_OPTIONS_OK : STARTUP_OPTIONS_STOPPED;
}

enum startup_options_result startup_options_parse(const char *options, char *scratch,
                                                  size_t scratch_len, startup_option_fn fn,
                                                  void *ctx)
{
    if (scratch_len == 0)
        return STARTUP_OPTIONS_TOO_LONG;
    const char *p = skip_spaces(options);
    while (*p) {
        if (!next_word(&p, scratch, scratch_len))
            return STARTUP_OPTIONS_TOO_LONG;
        char *arg;
        if (!strncmp(scratch, "--", 2)) {
            arg = scratch + 2;
        } else if (!strncmp(scratch, "-c", 2)) {
            arg = scratch + 2;
            if (!*arg) {
                /* "-c name=value": the setting is the next word. */
                p = skip_spaces(p);
                if (!*p)
                    return STARTUP_OPTIONS_UNSUPPORTED;
                if (!next_word(&p, scratch, scratch_len))
                    return STARTUP_OPTIONS_TOO_LONG;
                arg = scratch;
            }
        } else {
            return STARTUP_OPTIONS_UNSUPPORTED;
        }
        enum startup_options_result r = setting(arg, fn, ctx);
        if (r != STARTUP_OPTIONS_OK)
            return r;
        p = skip_spaces(p);
    }
    return STARTUP_OPTIONS_OK;
}

const char *startup_options_error(enum startup_options_result r)
{
    switch (r) {
    case STARTUP_OPTIONS_UNSUPPORTED:
        return "unsupported options startup parameter: only '-c config=val' and "
               "'--config=val' are allowed";
    case STARTUP_OPTIONS_TOO_LONG:
        return "unsupported options startup parameter: a setting is too long";
    case STARTUP_OPTIONS_OK:
    case STARTUP_OPTIONS_STOPPED:
        break;
    }
    return NULL;
}

/* PostgreSQL's parse_bool: the words, any case, and their prefixes ("t", "of" but not "o"). */
static const struct {
    const char *word;
    size_t min_prefix;
    bool value;
} BOOL_WORDS[] = {
    {"true", 1, true}, {"false", 1, false}, {"yes", 1, true}, {"no", 1, false},
    {"on", 2, true},   {"off", 2, false},   {"1", 1, true},   {"0", 1, false},
};

static bool prefix_of(const char *value, const char *word, size_t min_prefix)
{
    size_t n = strlen(value);
    if (n < min_prefix || n > strlen(word))
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = value[i];
        if (ch >= 'A' && ch <= 'Z')
            ch = (char)(ch - 'A' + 'a');
        if (ch != word[i])
            return false;
    }
    return true;
}

enum startup_replication startup_options_replication_parse(const char *value)
{
    if (!strcmp(value, "database"))
        return STARTUP_REPLICATION_LOGICAL;
    for (size_t i = 0; i < sizeof(BOOL_WORDS) / sizeof(BOOL_WORDS[0]); i++)
        if (prefix_of(value, BOOL_WORDS[i].word, BOOL_WORDS[i].min_prefix))
            return BOOL_WORDS[i].value ? STARTUP_REPLICATION_PHYSICAL : STARTUP_REPLICATION_NONE;
    return STARTUP_REPLICATION_INVALID;
}

static const struct {
    const char *value; /* sent to PostgreSQL */
    const char *name;  /* shown on the console */
} REPLICATION_KINDS[] = {
    [STARTUP_REPLICATION_NONE] = {NULL, "none"},
    [STARTUP_REPLICATION_LOGICAL] = {"database", "logical"},
    [STARTUP_REPLICATION_PHYSICAL] = {"true", "physical"},
    [STARTUP_REPLICATION_INVALID] = {NULL, "none"},
};

const char *startup_options_replication_value(enum startup_replication kind)
{
    return REPLICATION_KINDS[kind].value;
}

const char *startup_options_replication_name(enum startup_replication kind)
{
    return REPLICATION_KINDS[kind].name;
}

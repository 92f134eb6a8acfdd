/* SET, RESET, DISCARD ALL and DEALLOCATE statements in SQL text (see sql_effects.h). The
 * tokenizer follows PostgreSQL's scan.l as far as splitting statements needs: white space and
 * both comment forms, nested block comments, '' strings (E'' with backslash escapes, B'' X''
 * N'' U&'' as plain ones), dollar quotes, quoted identifiers, $n parameters and numbers. Every
 * other character is a one-character operator. */
#include "proto/sql_effects.h"

#include <string.h>

enum token_type {
    TOK_END,    /* ';' or the end of the text: the statement is over */
    TOK_WORD,   /* an identifier or key word, lower-cased in word */
    TOK_QUOTED, /* a quoted identifier, its text in word */
    TOK_STRING, /* any string constant */
    TOK_NUMBER,
    TOK_OTHER, /* an operator character, a $n parameter */
};

struct token {
    enum token_type type;
    char ch;                 /* TOK_OTHER: the character */
    size_t start, end;       /* the token's bytes in the text */
    char word[SQL_NAME_MAX]; /* TOK_WORD, TOK_QUOTED; "" when longer than a name may be */
};

struct lexer {
    const char *s;
    size_t len;
    size_t pos;
    bool backslash_escapes;
    bool broken; /* the text ended inside a string, quoted identifier or comment */
};

static bool is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static bool ident_start(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

static bool ident_cont(unsigned char c)
{
    return ident_start(c) || (c >= '0' && c <= '9') || c == '$';
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static unsigned char at(const struct lexer *l, size_t i)
{
    return i < l->len ? (unsigned char)l->s[i] : 0;
}

/* Skips white space and comments. */
static void skip_blank(struct lexer *l)
{
    while (l->pos < l->len) {
        unsigned char c = at(l, l->pos);
        if (is_space(c)) {
            l->pos++;
        } else if (c == '-' && at(l, l->pos + 1) == '-') {
            while (l->pos < l->len && at(l, l->pos) != '\n')
                l->pos++;
        } else if (c == '/' && at(l, l->pos + 1) == '*') {
            int depth = 0;
            while (l->pos < l->len) {
                if (at(l, l->pos) == '/' && at(l, l->pos + 1) == '*') {
                    depth++;
                    l->pos += 2;
                } else if (at(l, l->pos) == '*' && at(l, l->pos + 1) == '/') {
                    l->pos += 2;
                    if (--depth == 0)
                        break;
                } else {
                    l->pos++;
                }
            }
            if (depth > 0)
                l->broken = true;
        } else {
            return;
        }
    }
}

/* A quoted run from l->pos (at the opening quote) to past the closing one; a doubled quote
 * stands for one. word gets the text when it fits (quoted identifiers). */
static void quoted(struct lexer *l, char quote, bool escapes, char *word)
{
    size_t n = 0;
    bool fits = word != NULL;
    l->pos++;
    for (;;) {
        if (l->pos >= l->len) {
            l->broken = true;
            break;
        }
        unsigned char c = at(l, l->pos);
        if (c == '\\' && escapes) {
            l->pos += 2;
            fits = false; /* never a name */
            continue;
        }
        if (c == (unsigned char)quote) {
            if (at(l, l->pos + 1) != (unsigned char)quote) {
                l->pos++;
                break;
            }
            l->pos++; /* the doubled quote: one of them is text */
        }
        if (fits && n + 1 < SQL_NAME_MAX)
            word[n++] = (char)c;
        else
            fits = false;
        l->pos++;
    }
    if (word)
        word[fits ? n : 0] = '\0';
}

/* $tag$ ... $tag$ from l->pos; false when l->pos does not open one. */
static bool dollar_quoted(struct lexer *l)
{
    size_t p = l->pos + 1;
    if (ident_start(at(l, p)))
        while (p < l->len && ident_cont(at(l, p)) && at(l, p) != '$')
            p++;
    if (at(l, p) != '$')
        return false;
    size_t tag_len = p + 1 - l->pos; /* "$tag$" */
    const char *tag = l->s + l->pos;
    for (size_t q = p + 1; q + tag_len <= l->len; q++) {
        if (l->s[q] == '$' && !memcmp(l->s + q, tag, tag_len)) {
            l->pos = q + tag_len;
            return true;
        }
    }
    l->pos = l->len;
    l->broken = true;
    return true;
}

static void next_token(struct lexer *l, struct token *t)
{
    skip_blank(l);
    t->start = l->pos;
    t->word[0] = '\0';
    t->ch = 0;
    if (l->pos >= l->len || l->broken || at(l, l->pos) == ';') {
        if (l->pos < l->len && !l->broken)
            l->pos++;
        t->type = TOK_END;
        t->end = l->pos;
        return;
    }
    unsigned char c = at(l, l->pos), c1 = at(l, l->pos + 1);
    unsigned char lc = (unsigned char)(c | 0x20);
    if (c == '\'') {
        t->type = TOK_STRING;
        quoted(l, '\'', l->backslash_escapes, NULL);
    } else if ((lc == 'e' || lc == 'b' || lc == 'x' || lc == 'n') && c1 == '\'') {
        t->type = TOK_STRING;
        l->pos++;
        quoted(l, '\'', lc == 'e' || l->backslash_escapes, NULL);
    } else if (lc == 'u' && c1 == '&' && (at(l, l->pos + 2) == '\'' || at(l, l->pos + 2) == '"')) {
        bool ident = at(l, l->pos + 2) == '"';
        t->type = ident ? TOK_QUOTED : TOK_STRING;
        l->pos += 2;
        quoted(l, ident ? '"' : '\'', false, ident ? t->word : NULL);
    } else if (c == '"') {
        t->type = TOK_QUOTED;
        quoted(l, '"', false, t->word);
    } else if (c == '$' && is_digit(c1)) {
        t->type = TOK_OTHER;
        t->ch = '$';
        for (l->pos++; is_digit(at(l, l->pos)); l->pos++)
            ;
    } else if (c == '$' && dollar_quoted(l)) {
        t->type = TOK_STRING;
    } else if (ident_start(c)) {
        t->type = TOK_WORD;
        size_t n = 0;
        bool fits = true;
        for (; l->pos < l->len && ident_cont(at(l, l->pos)); l->pos++) {
            unsigned char d = at(l, l->pos);
            if (n + 1 < SQL_NAME_MAX)
                t->word[n++] = (char)(d >= 'A' && d <= 'Z' ? d + ('a' - 'A') : d);
            else
                fits = false;
        }
        t->word[fits ? n : 0] = '\0';
    } else if (is_digit(c) || (c == '.' && is_digit(c1))) {
        t->type = TOK_NUMBER;
        for (; l->pos < l->len; l->pos++) {
            unsigned char d = at(l, l->pos);
            unsigned char prev = at(l, l->pos - 1) | 0x20;
            if (ident_cont(d) || d == '.' ||
                ((d == '+' || d == '-') && prev == 'e' && is_digit(at(l, l->pos + 1))))
                continue;
            break;
        }
    } else {
        t->type = TOK_OTHER;
        t->ch = (char)c;
        l->pos++;
    }
    t->end = l->pos;
    if (l->broken)
        t->type = TOK_END; /* an unfinished statement has no effect */
}

static bool is_word(const struct token *t, const char *w)
{
    return t->type == TOK_WORD && !strcmp(t->word, w);
}

static bool is_name(const struct token *t)
{
    return (t->type == TOK_WORD || t->type == TOK_QUOTED) && t->word[0];
}

/* A statement being read: the lexer and its current token. */
struct stmt {
    struct lexer *l;
    struct token t;
};

static void advance(struct stmt *st)
{
    next_token(st->l, &st->t);
}

/* The rest of a statement is exactly its end. */
static bool at_end(struct stmt *st)
{
    return st->t.type == TOK_END;
}

/* var_name: name ('.' name)*, from the current token; leaves the token after it. */
static bool var_name(struct stmt *st, char *out)
{
    size_t n = 0;
    for (;;) {
        if (!is_name(&st->t))
            return false;
        size_t k = strlen(st->t.word);
        if (n + k + 2 > SQL_NAME_MAX)
            return false;
        memcpy(out + n, st->t.word, k);
        n += k;
        out[n] = '\0';
        advance(st);
        if (st->t.type != TOK_OTHER || st->t.ch != '.')
            return true;
        out[n++] = '.';
        advance(st);
    }
}

/* A value list of constants from the current token to the end of the statement: numbers with
 * an optional sign, strings, words and quoted identifiers, separated by commas. */
static bool value_list(struct stmt *st, struct sql_effect *e)
{
    size_t start = st->t.start, end = start;
    for (;;) {
        if (st->t.type == TOK_OTHER && (st->t.ch == '-' || st->t.ch == '+')) {
            advance(st);
            if (st->t.type != TOK_NUMBER)
                return false;
        } else if (st->t.type != TOK_NUMBER && st->t.type != TOK_STRING && st->t.type != TOK_WORD &&
                   st->t.type != TOK_QUOTED) {
            return false;
        }
        end = st->t.end;
        advance(st);
        if (at_end(st))
            break;
        if (st->t.type != TOK_OTHER || st->t.ch != ',')
            return false;
        advance(st);
    }
    e->value = st->l->s + start;
    e->value_len = end - start;
    return true;
}

/* After the parameter's name, at TO / '=' or (TIME ZONE, NAMES, SCHEMA) at the value. */
static void set_value(struct stmt *st, struct sql_effect *e)
{
    /* DEFAULT alone, and LOCAL alone after TIME ZONE, mean the default; anywhere else they
     * are words of a value. */
    if (is_word(&st->t, "default") || (is_word(&st->t, "local") && !strcmp(e->name, "timezone"))) {
        struct lexer saved_lexer = *st->l;
        struct token saved_token = st->t;
        advance(st);
        if (at_end(st)) {
            e->kind = SQL_EFFECT_SET_DEFAULT;
            return;
        }
        *st->l = saved_lexer;
        st->t = saved_token;
    }
    if (value_list(st, e))
        e->kind = SQL_EFFECT_SET;
}

/* After TIME, the other spelling of timezone: true with the name set and the token after ZONE
 * current, false when ZONE is not there. */
static bool time_zone(struct stmt *st, struct sql_effect *e)
{
    advance(st);
    if (!is_word(&st->t, "zone"))
        return false;
    strcpy(e->name, "timezone");
    advance(st);
    return true;
}

static void parse_set(struct stmt *st, struct sql_effect *e)
{
    e->tag = SQL_TAG_SET;
    e->kind = SQL_EFFECT_SET_OTHER;
    advance(st);
    if (is_word(&st->t, "local") || is_word(&st->t, "transaction") || is_word(&st->t, "role") ||
        is_word(&st->t, "xml"))
        return;
    if (is_word(&st->t, "constraints")) {
        e->tag = SQL_TAG_NONE; /* its tag is SET CONSTRAINTS */
        return;
    }
    if (is_word(&st->t, "session")) {
        advance(st);
        if (is_word(&st->t, "authorization") || is_word(&st->t, "characteristics"))
            return;
    }
    if (is_word(&st->t, "time")) {
        if (time_zone(st, e))
            set_value(st, e);
        return;
    }
    if (is_word(&st->t, "names") || is_word(&st->t, "schema")) {
        strcpy(e->name, is_word(&st->t, "names") ? "client_encoding" : "search_path");
        advance(st);
        if (at_end(st) && !strcmp(e->name, "client_encoding"))
            e->kind = SQL_EFFECT_SET_DEFAULT; /* SET NAMES without an encoding */
        else
            set_value(st, e);
        return;
    }
    if (!var_name(st, e->name))
        return;
    if (!is_word(&st->t, "to") && !(st->t.type == TOK_OTHER && st->t.ch == '='))
        return;
    advance(st);
    set_value(st, e);
}

static void parse_reset(struct stmt *st, struct sql_effect *e)
{
    e->tag = SQL_TAG_RESET;
    e->kind = SQL_EFFECT_SET_OTHER;
    advance(st);
    if (is_word(&st->t, "all")) {
        advance(st);
        if (at_end(st))
            e->kind = SQL_EFFECT_RESET_ALL;
        return;
    }
    if (is_word(&st->t, "session") || is_word(&st->t, "transaction"))
        return;
    if (is_word(&st->t, "time") ? !time_zone(st, e) : !var_name(st, e->name))
        return;
    if (at_end(st))
        e->kind = SQL_EFFECT_SET_DEFAULT;
}

/* Returns false when the statement has no effect followed. */
static bool parse_other(struct stmt *st, struct sql_effect *e)
{
    if (is_word(&st->t, "discard")) {
        advance(st);
        if (!is_word(&st->t, "all"))
            return false;
        advance(st);
        e->kind = SQL_EFFECT_DISCARD_ALL;
        e->tag = SQL_TAG_DISCARD_ALL;
        return at_end(st);
    }
    if (!is_word(&st->t, "deallocate"))
        return false;
    advance(st);
    if (is_word(&st->t, "prepare")) {
        advance(st);
        if (at_end(st)) { /* a statement called "prepare" */
            strcpy(e->name, "prepare");
            e->kind = SQL_EFFECT_DEALLOCATE;
            e->tag = SQL_TAG_DEALLOCATE;
            return true;
        }
    }
    if (is_word(&st->t, "all")) {
        advance(st);
        e->kind = SQL_EFFECT_DEALLOCATE_ALL;
        e->tag = SQL_TAG_DEALLOCATE_ALL;
        return at_end(st);
    }
    if (!is_name(&st->t))
        return false;
    strcpy(e->name, st->t.word);
    advance(st);
    e->kind = SQL_EFFECT_DEALLOCATE;
    e->tag = SQL_TAG_DEALLOCATE;
    return at_end(st);
}

/* Words a statement with an effect begins with. */
static bool may_have_effect(const struct token *t)
{
    return is_word(t, "set") || is_word(t, "reset") || is_word(t, "discard") ||
           is_word(t, "deallocate");
}

void sql_effects_scan(const char *text, size_t len, bool backslash_escapes, sql_effect_fn fn,
                      void *ctx)
{
    struct lexer l = {.s = text, .len = len, .backslash_escapes = backslash_escapes};
    struct stmt st = {.l = &l};
    bool first = true;
    while (l.pos < l.len && !l.broken) {
        advance(&st);
        /* The common case, one statement that is none of these, costs one token and one
         * memchr. */
        if (first && !may_have_effect(&st.t) && !memchr(text, ';', len))
            return;
        first = false;
        struct sql_effect e = {.tag = SQL_TAG_NONE};
        bool effect = false;
        if (is_word(&st.t, "set")) {
            parse_set(&st, &e);
            effect = e.tag != SQL_TAG_NONE;
        } else if (is_word(&st.t, "reset")) {
            parse_reset(&st, &e);
            effect = true;
        } else {
            effect = parse_other(&st, &e);
        }
        if (e.kind != SQL_EFFECT_SET) {
            e.value = NULL;
            e.value_len = 0;
        }
        /* The rest of the statement, whatever it is. */
        while (!at_end(&st))
            advance(&st);
        if (effect && !l.broken)
            fn(ctx, &e);
    }
}

enum sql_tag sql_effects_tag_of(const char *body, size_t len)
{
    while (len > 0 && body[len - 1] == '\0')
        len--;
    static const struct {
        const char *text;
        enum sql_tag tag;
    } tags[] = {
        {"SET", SQL_TAG_SET},
        {"RESET", SQL_TAG_RESET},
        {"DISCARD ALL", SQL_TAG_DISCARD_ALL},
        {"DEALLOCATE", SQL_TAG_DEALLOCATE},
        {"DEALLOCATE ALL", SQL_TAG_DEALLOCATE_ALL},
    };
    for (size_t i = 0; i < sizeof(tags) / sizeof(tags[0]); i++)
        if (strlen(tags[i].text) == len && !memcmp(tags[i].text, body, len))
            return tags[i].tag;
    return SQL_TAG_NONE;
}

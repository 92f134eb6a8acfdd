/* Aligned text tables. Cells are copied, so callers may pass stack buffers. */
#include "cli/table.h"

#include <stdlib.h>
#include <string.h>

void table_init(struct table *t, size_t n_cols, const char *const *headers)
{
    memset(t, 0, sizeof(*t));
    t->n_cols = n_cols > TABLE_MAX_COLS ? TABLE_MAX_COLS : n_cols;
    for (size_t i = 0; i < t->n_cols; i++)
        t->headers[i] = headers[i];
}

void table_align_right(struct table *t, size_t col)
{
    if (col < t->n_cols)
        t->right_align[col] = true;
}

void table_add_row(struct table *t, const char *const *values)
{
    if (t->n_rows == t->cap_rows) {
        size_t cap = t->cap_rows ? t->cap_rows * 2 : 16;
        char **grown = realloc(t->cells, cap * t->n_cols * sizeof(*grown));
        if (grown == NULL)
            return; /* the row is dropped; output stays well-formed */
        t->cells = grown;
        t->cap_rows = cap;
    }
    for (size_t c = 0; c < t->n_cols; c++)
        t->cells[t->n_rows * t->n_cols + c] = strdup(values[c] ? values[c] : "");
    t->n_rows++;
}

/* Display width in characters, counting UTF-8 continuation bytes as nothing. */
static size_t display_width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            w++;
    return w;
}

static void print_cell(FILE *out, const char *text, size_t width, bool right, bool last)
{
    size_t w = display_width(text);
    size_t pad = width > w ? width - w : 0;
    if (right)
        fprintf(out, "%*s%s", (int)pad, "", text);
    else if (last)
        fputs(text, out);
    else
        fprintf(out, "%s%*s", text, (int)pad, "");
}

void table_print(const struct table *t, FILE *out)
{
    size_t widths[TABLE_MAX_COLS];
    for (size_t c = 0; c < t->n_cols; c++) {
        widths[c] = display_width(t->headers[c]);
        for (size_t r = 0; r < t->n_rows; r++) {
            const char *cell = t->cells[r * t->n_cols + c];
            size_t w = cell ? display_width(cell) : 0;
            if (w > widths[c])
                widths[c] = w;
        }
    }
    for (size_t c = 0; c < t->n_cols; c++) {
        print_cell(out, t->headers[c], widths[c], t->right_align[c], c + 1 == t->n_cols);
        fputs(c + 1 == t->n_cols ? "\n" : "  ", out);
    }
    for (size_t c = 0; c < t->n_cols; c++) {
        for (size_t i = 0; i < widths[c]; i++)
            fputc('-', out);
        fputs(c + 1 == t->n_cols ? "\n" : "  ", out);
    }
    for (size_t r = 0; r < t->n_rows; r++) {
        for (size_t c = 0; c < t->n_cols; c++) {
            const char *cell = t->cells[r * t->n_cols + c];
            print_cell(out, cell ? cell : "", widths[c], t->right_align[c], c + 1 == t->n_cols);
            fputs(c + 1 == t->n_cols ? "\n" : "  ", out);
        }
    }
}

void table_free(struct table *t)
{
    for (size_t i = 0; i < t->n_rows * t->n_cols; i++)
        free(t->cells[i]);
    free(t->cells);
    memset(t, 0, sizeof(*t));
}

/* Aligned text tables for people: headers, rows of strings, columns padded to the widest
 * cell; numbers right-aligned. */
#ifndef PGWARDEN_CLI_TABLE_H
#define PGWARDEN_CLI_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define TABLE_MAX_COLS 12

struct table {
    size_t n_cols;
    const char *headers[TABLE_MAX_COLS]; /* borrowed (string literals) */
    bool right_align[TABLE_MAX_COLS];
    char **cells; /* owned: n_rows * n_cols strings, each owned */
    size_t n_rows;
    size_t cap_rows;
};

void table_init(struct table *t, size_t n_cols, const char *const *headers);
/* Marks a column as numeric (right-aligned). */
void table_align_right(struct table *t, size_t col);
/* Adds a row of n_cols printf-formatted cells: pass exactly n_cols strings. */
void table_add_row(struct table *t, const char *const *values);
void table_print(const struct table *t, FILE *out);
void table_free(struct table *t);

#endif

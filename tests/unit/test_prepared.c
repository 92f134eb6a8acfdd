/* Unit tests for pool/prepared: the shared statement registry (one statement per distinct
 * Parse body, unguessable names), clients' name bindings, and servers' LRU sets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "pool/prepared.h"

#define BODY(s) (const uint8_t *)(s), sizeof(s) /* query text + NUL (+ no types) */

static void test_registry_shares_bodies_and_names_them_secretly(void **state)
{
    (void)state;
    struct stmt_registry r, other;
    assert_true(prepared_registry_init(&r));
    assert_true(prepared_registry_init(&other));
    /* Two processes draw different secrets (2^-64 to collide). */
    assert_string_not_equal(r.secret, other.secret);
    assert_int_equal(strlen(r.secret), 16);

    struct prepared_stmt *a = prepared_registry_get(&r, BODY("SELECT $1"));
    struct prepared_stmt *b = prepared_registry_get(&r, BODY("SELECT $1"));
    struct prepared_stmt *c = prepared_registry_get(&r, BODY("SELECT $2"));
    assert_ptr_equal(a, b);
    assert_ptr_not_equal(a, c);
    assert_int_equal(a->refs, 2);
    assert_int_equal(r.count, 2);
    char name[STMT_NAME_MAX];
    size_t n = prepared_registry_name(&r, a->id, name);
    assert_int_equal(n, a->name_len);
    assert_string_equal(name, a->name);
    assert_true(strncmp(name, "pgw_", 4) == 0 && strstr(name, r.secret) == name + 4);
    assert_true(prepared_registry_owns_name(&r, a->name));
    /* Another process's names, look-alikes and prefixes are not ours. */
    assert_false(prepared_registry_owns_name(&other, a->name));
    assert_false(prepared_registry_owns_name(&r, "pgw_"));
    assert_false(prepared_registry_owns_name(&r, "pgw_0000000000000000_1"));
    char truncated[24];
    snprintf(truncated, sizeof(truncated), "pgw_%.15s", r.secret);
    assert_false(prepared_registry_owns_name(&r, truncated));
    assert_false(prepared_registry_owns_name(&r, "my_statement"));

    /* Ids are never reused: a freed body comes back under a new id. */
    uint64_t old_id = c->id;
    prepared_stmt_unref(&r, c);
    assert_int_equal(r.count, 1);
    c = prepared_registry_get(&r, BODY("SELECT $2"));
    assert_true(c->id > old_id);
    prepared_stmt_unref(&r, c);
    prepared_stmt_unref(&r, a);
    prepared_stmt_unref(&r, b);
    assert_int_equal(r.count, 0);
    prepared_stmt_unref(&r, NULL);
    prepared_registry_destroy(&r);
    prepared_registry_destroy(&other);
}

static void test_client_names_bind_replace_and_free(void **state)
{
    (void)state;
    struct stmt_registry r;
    assert_true(prepared_registry_init(&r));
    struct client_stmt *list = NULL;
    struct prepared_stmt *q1 = prepared_registry_get(&r, BODY("SELECT 1"));
    struct prepared_stmt *q2 = prepared_registry_get(&r, BODY("SELECT 2"));
    assert_true(prepared_client_set(&r, &list, "s1", q1));
    assert_true(prepared_client_set(&r, &list, "", q2)); /* the unnamed statement is a name too */
    assert_ptr_equal(prepared_client_find(list, "s1")->stmt, q1);
    assert_ptr_equal(prepared_client_find(list, "")->stmt, q2);
    assert_null(prepared_client_find(list, "s2"));
    /* Rebinding s1 drops the reference to the old statement (it is freed: count 1). */
    struct prepared_stmt *q3 = prepared_registry_get(&r, BODY("SELECT 3"));
    assert_true(prepared_client_set(&r, &list, "s1", q3));
    assert_ptr_equal(prepared_client_find(list, "s1")->stmt, q3);
    assert_int_equal(r.count, 2);
    prepared_client_remove(&r, &list, "s1");
    prepared_client_remove(&r, &list, "missing");
    assert_null(prepared_client_find(list, "s1"));
    assert_int_equal(r.count, 1);
    /* Names alike in their first 63 bytes are one, as PostgreSQL keys them. */
    char long1[80], long2[80];
    memset(long1, 'n', 63);
    memcpy(long2, long1, 63);
    strcpy(long1 + 63, "_first");
    strcpy(long2 + 63, "_second");
    struct prepared_stmt *q4 = prepared_registry_get(&r, BODY("SELECT 4"));
    assert_true(prepared_client_set(&r, &list, long1, q4));
    assert_ptr_equal(prepared_client_find(list, long2)->stmt, q4);
    assert_int_equal(strlen(prepared_client_find(list, long2)->name), 63);
    long2[62] = 'x';
    assert_null(prepared_client_find(list, long2));
    prepared_client_free_all(&r, &list);
    assert_null(list);
    assert_int_equal(r.count, 0);
    prepared_registry_destroy(&r);
}

static void test_server_sets_evict_least_recently_used(void **state)
{
    (void)state;
    struct server_stmts s = {0};
    assert_int_equal(prepared_server_victim(&s, 3), 0);
    for (uint64_t id = 1; id <= 3; id++)
        assert_true(prepared_server_prepared(&s, id));
    assert_int_equal(prepared_server_victim(&s, 4), 0); /* below the bound: nothing to close */
    assert_int_equal(prepared_server_victim(&s, 3), 1); /* at it: the oldest */
    prepared_server_touch(&s, prepared_server_find(&s, 1));
    assert_int_equal(prepared_server_victim(&s, 3), 2);
    /* Adding an existing id refreshes it instead of duplicating. */
    assert_true(prepared_server_prepared(&s, 2));
    assert_int_equal(s.n, 3);
    assert_int_equal(prepared_server_victim(&s, 3), 3);
    prepared_server_remove(&s, 3);
    prepared_server_remove(&s, 99);
    assert_null(prepared_server_find(&s, 3));
    assert_int_equal(s.n, 2);
    /* SQL-level PREPARE/DEALLOCATE: every statement must be verified again. */
    prepared_server_distrust(&s);
    assert_true(s.suspect);
    assert_false(prepared_server_find(&s, 1)->verified);
    assert_true(prepared_server_prepared(&s, 1));
    assert_true(prepared_server_find(&s, 1)->verified);
    assert_false(prepared_server_find(&s, 2)->verified);
    /* Growth past the first allocation keeps every entry. */
    for (uint64_t id = 10; id < 100; id++)
        assert_true(prepared_server_prepared(&s, id));
    for (uint64_t id = 10; id < 100; id++)
        assert_non_null(prepared_server_find(&s, id));
    assert_int_equal(prepared_server_victim(&s, 50), 2); /* 2 was used least recently */
    prepared_server_free_all(&s);
    assert_int_equal(s.n, 0);
}

static void test_unnamed_statement_closed_for_the_next_client(void **state)
{
    (void)state;
    struct unnamed_stmt u = {0};
    const uint8_t unnamed[] = {0, 'S', 0}, named[] = {'s', 0};
    /* Nobody left one: nothing to close. */
    assert_false(prepared_unnamed_foreign(&u, 7, 'B'));
    prepared_unnamed_note(&u, 7, 'P', named, sizeof(named));
    assert_int_equal(u.client, 0); /* a named Parse leaves the unnamed statement alone */
    prepared_unnamed_note(&u, 7, 'P', unnamed, sizeof(unnamed));
    assert_int_equal(u.client, 7);
    prepared_unnamed_note(&u, 7, 'B', unnamed, sizeof(unnamed));
    assert_int_equal(u.client, 7);
    /* Its owner keeps it; another client gets a Close before its first real message, not
     * before messages the server ignores outside COPY. */
    assert_false(prepared_unnamed_foreign(&u, 7, 'B'));
    assert_false(prepared_unnamed_foreign(&u, 8, 'H'));
    assert_false(prepared_unnamed_foreign(&u, 8, 'd'));
    assert_true(prepared_unnamed_foreign(&u, 8, 'Q'));
    assert_true(prepared_unnamed_foreign(&u, 8, 'S'));
    assert_true(prepared_unnamed_foreign(&u, 8, 'P'));
    prepared_unnamed_closed(&u);
    assert_false(prepared_unnamed_foreign(&u, 8, 'B'));
    /* A Parse whose name has not arrived yet counts as unnamed. */
    prepared_unnamed_note(&u, 8, 'P', NULL, 0);
    assert_int_equal(u.client, 8);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry_shares_bodies_and_names_them_secretly),
        cmocka_unit_test(test_client_names_bind_replace_and_free),
        cmocka_unit_test(test_server_sets_evict_least_recently_used),
        cmocka_unit_test(test_unnamed_statement_closed_for_the_next_client),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

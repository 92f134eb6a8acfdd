/* Unit test for the serve-mode snapshot source: hand-built pool objects (no sockets) are
 * turned into manager records with the right states, pids, names and totals; also checks
 * the state machine's legal moves on the way. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "pool/objects.h"
#include "pool/pool.h"
#include "pool/server.h"
#include "pool/states.h"
#include "live/pool_source.h"

static void init_pooler(struct pooler *p, struct pooler_config *cfg)
{
    char err[256];
    assert_true(pooler_config_load_string("[databases]\napp = host=/tmp dbname=real\n"
                                          "[pgbouncer]\nauth_type = trust\n"
                                          "pool_mode = transaction\nmin_pool_size = 2\n",
                                          "t.ini", cfg, err, sizeof(err)));
    memset(p, 0, sizeof(*p));
    p->cfg = cfg;
    p->loop = net_loop_new();
    assert_non_null(p->loop);
    plist_init(&p->pools);
    plist_init(&p->login_clients);
    plist_init(&p->justfree_clients);
    plist_init(&p->justfree_servers);
    plist_init(&p->cancel_reqs);
}

static void make_client(struct pooler *p, struct pool *pool, struct client *c, uint64_t id,
                        enum client_state st)
{
    memset(c, 0, sizeof(*c));
    c->pooler = p;
    c->id = id;
    c->conn.fd = -1;
    plist_init(&c->node);
    states_client_change(c, CL_LOGIN);
    c->pool = pool;
    states_client_change(c, CL_ACTIVE);
    if (st != CL_ACTIVE)
        states_client_change(c, st);
}

static void test_snapshot_states(void **state)
{
    (void)state;
    struct pooler p;
    struct pooler_config cfg;
    init_pooler(&p, &cfg);
    const struct pooler_db_config *db = pooler_config_find_db(&cfg, "app");
    struct pool *pool = objects_pool_get(&p, db, "app", "alice");
    assert_non_null(pool);
    assert_string_equal(pool->server_db, "real");
    assert_int_equal(pool->mode, POOL_MODE_TRANSACTION);

    struct client busy, waiting, idle;
    make_client(&p, pool, &busy, 1, CL_ACTIVE);
    make_client(&p, pool, &waiting, 2, CL_WAITING);
    make_client(&p, pool, &idle, 3, CL_ACTIVE);
    idle.params[PARAM_APPLICATION_NAME] = params_intern("reporting");

    struct server s;
    memset(&s, 0, sizeof(s));
    s.pool = pool;
    s.be_pid = 4242;
    s.conn.fd = -1;
    plist_init(&s.node);
    states_server_change(&s, SV_LOGIN);
    states_server_change(&s, SV_IDLE);
    states_server_change(&s, SV_ACTIVE);
    s.xact = WIRE_XACT_IN_BLOCK;
    busy.server = &s;
    s.client = &busy;
    pool->n_servers = 1;
    pool->stats.xact_count = 7;

    struct snapshot snap;
    snapshot_init(&snap, SNAPSHOT_MODE_SERVE, snapshot_now_ms());
    assert_true(pool_source_fill(&p, NULL, &snap));
    assert_int_equal(snap.n_conns, 3);
    for (size_t i = 0; i < snap.n_conns; i++) {
        const struct conn_record *r = &snap.conns[i];
        assert_string_equal(r->user, "alice");
        assert_string_equal(r->database, "app");
        if (r->id == 1) {
            assert_int_equal(r->state, CONN_STATE_IDLE_IN_XACT);
            assert_int_equal(r->pid, 4242);
        } else if (r->id == 2) {
            assert_int_equal(r->state, CONN_STATE_WAITING);
        } else {
            assert_int_equal(r->id, 3);
            assert_int_equal(r->state, CONN_STATE_IDLE);
            assert_string_equal(r->application, "reporting");
        }
    }
    assert_int_equal(snap.counters.waiting_clients, 1);
    assert_int_equal(snap.counters.requests_total, 7);
    assert_int_equal(snap.capacity.pool_max, 20);
    assert_int_equal(snap.capacity.pool_min, 2);
    assert_int_equal(snap.capacity.pool_current, 1);
    /* The pool record says where its clients' records are; the names are one copy each. */
    assert_int_equal(snap.n_pools, 1);
    assert_int_equal(snap.pools[0].first_conn, 0);
    assert_int_equal(snap.pools[0].n_conns, 3);
    assert_ptr_equal(snap.conns[0].user, snap.conns[2].user);
    assert_ptr_equal(snap.conns[0].database, snap.conns[1].database);
    snapshot_free(&snap);

    /* A filter on another database yields nothing. */
    snapshot_init(&snap, SNAPSHOT_MODE_SERVE, snapshot_now_ms());
    assert_true(pool_source_fill(&p, "other", &snap));
    assert_int_equal(snap.n_conns, 0);
    snapshot_free(&snap);

    /* busy goes idle: its server is released to the pool. */
    s.xact = WIRE_XACT_IDLE;
    assert_true(server_is_clean(&s));
    plist_remove(&busy.node);
    plist_remove(&waiting.node);
    plist_remove(&idle.node);
    plist_remove(&s.node);
    params_unref(idle.params[PARAM_APPLICATION_NAME]);
    plist_remove(&pool->node);
    objects_pool_free(pool);
    net_loop_free(p.loop);
    pooler_config_free(&cfg);
}

/* Names are interned per snapshot, cut like the arrays they replaced; a reset keeps the
 * record array for the next look, and a reserve shrinks one that is far too large. */
static void test_snapshot_names_and_reuse(void **state)
{
    (void)state;
    struct snapshot snap;
    snapshot_init(&snap, SNAPSHOT_MODE_SERVE, 1000);
    const char *a = snapshot_name(&snap, "app", SNAPSHOT_NAME_LEN);
    assert_string_equal(a, "app");
    assert_ptr_equal(snapshot_name(&snap, "app", SNAPSHOT_NAME_LEN), a);
    assert_ptr_not_equal(snapshot_name(&snap, "ap", SNAPSHOT_NAME_LEN), a);
    assert_string_equal(snapshot_name(&snap, "", SNAPSHOT_NAME_LEN), "");
    assert_string_equal(snapshot_name(&snap, NULL, SNAPSHOT_NAME_LEN), "");
    char long_name[100];
    memset(long_name, 'x', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    assert_int_equal(strlen(snapshot_name(&snap, long_name, SNAPSHOT_NAME_LEN)),
                     SNAPSHOT_NAME_LEN - 1);
    /* Many distinct names grow the set and keep each findable. */
    const char *first[200];
    for (int i = 0; i < 200; i++) {
        char name[16];
        snprintf(name, sizeof(name), "n%d", i);
        first[i] = snapshot_name(&snap, name, SNAPSHOT_NAME_LEN);
        assert_non_null(first[i]);
    }
    for (int i = 0; i < 200; i++) {
        char name[16];
        snprintf(name, sizeof(name), "n%d", i);
        assert_ptr_equal(snapshot_name(&snap, name, SNAPSHOT_NAME_LEN), first[i]);
    }
    struct conn_record *r = snapshot_add_conn(&snap);
    assert_non_null(r);
    assert_string_equal(r->user, "");
    assert_string_equal(r->client_addr, "");

    assert_true(snapshot_reserve_conns(&snap, 1000));
    struct conn_record *array = snap.conns;
    snapshot_reset(&snap, SNAPSHOT_MODE_SERVE, 2000);
    assert_int_equal(snap.taken_ms, 2000);
    assert_int_equal(snap.n_conns, 0);
    assert_int_equal(snap.names.n, 0);
    assert_ptr_equal(snap.conns, array);
    assert_int_equal(snap.cap_conns, 1000);
    assert_true(snapshot_reserve_conns(&snap, 600)); /* fits: kept */
    assert_int_equal(snap.cap_conns, 1000);
    assert_true(snapshot_reserve_conns(&snap, 10)); /* the clients left: shrunk */
    assert_int_equal(snap.cap_conns, 10);
    snapshot_free(&snap);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snapshot_states),
        cmocka_unit_test(test_snapshot_names_and_reuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

// node-postgres through pgwarden: PGW_CLIENTS clients with default settings, named prepared
// statements ({name, text, values}), checking every result against values computed here.
// Each client has a second connection with pipeline: true, node-postgres's opt-in pipelining.
// Prints "OK ..." and exits 0, or prints what differed and exits 1.
'use strict';
const crypto = require('crypto');
const pg = require('pg');

const env = (k, d) => process.env[k] || d;
const HOST = env('PGW_HOST', '127.0.0.1');
const PORT = parseInt(env('PGW_PORT', '6432'), 10);
const USER = env('PGW_USER', 'app_user');
const PASSWORD = env('PGW_PASSWORD', '');
const DB = env('PGW_DB', 'appdb');
const TABLE = env('PGW_TABLE', 'drv_node');
const CLIENTS = parseInt(env('PGW_CLIENTS', '12'), 10);
const ITERS = parseInt(env('PGW_ITERS', '12'), 10);
const ROWS = parseInt(env('PGW_ROWS', '2000'), 10);
const BATCH = parseInt(env('PGW_BATCH', '20'), 10);

let checks = 0;

function expect(got, want, k, i, what) {
  checks++;
  const g = Buffer.isBuffer(got) ? got.toString('hex') : JSON.stringify(got);
  const w = Buffer.isBuffer(want) ? want.toString('hex') : JSON.stringify(want);
  if (g !== w) throw new Error(`client ${k} iter ${i}: ${what}: got ${g}, want ${w}`);
}

const pad = (n, w) => String(n).padStart(w, '0');

// numeric as decimal strings with 6 digits after the point, scaled with BigInt
function numericTimes(s, m) {
  const [a, b] = s.split('.');
  const scaled = (BigInt(a + b) * BigInt(m)).toString().padStart(b.length + 1, '0');
  return scaled.slice(0, -b.length) + '.' + scaled.slice(-b.length);
}

function typeValues(k, i) {
  const num = `12345678901234567890.${pad(k, 2)}${pad(i, 4)}`;
  // 2024-02-29 12:34:56.789012 UTC + k hours + i seconds, to the microsecond
  const base = Date.UTC(2024, 1, 29, 12, 34, 56) + k * 3600e3 + i * 1e3;
  const d = new Date(base);
  const usText = (date) =>
    `${date.getUTCFullYear()}-${pad(date.getUTCMonth() + 1, 2)}-${pad(date.getUTCDate(), 2)} ` +
    `${pad(date.getUTCHours(), 2)}:${pad(date.getUTCMinutes(), 2)}:${pad(date.getUTCSeconds(), 2)}.789012`;
  const ts = usText(d) + '+00';
  const tsPlusDay = usText(new Date(base + 86400e3));
  const bytes = Buffer.alloc(258);
  for (let b = 0; b < 256; b++) bytes[b] = b;
  bytes[256] = k;
  bytes[257] = i;
  const text = `héllo wörld ✓ 日本語 🐘 ß€ c${k} i${i}`;
  return { num, ms: base + 789, ts, tsPlusDay, bytes, text, f: k + i / 3 };
}

async function client(k) {
  const c = new pg.Client({ host: HOST, port: PORT, user: USER, password: PASSWORD, database: DB });
  await c.connect();
  const p = new pg.Client({ host: HOST, port: PORT, user: USER, password: PASSWORD, database: DB, pipeline: true });
  await p.connect();
  try {
    for (let i = 0; i < ITERS; i++) {
      const v = k * 1000 + i;
      // (a) named statements: parsed once per connection by node-postgres; the second one has
      // the same name in every client but a different text
      let r = await c.query({ name: 'doubled', text: "SELECT $1::int * 2 AS d, $2::text || '-' || $3::text AS t", values: [v, `c${k}`, String(v)] });
      expect(r.rows, [{ d: 2 * v, t: `c${k}-${v}` }], k, i, 'doubled');
      r = await c.query({ name: 'tagged', text: `SELECT $1::text || '-c${k}' AS t`, values: [String(v)] });
      expect(r.rows, [{ t: `${v}-c${k}` }], k, i, 'tagged');

      // (b) committed transaction
      await c.query('BEGIN');
      r = await c.query({ name: 'insert', text: `INSERT INTO ${TABLE} (client, iter, val) VALUES ($1, $2, $3)`, values: [k, i, `node ${k}/${i}`] });
      expect(r.rowCount, 1, k, i, 'insert');
      r = await c.query({ name: 'count', text: `SELECT count(*)::int AS n FROM ${TABLE} WHERE client = $1`, values: [k] });
      expect(r.rows[0].n, i + 1, k, i, 'count in transaction');
      await c.query('COMMIT');

      // (c) rolled back
      await c.query('BEGIN');
      await c.query({ name: 'insert', text: `INSERT INTO ${TABLE} (client, iter, val) VALUES ($1, $2, $3)`, values: [k, 100000 + i, 'rolled back'] });
      r = await c.query({ name: 'count', text: `SELECT count(*)::int AS n FROM ${TABLE} WHERE client = $1`, values: [k] });
      expect(r.rows[0].n, i + 2, k, i, 'count before rollback');
      await c.query('ROLLBACK');
      r = await c.query({ name: 'count', text: `SELECT count(*)::int AS n FROM ${TABLE} WHERE client = $1`, values: [k] });
      expect(r.rows[0].n, i + 1, k, i, 'count after rollback');

      // (d) many rows
      r = await c.query({ name: 'many', text: "SELECT g, g * $1::bigint AS m, repeat('x', g % 50) AS x FROM generate_series(1, $2) g", values: [v, ROWS] });
      expect(r.rows.length, ROWS, k, i, 'row count');
      r.rows.forEach((row, n) => {
        const g = n + 1;
        if (row.g !== g || row.m !== String(g * v) || row.x !== 'x'.repeat(g % 50))
          expect(row, { g, m: String(g * v), x: 'x'.repeat(g % 50) }, k, i, `row ${g}`);
      });
      checks++;

      // (e) types
      const t = typeValues(k, i);
      r = await c.query({
        name: 'types',
        text: "SELECT $1::numeric AS n, $1::numeric * 3 AS n3, $2::timestamptz AS ts," +
          " to_char($2::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') AS tsu," +
          " to_char(($2::timestamptz + interval '1 day') AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') AS tsd," +
          " $3::bytea AS b, md5($3::bytea) AS bm, $4::text AS t, length($4::text) AS tl," +
          " octet_length($4::text) AS tol, $5::float8 AS f, $5::float8 * 2 AS f2," +
          " 0.1::float8 + 0.2::float8 AS fs, (0.1::float8 + 0.2::float8)::text AS fst",
        values: [t.num, t.ts, t.bytes, t.text, t.f],
      });
      const row = r.rows[0];
      expect(row.n, t.num, k, i, 'numeric');
      expect(row.n3, numericTimes(t.num, 3), k, i, 'numeric * 3');
      expect(row.ts.getTime(), t.ms, k, i, 'timestamptz (milliseconds)');
      expect(row.tsu, t.ts.slice(0, -3), k, i, 'timestamptz (microseconds)');
      expect(row.tsd, t.tsPlusDay, k, i, 'timestamptz + 1 day');
      expect(row.b, t.bytes, k, i, 'bytea');
      expect(row.bm, crypto.createHash('md5').update(t.bytes).digest('hex'), k, i, 'md5(bytea)');
      expect(row.t, t.text, k, i, 'text');
      expect(row.tl, [...t.text].length, k, i, 'length(text)');
      expect(row.tol, Buffer.byteLength(t.text, 'utf8'), k, i, 'octet_length(text)');
      expect(row.f, t.f, k, i, 'float8');
      expect(row.f2, t.f * 2, k, i, 'float8 * 2');
      expect(row.fs, 0.1 + 0.2, k, i, '0.1 + 0.2');
      expect(row.fst, '0.30000000000000004', k, i, '(0.1 + 0.2)::text');

      // (f) pipelining (the client option pipeline: true): every query is written at once,
      // each with its own Sync, and answered in order; a transaction among them rolled back
      const queued = [];
      for (let j = 0; j < BATCH; j++)
        queued.push(p.query({ name: 'plus', text: 'SELECT $1::int + $2::int AS s', values: [v, j] }));
      queued.push(p.query('BEGIN'));
      for (let j = 0; j < BATCH; j++)
        queued.push(p.query({ name: 'insert', text: `INSERT INTO ${TABLE} (client, iter, val) VALUES ($1, $2, $3)`, values: [k, 200000 + i * BATCH + j, 'pipelined'] }));
      queued.push(p.query({ name: 'count', text: `SELECT count(*)::int AS n FROM ${TABLE} WHERE client = $1`, values: [k] }));
      queued.push(p.query('ROLLBACK'));
      queued.push(p.query({ name: 'count', text: `SELECT count(*)::int AS n FROM ${TABLE} WHERE client = $1`, values: [k] }));
      const res = await Promise.all(queued);
      for (let j = 0; j < BATCH; j++)
        expect(res[j].rows, [{ s: v + j }], k, i, `pipelined ${j}`);
      for (let j = 0; j < BATCH; j++)
        expect(res[BATCH + 1 + j].rowCount, 1, k, i, `pipelined insert ${j}`);
      expect(res[2 * BATCH + 1].rows[0].n, i + 1 + BATCH, k, i, 'pipelined count in transaction');
      expect(res[2 * BATCH + 3].rows[0].n, i + 1, k, i, 'pipelined count after rollback');

      // (g) an error among pipelined queries fails that query alone (each has its own Sync)
      const [before, failed, after] = await Promise.allSettled([
        p.query({ name: 'plus', text: 'SELECT $1::int + $2::int AS s', values: [v, 1] }),
        p.query({ name: 'div', text: 'SELECT 10 / $1::int AS q', values: [0] }),
        p.query({ name: 'plus', text: 'SELECT $1::int + $2::int AS s', values: [v, 2] }),
      ]);
      expect(before.status === 'fulfilled' && before.value.rows, [{ s: v + 1 }], k, i, 'before the error');
      expect(failed.status === 'rejected' && failed.reason.code, '22012', k, i, 'division by zero');
      expect(after.status === 'fulfilled' && after.value.rows, [{ s: v + 2 }], k, i, 'after the error');
    }
  } finally {
    await c.end();
    await p.end();
  }
}

async function main() {
  const results = await Promise.allSettled(
    Array.from({ length: CLIENTS }, (_, n) => client(n + 1)));
  const failed = results.filter((r) => r.status === 'rejected');
  if (failed.length) {
    failed.forEach((r) => console.log(`FAIL ${r.reason && r.reason.stack ? r.reason.stack : r.reason}`));
    process.exit(1);
  }
  const version = require('pg/package.json').version;
  console.log(`OK node-postgres ${version} clients=${CLIENTS} iters=${ITERS} checks=${checks}`);
}

const timer = setTimeout(() => { console.log('FAIL a client hung'); process.exit(1); }, 140e3);
timer.unref();
main().catch((e) => { console.log(`FAIL ${e.stack || e}`); process.exit(1); });

// pgx (v4) through pgwarden: PGW_CLIENTS connections with default settings (the statement
// cache prepares every query as a named statement), a batch per iteration (pipelined: one
// Sync), checking every result against values computed here. Prints "OK ..." and exits 0, or
// prints what differed and exits 1. Builds in GOPATH mode against Debian's
// golang-github-jackc-pgx-v4-dev: GO111MODULE=off GOPATH=/usr/share/gocode go build main.go
package main

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgconn"
	"github.com/jackc/pgtype"
	"github.com/jackc/pgx/v4"
)

func env(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}

func envInt(k string, d int) int {
	n, err := strconv.Atoi(env(k, strconv.Itoa(d)))
	if err != nil {
		panic(err)
	}
	return n
}

var (
	table   = env("PGW_TABLE", "drv_pgx")
	clients = envInt("PGW_CLIENTS", 12)
	iters   = envInt("PGW_ITERS", 12)
	rows    = envInt("PGW_ROWS", 2000)
	batch   = envInt("PGW_BATCH", 20)
	checks  int64
)

type failure struct{ msg string }

func expect(ok bool, k, i int, what string, got, want interface{}) {
	atomic.AddInt64(&checks, 1)
	if !ok {
		panic(failure{fmt.Sprintf("client %d iter %d: %s: got %v, want %v", k, i, what, got, want)})
	}
}

func must(err error, k, i int, what string) {
	if err != nil {
		panic(failure{fmt.Sprintf("client %d iter %d: %s: %v", k, i, what, err)})
	}
}

// numericRat is a pgtype.Numeric's exact value.
func numericRat(n pgtype.Numeric) *big.Rat {
	r := new(big.Rat).SetInt(n.Int)
	scale := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(abs(n.Exp))), nil)
	if n.Exp >= 0 {
		return r.Mul(r, new(big.Rat).SetInt(scale))
	}
	return r.Quo(r, new(big.Rat).SetInt(scale))
}

func abs(x int32) int32 {
	if x < 0 {
		return -x
	}
	return x
}

func client(ctx context.Context, dsn string, k int) {
	conn, err := pgx.Connect(ctx, dsn)
	must(err, k, -1, "connect")
	defer conn.Close(ctx)

	for i := 0; i < iters; i++ {
		v := k*1000 + i
		// (a) the statement cache: a named statement per query text
		var d int
		var tag string
		must(conn.QueryRow(ctx, "SELECT $1::int * 2, $2::text || '-' || $3::text", v,
			fmt.Sprintf("c%d", k), strconv.Itoa(v)).Scan(&d, &tag), k, i, "doubled")
		expect(d == 2*v, k, i, "doubled", d, 2*v)
		expect(tag == fmt.Sprintf("c%d-%d", k, v), k, i, "tag", tag, fmt.Sprintf("c%d-%d", k, v))

		count := func(q interface {
			QueryRow(context.Context, string, ...interface{}) pgx.Row
		}, want int64, what string) {
			var n int64
			must(q.QueryRow(ctx, "SELECT count(*) FROM "+table+" WHERE client = $1", k).Scan(&n), k, i, what)
			expect(n == want, k, i, what, n, want)
		}
		insert := "INSERT INTO " + table + " (client, iter, val) VALUES ($1, $2, $3)"

		// (b) committed transaction
		tx, err := conn.Begin(ctx)
		must(err, k, i, "begin")
		ct, err := tx.Exec(ctx, insert, k, i, fmt.Sprintf("pgx %d/%d", k, i))
		must(err, k, i, "insert")
		expect(ct.RowsAffected() == 1, k, i, "insert count", ct.RowsAffected(), 1)
		count(tx, int64(i+1), "count in transaction")
		must(tx.Commit(ctx), k, i, "commit")

		// (c) rolled back
		tx, err = conn.Begin(ctx)
		must(err, k, i, "begin")
		_, err = tx.Exec(ctx, insert, k, 100000+i, "rolled back")
		must(err, k, i, "insert (rollback)")
		count(tx, int64(i+2), "count before rollback")
		must(tx.Rollback(ctx), k, i, "rollback")
		count(conn, int64(i+1), "count after rollback")

		// (d) many rows
		rs, err := conn.Query(ctx, "SELECT g, g * $1::bigint, repeat('x', g % 50) FROM generate_series(1, $2) g", v, rows)
		must(err, k, i, "many rows")
		n := 0
		for rs.Next() {
			n++
			var g int32
			var m int64
			var x string
			must(rs.Scan(&g, &m, &x), k, i, "scan row")
			if int(g) != n || m != int64(n)*int64(v) || len(x) != n%50 {
				expect(false, k, i, fmt.Sprintf("row %d", n), fmt.Sprint(g, m, len(x)), fmt.Sprint(n, n*v, n%50))
			}
		}
		must(rs.Err(), k, i, "many rows")
		expect(n == rows, k, i, "row count", n, rows)

		// (e) types
		numText := fmt.Sprintf("12345678901234567890.%02d%04d", k, i)
		var num pgtype.Numeric
		must(num.Set(numText), k, i, "numeric set")
		want, _ := new(big.Rat).SetString(numText)
		ts := time.Date(2024, 2, 29, 12, 34, 56, 789012000, time.UTC).Add(time.Duration(k)*time.Hour + time.Duration(i)*time.Second)
		data := make([]byte, 258)
		for b := 0; b < 256; b++ {
			data[b] = byte(b)
		}
		data[256], data[257] = byte(k), byte(i)
		text := fmt.Sprintf("héllo wörld ✓ 日本語 🐘 ß€ c%d i%d", k, i)
		f := float64(k) + float64(i)/3.0

		var gotNum, gotNum3 pgtype.Numeric
		var gotNum3Text string
		var gotTs, gotTsDay time.Time
		var gotData []byte
		var gotMd5, gotText, gotSumText string
		var gotLen, gotOctets int32
		var gotF, gotF2, gotSum float64
		must(conn.QueryRow(ctx, "SELECT $1::numeric, $1::numeric * 3, ($1::numeric * 3)::text,"+
			" $2::timestamptz, $2::timestamptz + interval '1 day', $3::bytea, md5($3::bytea),"+
			" $4::text, length($4::text), octet_length($4::text), $5::float8, $5::float8 * 2,"+
			" 0.1::float8 + 0.2::float8, (0.1::float8 + 0.2::float8)::text",
			&num, ts, data, text, f).Scan(&gotNum, &gotNum3, &gotNum3Text, &gotTs, &gotTsDay,
			&gotData, &gotMd5, &gotText, &gotLen, &gotOctets, &gotF, &gotF2, &gotSum, &gotSumText),
			k, i, "types")
		want3 := new(big.Rat).Mul(want, big.NewRat(3, 1))
		expect(numericRat(gotNum).Cmp(want) == 0, k, i, "numeric", numericRat(gotNum).FloatString(6), numText)
		expect(numericRat(gotNum3).Cmp(want3) == 0, k, i, "numeric * 3", numericRat(gotNum3).FloatString(6), want3.FloatString(6))
		expect(gotNum3Text == want3.FloatString(6), k, i, "(numeric * 3)::text", gotNum3Text, want3.FloatString(6))
		expect(gotTs.Equal(ts), k, i, "timestamptz", gotTs, ts)
		expect(gotTsDay.Equal(ts.Add(24*time.Hour)), k, i, "timestamptz + 1 day", gotTsDay, ts.Add(24*time.Hour))
		expect(bytes.Equal(gotData, data), k, i, "bytea", hex.EncodeToString(gotData), hex.EncodeToString(data))
		sum := md5.Sum(data)
		expect(gotMd5 == hex.EncodeToString(sum[:]), k, i, "md5(bytea)", gotMd5, hex.EncodeToString(sum[:]))
		expect(gotText == text, k, i, "text", gotText, text)
		expect(int(gotLen) == utf8.RuneCountInString(text), k, i, "length(text)", gotLen, utf8.RuneCountInString(text))
		expect(int(gotOctets) == len(text), k, i, "octet_length(text)", gotOctets, len(text))
		expect(gotF == f, k, i, "float8", gotF, f)
		expect(gotF2 == f*2, k, i, "float8 * 2", gotF2, f*2)
		// float64 arithmetic, as the server does it (Go folds 0.1+0.2 as constants to 0.3)
		tenth, fifth := 0.1, 0.2
		expect(gotSum == tenth+fifth, k, i, "0.1 + 0.2", gotSum, tenth+fifth)
		expect(gotSumText == "0.30000000000000004", k, i, "(0.1 + 0.2)::text", gotSumText, "0.30000000000000004")

		// (f) a batch: every statement prepared, then all Bind/Execute pairs and one Sync,
		// inside a transaction that is rolled back
		b := &pgx.Batch{}
		b.Queue("BEGIN")
		for j := 0; j < batch; j++ {
			b.Queue("SELECT $1::int + $2::int", v, j)
			b.Queue(insert, k, 200000+i*batch+j, "batched")
		}
		b.Queue("SELECT count(*) FROM "+table+" WHERE client = $1", k)
		b.Queue("ROLLBACK")
		br := conn.SendBatch(ctx, b)
		_, err = br.Exec()
		must(err, k, i, "batch begin")
		for j := 0; j < batch; j++ {
			var s int
			must(br.QueryRow().Scan(&s), k, i, "batch select")
			expect(s == v+j, k, i, fmt.Sprintf("batch select %d", j), s, v+j)
			ct, err := br.Exec()
			must(err, k, i, "batch insert")
			expect(ct.RowsAffected() == 1, k, i, "batch insert count", ct.RowsAffected(), 1)
		}
		var bn int64
		must(br.QueryRow().Scan(&bn), k, i, "batch count")
		expect(bn == int64(i+1+batch), k, i, "batch count", bn, i+1+batch)
		_, err = br.Exec()
		must(err, k, i, "batch rollback")
		must(br.Close(), k, i, "batch close")
		count(conn, int64(i+1), "count after batch")

		// (g) an error in a batch: the queries after it are skipped until the Sync, and the
		// connection and its cached statements work afterwards
		b = &pgx.Batch{}
		b.Queue("SELECT $1::int + $2::int", v, 1)
		b.Queue("SELECT 10 / $1::int", 0)
		b.Queue("SELECT $1::int + $2::int", v, 2)
		br = conn.SendBatch(ctx, b)
		var s1, q, s2 int
		must(br.QueryRow().Scan(&s1), k, i, "batch before the error")
		expect(s1 == v+1, k, i, "batch before the error", s1, v+1)
		err = br.QueryRow().Scan(&q)
		var pgErr *pgconn.PgError
		expect(errors.As(err, &pgErr) && pgErr.Code == "22012", k, i, "batch division by zero", err, "22012")
		expect(br.QueryRow().Scan(&s2) != nil, k, i, "batch after the error", "a result", "skipped")
		br.Close()
		must(conn.QueryRow(ctx, "SELECT $1::int + $2::int", v, 2).Scan(&s2), k, i, "after the batch")
		expect(s2 == v+2, k, i, "after the failed batch", s2, v+2)
	}
}

func main() {
	dsn := fmt.Sprintf("host=%s port=%s user=%s password=%s dbname=%s",
		env("PGW_HOST", "127.0.0.1"), env("PGW_PORT", "6432"), env("PGW_USER", "app_user"),
		env("PGW_PASSWORD", ""), env("PGW_DB", "appdb"))
	ctx, cancel := context.WithTimeout(context.Background(), 140*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	for k := 1; k <= clients; k++ {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			defer func() {
				if r := recover(); r != nil {
					mu.Lock()
					defer mu.Unlock()
					if f, ok := r.(failure); ok {
						failures = append(failures, f.msg)
					} else {
						failures = append(failures, fmt.Sprintf("client %d: panic: %v", k, r))
					}
				}
			}()
			client(ctx, dsn, k)
		}(k)
	}
	wg.Wait()
	if len(failures) > 0 {
		for _, f := range failures {
			fmt.Println("FAIL " + f)
		}
		os.Exit(1)
	}
	fmt.Printf("OK pgx v4 clients=%d iters=%d checks=%d\n", clients, iters, atomic.LoadInt64(&checks))
}

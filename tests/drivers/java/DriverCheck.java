// PgJDBC through pgwarden: PGW_CLIENTS threads, each with its own connection and default
// settings (prepareThreshold 5, so the reused PreparedStatements become named server-side
// statements; extra_float_digits at startup), checks every result against values computed
// here. Prints "OK ..." and exits 0, or prints what differed and exits 1.
// Run: java -cp /usr/share/java/postgresql.jar DriverCheck.java
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.Statement;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

public class DriverCheck {
    static final String HOST = env("PGW_HOST", "127.0.0.1");
    static final String PORT = env("PGW_PORT", "6432");
    static final String USER = env("PGW_USER", "app_user");
    static final String PASSWORD = env("PGW_PASSWORD", "");
    static final String DB = env("PGW_DB", "appdb");
    static final String TABLE = env("PGW_TABLE", "drv_jdbc");
    static final int CLIENTS = Integer.parseInt(env("PGW_CLIENTS", "12"));
    static final int ITERS = Integer.parseInt(env("PGW_ITERS", "12"));
    static final int ROWS = Integer.parseInt(env("PGW_ROWS", "2000"));
    static final int BATCH = Integer.parseInt(env("PGW_BATCH", "20"));

    static final ConcurrentLinkedQueue<String> failures = new ConcurrentLinkedQueue<>();
    static final AtomicInteger checks = new AtomicInteger();
    static final ConcurrentLinkedQueue<String> floatDigitsSeen = new ConcurrentLinkedQueue<>();

    static String env(String k, String d) {
        String v = System.getenv(k);
        return v == null || v.isEmpty() ? d : v;
    }

    static void check(boolean ok, int k, int i, String what, Object got, Object want) {
        checks.incrementAndGet();
        if (!ok)
            throw new IllegalStateException(
                    "client " + k + " iter " + i + ": " + what + ": got " + got + ", want " + want);
    }

    static void eq(Object got, Object want, int k, int i, String what) {
        check(want.equals(got), k, i, what, got, want);
    }

    static String hex(byte[] b) {
        StringBuilder sb = new StringBuilder();
        for (byte x : b)
            sb.append(String.format("%02x", x));
        return sb.toString();
    }

    static String unicodeText(int k, int i) {
        return "héllo wörld ✓ 日本語 🐘 ß€ c" + k + " i" + i;
    }

    static void client(int k) throws Exception {
        Properties props = new Properties();
        props.setProperty("user", USER);
        if (!PASSWORD.isEmpty())
            props.setProperty("password", PASSWORD);
        String url = "jdbc:postgresql://" + HOST + ":" + PORT + "/" + DB;
        try (Connection c = DriverManager.getConnection(url, props)) {
            PreparedStatement doubled =
                    c.prepareStatement("SELECT ?::int * 2, ?::text || '-' || ?::text");
            PreparedStatement insert =
                    c.prepareStatement("INSERT INTO " + TABLE + " (client, iter, val) VALUES (?, ?, ?)");
            PreparedStatement count =
                    c.prepareStatement("SELECT count(*) FROM " + TABLE + " WHERE client = ?");
            PreparedStatement many = c.prepareStatement(
                    "SELECT g, g * ?::bigint, repeat('x', g % 50) FROM generate_series(1, ?) g");
            PreparedStatement types = c.prepareStatement(
                    "SELECT ?::numeric, ?::numeric * 3, ?::timestamptz,"
                    + " ?::timestamptz + interval '1 day', ?::bytea, md5(?::bytea), ?::text,"
                    + " length(?::text), octet_length(?::text), ?::float8, ?::float8 * 2,"
                    + " 0.1::float8 + 0.2::float8, (0.1::float8 + 0.2::float8)::text,"
                    + " current_setting('extra_float_digits')");
            MessageDigest md5 = MessageDigest.getInstance("MD5");

            for (int i = 0; i < ITERS; i++) {
                int v = k * 1000 + i;
                // (a) the same PreparedStatement every iteration: named S_n from the 5th on
                doubled.setInt(1, v);
                doubled.setString(2, "c" + k);
                doubled.setString(3, Integer.toString(v));
                try (ResultSet rs = doubled.executeQuery()) {
                    check(rs.next(), k, i, "doubled row", "none", "one");
                    eq(rs.getInt(1), 2 * v, k, i, "doubled");
                    eq(rs.getString(2), "c" + k + "-" + v, k, i, "tag");
                    check(!rs.next(), k, i, "doubled rows", "more", "one");
                }

                // (b) a committed transaction
                c.setAutoCommit(false);
                insert.setInt(1, k);
                insert.setInt(2, i);
                insert.setString(3, "jdbc " + k + "/" + i);
                eq(insert.executeUpdate(), 1, k, i, "insert count");
                count.setInt(1, k);
                try (ResultSet rs = count.executeQuery()) {
                    rs.next();
                    eq(rs.getLong(1), (long) (i + 1), k, i, "count in transaction");
                }
                c.commit();

                // (c) a rolled back one
                insert.setInt(1, k);
                insert.setInt(2, 100000 + i);
                insert.setString(3, "rolled back");
                eq(insert.executeUpdate(), 1, k, i, "insert count (rollback)");
                try (ResultSet rs = count.executeQuery()) {
                    rs.next();
                    eq(rs.getLong(1), (long) (i + 2), k, i, "count before rollback");
                }
                c.rollback();
                c.setAutoCommit(true);
                try (ResultSet rs = count.executeQuery()) {
                    rs.next();
                    eq(rs.getLong(1), (long) (i + 1), k, i, "count after rollback");
                }

                // (d) many rows
                many.setLong(1, v);
                many.setInt(2, ROWS);
                try (ResultSet rs = many.executeQuery()) {
                    int n = 0;
                    while (rs.next()) {
                        n++;
                        if (rs.getInt(1) != n || rs.getLong(2) != (long) n * v
                                || rs.getString(3).length() != n % 50)
                            check(false, k, i, "row " + n, rs.getInt(1) + "," + rs.getLong(2),
                                    n + "," + (long) n * v);
                    }
                    eq(n, ROWS, k, i, "row count");
                }
                // ... and through a cursor: with a fetch size inside a transaction PgJDBC binds a
                // named portal and executes it 100 rows at a time (PortalSuspended in between)
                c.setAutoCommit(false);
                many.setFetchSize(100);
                try (ResultSet rs = many.executeQuery()) {
                    int n = 0;
                    while (rs.next()) {
                        n++;
                        if (rs.getInt(1) != n || rs.getLong(2) != (long) n * v)
                            check(false, k, i, "cursor row " + n, rs.getInt(1) + "," + rs.getLong(2),
                                    n + "," + (long) n * v);
                    }
                    eq(n, ROWS, k, i, "cursor row count");
                }
                many.setFetchSize(0);
                c.commit();
                c.setAutoCommit(true);

                // (e) type round trip; server-computed values are checked against Java's own
                BigDecimal num = new BigDecimal(
                        "12345678901234567890." + String.format("%02d%04d", k, i));
                OffsetDateTime ts = OffsetDateTime.of(2024, 2, 29, 12, 34, 56, 789012000, ZoneOffset.UTC)
                        .plusHours(k).plusSeconds(i);
                byte[] bytes = new byte[258];
                for (int b = 0; b < 256; b++)
                    bytes[b] = (byte) b;
                bytes[256] = (byte) k;
                bytes[257] = (byte) i;
                String text = unicodeText(k, i);
                double f = k + i / 3.0;
                types.setBigDecimal(1, num);
                types.setBigDecimal(2, num);
                types.setObject(3, ts);
                types.setObject(4, ts);
                types.setBytes(5, bytes);
                types.setBytes(6, bytes);
                types.setString(7, text);
                types.setString(8, text);
                types.setString(9, text);
                types.setDouble(10, f);
                types.setDouble(11, f);
                try (ResultSet rs = types.executeQuery()) {
                    rs.next();
                    eq(rs.getBigDecimal(1), num, k, i, "numeric");
                    eq(rs.getBigDecimal(2), num.multiply(BigDecimal.valueOf(3)), k, i, "numeric * 3");
                    eq(rs.getObject(3, OffsetDateTime.class).toInstant(), ts.toInstant(), k, i,
                            "timestamptz");
                    eq(rs.getObject(4, OffsetDateTime.class).toInstant(), ts.plusDays(1).toInstant(),
                            k, i, "timestamptz + 1 day");
                    byte[] got = rs.getBytes(5);
                    check(Arrays.equals(got, bytes), k, i, "bytea", hex(got), hex(bytes));
                    eq(rs.getString(6), hex(md5.digest(bytes)), k, i, "md5(bytea)");
                    eq(rs.getString(7), text, k, i, "text");
                    eq(rs.getInt(8), text.codePointCount(0, text.length()), k, i, "length(text)");
                    eq(rs.getInt(9), text.getBytes(StandardCharsets.UTF_8).length, k, i,
                            "octet_length(text)");
                    eq(rs.getDouble(10), f, k, i, "float8");
                    eq(rs.getDouble(11), f * 2, k, i, "float8 * 2");
                    eq(rs.getDouble(12), 0.1 + 0.2, k, i, "0.1 + 0.2");
                    eq(rs.getString(13), "0.30000000000000004", k, i, "(0.1 + 0.2)::text");
                    floatDigitsSeen.add(rs.getString(14));
                }

                // (f) a batch: BATCH Bind/Execute pairs before one Sync
                // (PgJDBC batches inserts, not queries; the batch is rolled back below so the
                // table ends with exactly one row per iteration)
                c.setAutoCommit(false);
                for (int j = 0; j < BATCH; j++) {
                    insert.setInt(1, k);
                    insert.setInt(2, 200000 + i * BATCH + j);
                    insert.setString(3, "batch " + (v + j));
                    insert.addBatch();
                }
                int[] counts = insert.executeBatch();
                eq(counts.length, BATCH, k, i, "batch size");
                for (int n : counts)
                    eq(n, 1, k, i, "batch row count");
                try (PreparedStatement sum = c.prepareStatement(
                        "SELECT count(*), sum(iter) FROM " + TABLE + " WHERE client = ? AND iter >= ? AND iter < ?")) {
                    sum.setInt(1, k);
                    sum.setInt(2, 200000 + i * BATCH);
                    sum.setInt(3, 200000 + (i + 1) * BATCH);
                    try (ResultSet rs = sum.executeQuery()) {
                        rs.next();
                        eq(rs.getLong(1), (long) BATCH, k, i, "batch rows");
                        long want = 0;
                        for (int j = 0; j < BATCH; j++)
                            want += 200000 + i * BATCH + j;
                        eq(rs.getLong(2), want, k, i, "batch sum");
                    }
                }
                c.rollback();

                // (g) an error inside a batch: the row that exists already fails the batch,
                // which is rolled back, and the named statements still work afterwards
                for (int j = 0; j < BATCH; j++) {
                    insert.setInt(1, k);
                    insert.setInt(2, j == BATCH / 2 ? i : 300000 + i * BATCH + j);
                    insert.setString(3, "batch with a duplicate");
                    insert.addBatch();
                }
                try {
                    insert.executeBatch();
                    check(false, k, i, "batch with a duplicate", "no error", "23505");
                } catch (java.sql.BatchUpdateException e) {
                    java.sql.SQLException cause = e.getNextException() != null ? e.getNextException() : e;
                    eq(cause.getSQLState(), "23505", k, i, "batch error: " + cause.getMessage());
                }
                c.rollback();
                c.setAutoCommit(true);
                try (ResultSet rs = count.executeQuery()) {
                    rs.next();
                    eq(rs.getLong(1), (long) (i + 1), k, i, "count after the failed batch");
                }
                doubled.setInt(1, v + 1);
                doubled.setString(2, "c" + k);
                doubled.setString(3, Integer.toString(v + 1));
                try (ResultSet rs = doubled.executeQuery()) {
                    rs.next();
                    eq(rs.getInt(1), 2 * (v + 1), k, i, "doubled after the failed batch");
                }
            }
            try (Statement st = c.createStatement();
                 ResultSet rs = st.executeQuery("SHOW extra_float_digits")) {
                rs.next();
                floatDigitsSeen.add(rs.getString(1));
            }
        }
    }

    public static void main(String[] args) throws Exception {
        List<Thread> threads = new ArrayList<>();
        for (int k = 1; k <= CLIENTS; k++) {
            final int kk = k;
            Thread t = new Thread(() -> {
                try {
                    client(kk);
                } catch (Throwable e) {
                    StringBuilder sb = new StringBuilder("client " + kk + ": " + e);
                    for (Throwable cause = e.getCause(); cause != null; cause = cause.getCause())
                        sb.append("\n  caused by: ").append(cause);
                    failures.add(sb.toString());
                }
            });
            threads.add(t);
            t.start();
        }
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
        for (Thread t : threads) {
            t.join(Math.max(1, TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime())));
            if (t.isAlive())
                failures.add("a client hung");
        }
        List<String> digits = new ArrayList<>(floatDigitsSeen);
        java.util.TreeMap<String, Integer> hist = new java.util.TreeMap<>();
        for (String d : digits)
            hist.merge(d, 1, Integer::sum);
        System.out.println("extra_float_digits seen: " + hist);
        if (!failures.isEmpty()) {
            for (String f : failures)
                System.out.println("FAIL " + f);
            System.exit(1);
        }
        System.out.println("OK pgjdbc " + org.postgresql.util.DriverInfo.DRIVER_VERSION + " clients="
                + CLIENTS + " iters=" + ITERS + " checks=" + checks.get());
        System.exit(0);
    }
}

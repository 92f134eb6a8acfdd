"""The live manager over HTTP: /api/v1/<action> answers with the CLI's JSON envelope
(target.mode "serve") from the live pools, /api/v1/events lists the manager's events, and
acting (POST) needs a configured bearer token."""
import http.client
import json
import time

import psycopg

from pgfixture import free_port
from serve_helpers import Pooler, wait_for

TOKEN = "api-token-for-tests"


def call(port, path, method="GET", body=None, token=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        raw = body if isinstance(body, str) or body is None else json.dumps(body)
        conn.request(method, path, body=raw, headers=headers)
        resp = conn.getresponse()
        text = resp.read().decode()
        if resp.getheader("Content-Type", "").startswith("application/json"):
            return resp.status, json.loads(text)
        return resp.status, text
    finally:
        conn.close()


def start(pgwarden_bin, pg, token=None, **manager):
    http_port = free_port()
    settings = {"http_listen": str(http_port), "default_pool_size": "2",
                "admin_users": "postgres"}
    if token:
        settings["http_auth_token"] = token
    m = {"leak_hold_threshold": "1s", "idle_timeout": "1s", "max_kill_percentage": "100%"}
    m.update(manager)
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction", settings=settings, manager=m).start()
    p.http_port = http_port
    return p


def check_envelope(doc, action):
    assert doc["action"] == action, doc
    assert doc["target"]["mode"] == "serve", doc
    for key in ("success", "timestamp", "duration_ms", "data", "error"):
        assert key in doc, doc


def test_read_actions_answer_in_the_cli_envelope(pgwarden_bin, pg):
    p = start(pgwarden_bin, pg)
    try:
        with psycopg.connect(p.dsn(application_name="leaky-app")) as leaker, \
                psycopg.connect(p.dsn(application_name="healthy-app"), autocommit=True) as ok:
            leaker.execute("SELECT 1")
            ok.execute("SELECT 1")

            def leak_listed():
                status, doc = call(p.http_port, "/api/v1/detect-leaks")
                return status == 200 and [s for s in doc["data"]["suspected_connections"]
                                          if s["application"] == "leaky-app"] and doc
            doc = wait_for(leak_listed, what="the leak in /api/v1/detect-leaks")
            check_envelope(doc, "detect-leaks")
            assert doc["success"] is True and doc["data"]["detected"] is True
            names = [s["application"] for s in doc["data"]["suspected_connections"]]
            assert names[0] == "leaky-app" and "healthy-app" not in names, names

            status, doc = call(p.http_port, "/api/v1/monitor")
            assert status == 200, doc
            check_envelope(doc, "monitor")
            assert doc["data"]["connections"]["total"] >= 2, doc["data"]
            apps = {c["application"] for c in doc["data"]["connection_list"]}
            assert {"leaky-app", "healthy-app"} <= apps
            # One record per pool: the leaker holds a server, the healthy client does not.
            pools = doc["data"]["pools"]
            assert len(pools) == 1, pools
            assert pools[0]["database"] == "postgres" and pools[0]["pool_mode"], pools
            assert pools[0]["servers"]["active"] >= 1 and pools[0]["clients"]["idle"] >= 1, pools
            assert set(pools[0]["timing_ms"]) >= {"wait_p99", "transaction_p99", "wait_max"}

            for action in ("health-check", "auto-scale", "kill-idle", "full-analysis"):
                status, doc = call(p.http_port, f"/api/v1/{action}")
                assert status == 200, (action, doc)
                check_envelope(doc, action)
            status, doc = call(p.http_port, "/api/v1/kill-idle")
            assert doc["data"]["dry_run"] is True
            status, doc = call(p.http_port, "/api/v1/full-analysis")
            assert doc["data"]["status"] in ("warning", "critical"), doc["data"]

            status, doc = call(p.http_port, "/api/v1/events")
            events = doc["data"]["events"]
            assert any(e["event"] == "leak_suspected" and e["application"] == "leaky-app"
                       for e in events), events
            last = events[-1]["seq"]
            status, doc = call(p.http_port, f"/api/v1/events?since={last}")
            assert all(e["seq"] > last for e in doc["data"]["events"])

            status, doc = call(p.http_port, "/api/v1/nope")
            assert status == 404 and doc["success"] is False
            # Without a token configured, acting over HTTP is refused and changes nothing.
            status, doc = call(p.http_port, "/api/v1/kill-idle", "POST", {"execute": True})
            assert status == 403 and doc["error"]["code"] == "refused", doc
            assert leaker.execute("SELECT 2").fetchone()[0] == 2
            status, doc = call(p.http_port, "/api/v1/monitor", "POST", {})
            assert status == 405, doc
    finally:
        p.stop()


def test_post_kill_idle_with_token_disconnects_idle_clients(pgwarden_bin, pg):
    p = start(pgwarden_bin, pg, token=TOKEN)
    try:
        idle = psycopg.connect(p.dsn(application_name="idle-app"), autocommit=True)
        idle.execute("SELECT 1")
        time.sleep(2.2)
        status, doc = call(p.http_port, "/api/v1/kill-idle", "POST", {"execute": True})
        assert status == 401, doc  # the token is required
        status, doc = call(p.http_port, "/api/v1/kill-idle", "POST", {"execute": True},
                           token=TOKEN)
        assert status == 200, doc
        check_envelope(doc, "kill-idle")
        assert doc["data"]["dry_run"] is False
        results = {a["application"]: a["result"] for a in doc["data"]["actions"]}
        assert results.get("idle-app") == "terminated", doc["data"]
        try:
            idle.execute("SELECT 1")
            raise AssertionError("the idle client should have been disconnected")
        except psycopg.OperationalError:
            pass
        idle.close()
        status, doc = call(p.http_port, "/api/v1/kill-idle", "POST", "not json", token=TOKEN)
        assert status == 400, doc
    finally:
        p.stop()


def test_events_follow_streams_server_sent_events(pgwarden_bin, pg):
    import socket
    p = start(pgwarden_bin, pg)
    try:
        s = socket.create_connection(("127.0.0.1", p.http_port), timeout=10)
        s.sendall(b"GET /api/v1/events?follow HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        deadline = time.time() + 10
        while b"text/event-stream" not in got and time.time() < deadline:
            got += s.recv(65536)
        assert b"200 OK" in got and b"text/event-stream" in got, got
        # A leak appears while the stream is open: its event arrives on the stream.
        with psycopg.connect(p.dsn(application_name="streamed-leak")) as leaker:
            leaker.execute("SELECT 1")
            deadline = time.time() + 15
            while b"streamed-leak" not in got and time.time() < deadline:
                try:
                    got += s.recv(65536)
                except TimeoutError:
                    pass
        text = got.decode(errors="replace")
        assert "event: leak_suspected" in text and "streamed-leak" in text, text[-2000:]
        data = [ln[6:] for ln in text.splitlines() if ln.startswith("data: ")]
        assert any(json.loads(d)["application"] == "streamed-leak" for d in data)
        s.close()
        time.sleep(2.5)  # the next keepalive finds the stream's client gone (ASan: no leak)
        # The pooler keeps serving, and a new stream can start where the last one ended.
        status, doc = call(p.http_port, "/api/v1/events")
        assert status == 200
    finally:
        p.stop()


def test_repeated_dry_runs_record_each_planned_client_once(pgwarden_bin, pg):
    """GET /api/v1/kill-idle is a read anyone who may read can repeat: each dry run used to
    record (and log, at warning level) one kill_idle_planned event per planned client, so a
    loop of GETs pushed every other event out of the ring and wrote the log full. A client is
    recorded once per idle period; once it was active and idle again it is planned anew."""
    p = start(pgwarden_bin, pg)
    conns = []
    try:
        conns = [psycopg.connect(p.dsn(application_name=f"idle-{i}"), autocommit=True)
                 for i in range(3)]
        for c in conns:
            c.execute("SELECT 1")
        time.sleep(2.2)
        for _ in range(10):
            status, doc = call(p.http_port, "/api/v1/kill-idle")
            assert status == 200, doc
            planned = [a for a in doc["data"]["actions"] if a["result"] == "planned"]
            assert len(planned) == 3, doc["data"]  # every dry run still shows the plan
        status, doc = call(p.http_port, "/api/v1/events")
        kinds = [e["event"] for e in doc["data"]["events"]]
        assert kinds.count("kill_idle_planned") == 3, kinds
        assert p.log().count("kill_idle_planned") == 3, p.log()[-3000:]
        conns[0].execute("SELECT 2")  # active, then idle again: a new idle period
        time.sleep(2.2)
        call(p.http_port, "/api/v1/kill-idle")
        status, doc = call(p.http_port, "/api/v1/events")
        planned = [e for e in doc["data"]["events"] if e["event"] == "kill_idle_planned"]
        assert len(planned) == 4, planned
        assert planned[-1]["application"] == "idle-0", planned
    finally:
        for c in conns:
            c.close()
        p.stop()


def test_reading_answers_are_made_once_per_manager_look(pgwarden_bin, pg):
    """monitor, detect-leaks and full-analysis depend on the manager's latest look alone:
    requests between two looks share one answer (the same body, timestamp included), each
    action its own, and the next look makes a new one."""
    p = start(pgwarden_bin, pg)

    def three(path):
        """Three answers 30 ms apart: made anew, no two could carry the same timestamp; shared,
        at least two do, as looks are a second apart."""
        docs = []
        for _ in range(3):
            docs.append(call(p.http_port, path)[1])
            time.sleep(0.03)
        return docs

    try:
        wait_for(lambda: call(p.http_port, "/api/v1/monitor")[0] == 200, timeout=10)
        for action in ("monitor", "detect-leaks", "full-analysis"):
            docs = three(f"/api/v1/{action}")
            assert docs[0] == docs[1] or docs[1] == docs[2], (action, docs)
            time.sleep(1.5)
            later = call(p.http_port, f"/api/v1/{action}")[1]
            check_envelope(later, action)
            assert later["timestamp"] > docs[2]["timestamp"], (action, docs, later)
        # The query string is no part of these answers, nor of what they are shared by.
        docs = [call(p.http_port, f"/api/v1/monitor?x={i}")[1] for i in range(3)]
        assert docs[0] == docs[1] or docs[1] == docs[2], docs
        # A kill-idle dry run plans on the pools as they are now: never shared.
        stamps = [d["timestamp"] for d in three("/api/v1/kill-idle")]
        assert len(set(stamps)) == 3, stamps
    finally:
        p.stop()

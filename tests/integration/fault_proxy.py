"""A TCP proxy between pgwarden and PostgreSQL that injects network faults on demand, for
test_serve_fault_matrix.py (see docs/TESTING.md, "Fault matrix").

    pgwarden --(server connection)--> FaultProxy (127.0.0.1:port) --> PostgreSQL

One thread accepts; each proxied connection (a "link") gets one thread of its own that owns
both of its sockets, so no socket is ever closed under another thread's feet. The fault a
link applies is a Fault: new links take the proxy's current one, and set_fault(live=True)
re-arms every open link as well (waiting until each has picked it up). Only the
server -> pooler direction is parsed, and only for message boundaries: the 1-byte answer to
an SSLRequest or GSSENCRequest is skipped ('N') or ends parsing ('S'/'G': TLS follows).

Faults (Fault(mode, ...)):
  pass            forward both ways
  refuse          no new connection gets through: how="close" closes the listening socket
                  (ECONNREFUSED), how="rst" accepts and resets at once; open links pass
  slow_handshake  links accepted under it hold the first server bytes for `seconds`
  trickle         server -> pooler bytes one at a time, `delay` seconds apart
  stall           stop forwarding server -> pooler at the trigger for `seconds`
                  (None: until re-armed or closed), then pass
  drop            at the trigger, close both sides (FIN)
  rst             at the trigger, close both sides with SO_LINGER 0 (the pooler sees
                  ECONNRESET)
drop and rst cut `cut_delay` seconds after the bytes before the trigger were sent (0: at
once, so they may reach the pooler together with the FIN or RST).
Trigger (stall, drop, rst), counted in the bytes the pooler is sent from arming on:
at="datarow" is the end of the first such DataRow whose body contains `match` (any DataRow
when match is None), plus `after_bytes`; at="bytes" is `after_bytes` bytes in; at="now" is at
once, even on an idle link (a stall still waits for a byte to hold back). `shots` limits how
many links a fault may fire on (None: all); a link that finds no shot left passes.
arm_links() re-arms chosen links only.

Every link is recorded (Link.record()): the pooler's port (`down_port`, as in SHOW SERVERS'
local_port), the proxy's port toward PostgreSQL (`up_port`, pg_stat_activity.client_port),
when the fault fired and who closed the link: "pooler", "server", "proxy" (a fault) or
"shutdown". close() (or leaving the `with` block) stops every thread and closes every socket.
"""
import errno
import select
import socket
import struct
import threading
import time

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
MSG_DATA_ROW = b"D"

MODES = ("pass", "refuse", "slow_handshake", "trickle", "stall", "drop", "rst")
BUF_LIMIT = 1 << 18  # per direction: stop reading a side while this much waits to be sent
TICK = 0.05  # longest a link or the acceptor sleeps before looking at the proxy's state


def _poll(readers, writers, timeout):
    """select() for any descriptor number: (readable, writable) sockets. An error or hang-up
    counts as readable (the recv reports it) and as writable."""
    p = select.poll()
    socks = {}
    for s in list(readers) + list(writers):
        socks[s.fileno()] = s
    for fd, s in socks.items():
        p.register(fd, (select.POLLIN if s in readers else 0) |
                   (select.POLLOUT if s in writers else 0))
    r, w = [], []
    for fd, ev in p.poll(max(0, int(timeout * 1000))):
        s = socks[fd]
        bad = ev & (select.POLLERR | select.POLLHUP | select.POLLNVAL)
        if ev & select.POLLIN or (bad and s in readers):
            r.append(s)
        if ev & select.POLLOUT or (bad and s in writers):
            w.append(s)
    return r, w


class Fault:
    """What a link does; shared by the links armed with it, fixed but for its shots."""

    def __init__(self, mode="pass", *, seconds=None, delay=0.001, at="datarow", match=None,
                 after_bytes=0, shots=None, how="close", cut_delay=0.0):
        if mode not in MODES:
            raise ValueError(f"unknown fault mode {mode!r}")
        if at not in ("datarow", "bytes", "now"):
            raise ValueError(f"unknown trigger {at!r}")
        self.mode = mode
        self.seconds = seconds
        self.delay = delay
        self.at = at
        self.match = match.encode() if isinstance(match, str) else match
        self.after_bytes = after_bytes
        self.how = how
        self.cut_delay = cut_delay
        self._shots = shots
        self._lock = threading.Lock()

    def take_shot(self):
        """True when this fault may fire once more (and uses up one shot)."""
        with self._lock:
            if self._shots is None:
                return True
            if self._shots <= 0:
                return False
            self._shots -= 1
            return True

    def __repr__(self):
        return f"Fault({self.mode!r}, at={self.at!r}, seconds={self.seconds!r})"


PASS = Fault("pass")


class _Scanner:
    """Finds message boundaries in the server -> pooler stream, fed incrementally: records
    the end offset (absolute, in stream bytes) and body of each DataRow."""

    HOLD_LIMIT = BUF_LIMIT // 2  # a DataRow longer than this is never held back whole

    def __init__(self):
        self.offset = 0            # bytes scanned so far
        self.ssl_answer_at = None  # offset of a 1-byte SSL/GSS answer still expected
        self.raw = False           # TLS follows: no more parsing
        self.msg_start = 0         # offset where the message being scanned began
        self.data_rows = []        # (end_offset, body) of DataRows, consumed by the link
        self._hdr = b""
        self._type = None          # type of the message whose body is being scanned
        self._length = 0
        self._left = 0             # its body bytes not yet seen
        self._body = bytearray()   # a DataRow's body so far (first 64 KB, for matching)

    def hold_from(self):
        """Offset from which bytes might belong to a DataRow not yet complete."""
        if self.raw:
            return self.offset
        if self._type is None:
            return self.msg_start  # a header still arriving: its type is not known yet
        if self._type == MSG_DATA_ROW and self._length <= self.HOLD_LIMIT:
            return self.msg_start
        return self.offset

    def feed(self, data):
        i = 0
        n = len(data)
        while i < n:
            if self.raw:
                self.offset += n - i
                return
            if self.ssl_answer_at is not None and self.offset == self.ssl_answer_at:
                answer = data[i:i + 1]
                self.ssl_answer_at = None
                self.offset += 1
                self.msg_start = self.offset
                i += 1
                if answer in (b"S", b"G"):
                    self.raw = True
                continue
            if self._type is None:
                take = min(5 - len(self._hdr), n - i)
                self._hdr += data[i:i + take]
                i += take
                self.offset += take
                if len(self._hdr) == 5:
                    self._type = self._hdr[0:1]
                    (self._length,) = struct.unpack("!I", self._hdr[1:5])
                    self._left = max(self._length - 4, 0)
                    self._hdr = b""
                    self._body = bytearray()
                    if self._left == 0:
                        self._end_message()
                continue
            take = min(self._left, n - i)
            if self._type == MSG_DATA_ROW and len(self._body) < 65536:
                self._body += data[i:i + take]
            i += take
            self.offset += take
            self._left -= take
            if self._left == 0:
                self._end_message()

    def _end_message(self):
        if self._type == MSG_DATA_ROW:
            self.data_rows.append((self.offset, bytes(self._body)))
        self._type = None
        self._body = bytearray()
        self.msg_start = self.offset


class Link:
    """One proxied connection: pooler side `down`, PostgreSQL side `up`."""

    def __init__(self, proxy, link_id, down, up, fault):
        self.proxy = proxy
        self.id = link_id
        self.down = down
        self.up = up
        self.down_port = down.getpeername()[1]
        self.up_port = up.getsockname()[1]
        self.accepted_at = time.monotonic()
        self.accept_fault = fault
        self.fired_mode = None
        self.fired_at = None
        self.closed_at = None
        self.closed_by = None
        self.s2c_bytes = 0        # bytes sent to the pooler
        self.s2c_max_send = 0     # largest single send to the pooler (trickle: 1)
        self.c2s_bytes = 0
        self._scan = _Scanner()
        self._c2s_head = b""      # the pooler's first 8 bytes (SSLRequest detection)
        self._c2s_out = bytearray()
        self._s2c_in = bytearray()  # received from the server, not yet released
        self._s2c_out = bytearray()  # released, not yet sent to the pooler
        self._released = 0        # absolute offset of the end of released bytes
        self._up_eof = False
        self._pending = None      # (fault, generation) handed over by set_fault(live=True)
        self.generation = proxy._generation
        self._arm(fault, accepted=True)
        self.thread = threading.Thread(target=self._run, name=f"fault-proxy-link-{link_id}",
                                       daemon=True)

    # -- fault state ---------------------------------------------------------------------
    def _arm(self, fault, accepted=False):
        self.fault = fault
        self._armed_at = self._released  # faults concern what the pooler gets from now on
        self._trigger = None       # absolute offset at which the fault acts
        self._fired = False
        self._hold_until = None    # stall / slow_handshake: release nothing before this
        self._next_byte_at = 0.0   # trickle
        self._slow_pending = accepted and fault.mode == "slow_handshake"
        if fault.mode in ("stall", "drop", "rst"):
            if fault.at == "now":
                self._trigger = self._released
            elif fault.at == "bytes":
                self._trigger = self._armed_at + fault.after_bytes

    def rearm(self, fault, generation):
        with self.proxy._lock:
            self._pending = (fault, generation)

    def _find_trigger(self):
        rows = self._scan.data_rows
        if self._trigger is None and self.fault.at == "datarow" and \
                self.fault.mode in ("stall", "drop", "rst"):
            for end, body in rows:
                if end > self._armed_at and (self.fault.match is None or
                                             self.fault.match in body):
                    self._trigger = end + self.fault.after_bytes
                    break
        # keep only the DataRows the pooler has not been sent yet: a fault armed later
        # (say, after a stall held them back) may still fire on them
        rows[:] = [r for r in rows if r[0] > self._released]

    def _fire(self, now):
        """The trigger is reached: True when the fault acts (a shot was left)."""
        if self._fired:
            return True
        if not self.fault.take_shot():
            self._arm(PASS)
            return False
        self._fired = True
        self.fired_mode = self.fault.mode
        self.fired_at = now
        return True

    def _release(self, now):
        """Moves the bytes the fault allows from _s2c_in to _s2c_out. Returns "drop" or "rst"
        when the link must be cut now, else None."""
        f = self.fault
        self._find_trigger()
        if f.mode in ("stall", "drop", "rst"):
            if self._trigger is None:
                # Release what certainly precedes the trigger: with at="datarow" the message
                # still arriving might be the DataRow that fires, so it is held back.
                limit = self._scan.hold_from() if f.at == "datarow" else self._scan.offset
                self._move_to(limit)
                return None
            if self._released < self._trigger:
                self._move_to(self._trigger)
                return None
            if self._s2c_out:
                return None  # the bytes before the trigger reach the pooler first
            if f.mode == "stall" and not self._fired and not self._s2c_in:
                return None  # a stall starts with the first byte it holds back
            if not self._fire(now):
                self._move_to(self._scan.offset)  # no shot left: _fire re-armed with PASS
                return None
            if f.mode in ("drop", "rst"):
                if self._hold_until is None:
                    self._hold_until = now + f.cut_delay
                return f.mode if now >= self._hold_until else None
            if self._hold_until is None:
                self._hold_until = now + f.seconds if f.seconds is not None else float("inf")
            if now < self._hold_until:
                return None
            self._arm(PASS)
        elif f.mode == "slow_handshake" and self._slow_pending:
            if not self._s2c_in:
                return None
            if self._hold_until is None:
                self._hold_until = now + (f.seconds or 0)
                self.fired_mode = f.mode
                self.fired_at = now
            if now < self._hold_until:
                return None
            self._slow_pending = False
            self._hold_until = None
        elif f.mode == "trickle":
            if self._s2c_in and not self._s2c_out and now >= self._next_byte_at:
                self._move_to(self._released + 1)
                self._next_byte_at = now + f.delay
                if self.fired_mode is None:
                    self.fired_mode = f.mode
                    self.fired_at = now
            return None
        self._move_to(self._scan.offset)  # pass (and refuse: open links pass)
        return None

    def _move_to(self, offset):
        """Releases the held bytes up to the absolute stream offset."""
        n = min(offset - self._released, len(self._s2c_in))
        if n <= 0:
            return
        self._s2c_out += self._s2c_in[:n]
        del self._s2c_in[:n]
        self._released += n

    def _next_wakeup(self, now):
        t = now + TICK
        if self.fault.mode == "trickle" and self._s2c_in:
            t = min(t, max(now, self._next_byte_at))
        if self._hold_until is not None and self._hold_until != float("inf"):
            t = min(t, max(now, self._hold_until))
        return t

    # -- I/O ------------------------------------------------------------------------------
    def _on_c2s(self, data):
        self.c2s_bytes += len(data)
        if len(self._c2s_head) < 8:
            before = len(self._c2s_head)
            self._c2s_head += data[:8 - before]
            if len(self._c2s_head) == 8:
                length, code = struct.unpack("!II", self._c2s_head)
                if length == 8 and code in (SSL_REQUEST, GSSENC_REQUEST):
                    # the server answers with one byte at the current stream offset
                    self._scan.ssl_answer_at = self._scan.offset
        self._c2s_out += data

    def _close(self, by, how="fin"):
        if self.closed_by is None:
            self.closed_by = by
            self.closed_at = time.monotonic()
        for s in (self.down, self.up):
            try:
                if how == "rst":
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                else:
                    s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass

    def _run(self):
        try:
            self._loop()
        except Exception as e:  # a bug here must not go unnoticed: record it
            self.proxy.errors.append(f"link {self.id}: {e!r}")
            self._close("proxy-error")

    def _loop(self):
        self.down.setblocking(False)
        self.up.setblocking(False)
        self.down.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            if self.proxy._stop.is_set():
                self._close("shutdown")
                return
            with self.proxy._lock:
                pending, self._pending = self._pending, None
            if pending:
                self._arm(pending[0])
                self.generation = pending[1]
            now = time.monotonic()
            cut = self._release(now)
            if cut:
                self._close("proxy", "rst" if cut == "rst" else "fin")
                return
            if self._up_eof and not self._s2c_in and not self._s2c_out:
                self._close("server")
                return
            rl, wl = [], []
            if len(self._c2s_out) < BUF_LIMIT:
                rl.append(self.down)
            if not self._up_eof and len(self._s2c_in) + len(self._s2c_out) < BUF_LIMIT:
                rl.append(self.up)
            if self._c2s_out:
                wl.append(self.up)
            if self._s2c_out:
                wl.append(self.down)
            timeout = max(0.0, self._next_wakeup(now) - now)
            r, w = _poll(rl, wl, timeout)
            if self.down in r:
                try:
                    data = self.down.recv(65536)
                except (BlockingIOError, InterruptedError):
                    data = None
                except OSError as e:
                    self._close("pooler-rst" if e.errno == errno.ECONNRESET else "pooler")
                    return
                if data == b"":
                    self._close("pooler")
                    return
                if data:
                    self._on_c2s(data)
            if self.up in r:
                try:
                    data = self.up.recv(65536)
                except (BlockingIOError, InterruptedError):
                    data = None
                except OSError:
                    data = b""
                if data == b"":
                    self._up_eof = True
                elif data:
                    self._scan.feed(data)
                    self._s2c_in += data
            if self.up in w and self._c2s_out:
                try:
                    n = self.up.send(self._c2s_out)
                    del self._c2s_out[:n]
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    self._up_eof = True
                    self._c2s_out.clear()
            if self.down in w and self._s2c_out:
                try:
                    n = self.down.send(self._s2c_out)
                    del self._s2c_out[:n]
                    self.s2c_bytes += n
                    self.s2c_max_send = max(self.s2c_max_send, n)
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    self._close("pooler")
                    return

    def record(self):
        return {
            "id": self.id, "down_port": self.down_port, "up_port": self.up_port,
            "accept_mode": self.accept_fault.mode, "fired_mode": self.fired_mode,
            "fired_at": self.fired_at, "accepted_at": self.accepted_at,
            "closed_at": self.closed_at, "closed_by": self.closed_by,
            "open": self.closed_by is None, "s2c_bytes": self.s2c_bytes,
            "s2c_max_send": self.s2c_max_send, "c2s_bytes": self.c2s_bytes,
            "held_bytes": len(self._s2c_in),
        }


class FaultProxy:
    """FaultProxy(target_port, target_host="127.0.0.1", port=None); use as a context manager
    or call close()."""

    def __init__(self, target_port, target_host="127.0.0.1", port=None):
        from pgfixture import free_port
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self.errors = []            # exceptions inside the proxy's threads
        self.refused = 0            # connections refused by how="rst"
        self._fault = PASS
        self._generation = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._links = []
        self._next_id = 0
        self._listener = None
        self._listening_state = None  # what the acceptor last applied: True = listening
        self._applied = threading.Condition(self._lock)
        self._open_listener()
        self._acceptor = threading.Thread(target=self._accept_loop, name="fault-proxy-accept",
                                          daemon=True)
        self._acceptor.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- control --------------------------------------------------------------------------
    @property
    def fault(self):
        return self._fault

    def set_fault(self, fault=None, live=True, timeout=5.0, **kw):
        """Makes `fault` (or Fault(**kw)) the fault of new links; with live=True open links
        are re-armed too. Returns once every link (and the listener) has applied it."""
        if fault is None:
            fault = Fault(**kw) if kw else PASS
        elif isinstance(fault, str):
            fault = Fault(fault, **kw)
        with self._lock:
            self._generation += 1
            gen = self._generation
            self._fault = fault
            links = [lk for lk in self._links if lk.closed_by is None] if live else []
        for lk in links:
            lk.rearm(fault, gen)
        want_listening = not (fault.mode == "refuse" and fault.how == "close")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                listening_ok = self._listening_state == want_listening
            if listening_ok and all(lk.generation >= gen or lk.closed_by is not None
                                    for lk in links):
                return fault
            time.sleep(0.01)
        raise RuntimeError(f"fault proxy did not apply {fault!r} within {timeout} s")

    def arm_links(self, fault, link_ids, timeout=5.0):
        """Re-arms only the given open links with `fault`; new links keep the proxy's
        fault. Returns once each has applied it (or closed)."""
        with self._lock:
            self._generation += 1
            gen = self._generation
            links = [lk for lk in self._links if lk.id in set(link_ids)]
        for lk in links:
            lk.rearm(fault, gen)
        deadline = time.monotonic() + timeout
        while not all(lk.generation >= gen or lk.closed_by is not None for lk in links):
            if time.monotonic() > deadline:
                raise RuntimeError(f"fault proxy links did not apply {fault!r}")
            time.sleep(0.01)

    def clear(self):
        """Back to pass, for new and open links."""
        return self.set_fault(PASS)

    def links(self):
        """Records of every link so far (see Link.record)."""
        with self._lock:
            links = list(self._links)
        return [lk.record() for lk in links]

    def open_links(self):
        return [r for r in self.links() if r["open"]]

    def wait(self, predicate, timeout=10.0, what="fault proxy condition"):
        """Polls predicate(links()) until it returns something true, which is returned."""
        deadline = time.monotonic() + timeout
        while True:
            got = predicate(self.links())
            if got:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {self.links()}")
            time.sleep(0.02)

    def close(self):
        """Stops accepting, closes every link and joins every thread."""
        self._stop.set()
        self._acceptor.join(timeout=5)
        with self._lock:
            links = list(self._links)
        for lk in links:
            if lk.thread.is_alive():
                lk.thread.join(timeout=5)
        leaked = [lk.id for lk in links if lk.thread.is_alive()]
        if self._acceptor.is_alive() or leaked:
            raise RuntimeError(f"fault proxy threads did not stop: acceptor "
                               f"{self._acceptor.is_alive()}, links {leaked}")

    # -- acceptor -------------------------------------------------------------------------
    def _open_listener(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        s.setblocking(False)
        self._listener = s
        self._listening_state = True

    def _close_listener(self):
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._listening_state = False

    def _accept_loop(self):
        try:
            while not self._stop.is_set():
                fault = self._fault
                want_listening = not (fault.mode == "refuse" and fault.how == "close")
                with self._lock:
                    if want_listening and self._listener is None:
                        self._open_listener()
                    elif not want_listening and self._listener is not None:
                        self._close_listener()
                if self._listener is None:
                    time.sleep(0.01)
                    continue
                r, _ = _poll([self._listener], [], TICK)
                if not r:
                    continue
                try:
                    down, _ = self._listener.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                self._accepted(down)
        except Exception as e:
            self.errors.append(f"acceptor: {e!r}")
        finally:
            with self._lock:
                self._close_listener()

    def _accepted(self, down):
        fault = self._fault
        if fault.mode == "refuse":  # how="rst"
            self.refused += 1
            down.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            down.close()
            return
        try:
            up = socket.create_connection(self.target, timeout=5)
        except OSError:
            # PostgreSQL is not there: the pooler sees the same as a refused connection
            down.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            down.close()
            return
        with self._lock:
            self._next_id += 1
            try:
                link = Link(self, self._next_id, down, up, fault)
            except OSError:  # the pooler gave up on this connection already
                down.close()
                up.close()
                return
            self._links.append(link)
        link.thread.start()

"""A DNS server on loopback for tests of server host names: one name, whose answer the test
switches between NXDOMAIN, SERVFAIL, silence and an address."""
import socket
import struct
import threading

from pgfixture import free_port


class FakeDns:
    """A DNS server on 127.0.0.1 (UDP) for one name: mode "nxdomain", "servfail", "drop"
    (never answers: the resolver times out) or "answer" (A 127.0.0.1, TTL 1 s)."""

    def __init__(self, name):
        self.name = name.lower().rstrip(".")
        self.mode = "nxdomain"
        self.queries = 0
        self.port = free_port()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.settimeout(0.1)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(512)
            except socket.timeout:
                continue
            except OSError:
                return
            reply = self._answer(data)
            if reply:
                try:
                    self.sock.sendto(reply, peer)
                except OSError:
                    pass

    def _answer(self, q):
        if len(q) < 12:
            return None
        self.queries += 1
        (qid, flags, qdcount) = struct.unpack("!HHH", q[:6])
        pos, labels = 12, []
        while pos < len(q) and q[pos]:
            labels.append(q[pos + 1:pos + 1 + q[pos]].decode(errors="replace"))
            pos += 1 + q[pos]
        qtype = struct.unpack("!H", q[pos + 1:pos + 3])[0]
        question = q[12:pos + 5]
        qname = ".".join(labels).lower()
        mode = self.mode
        if mode == "drop":
            return None
        rd = flags & 0x0100
        rcode, answers = 3, b""
        if mode == "servfail":
            rcode = 2
        elif mode == "answer" and qname == self.name:
            rcode = 0
            if qtype == 1:  # A
                answers = struct.pack("!HHHIH", 0xC00C, 1, 1, 1, 4) + socket.inet_aton("127.0.0.1")
        header = struct.pack("!HHHHHH", qid, 0x8080 | rd | rcode, 1, 1 if answers else 0, 0, 0)
        return header + question + answers

    def close(self):
        self._stop.set()
        self.sock.close()
        self.thread.join(timeout=5)

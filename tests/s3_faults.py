"""A fault-injecting HTTP proxy in front of an S3 endpoint: the transient failures a cloud's S3 shows.

AWS S3 answers a share of requests `503 SlowDown` under load, and networks reset connections, before an answer
or in the middle of a body. The proxy forwards every request faithfully (method, path and query, headers, body;
the response streamed back) and, drawing from a seeded RNG, turns a share of them into one of those faults. It
counts what it injected, so a test can check that the faults it survived actually happened.
"""

from __future__ import annotations

import functools
import http.client
import random
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

SLOWDOWN = "slowdown"
"""Answer `503 SlowDown` with S3's XML error body, without forwarding."""
DROP = "drop"
"""Close the connection without answering, without forwarding."""
CUT = "cut"
"""Forward a GET, send its headers (full Content-Length) and half its body, then close the connection."""
KINDS = (SLOWDOWN, DROP, CUT)

_SLOWDOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>vlkd-fault</RequestId></Error>"
)
# Per connection, not end to end (RFC 9110 7.6.1): the proxy speaks each of its two connections itself. `Expect`
# too: the proxy has read the whole body before it forwards the request.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
}
_PIECE = 64 << 10


class FaultyS3Proxy:
    """`with FaultyS3Proxy(upstream, share=0.3, seed=1) as proxy:` point an S3 client at `proxy.url`.

    `share` of the requests (0 to 1) get a fault, each of a kind drawn from `kinds` (a CUT only for a GET whose
    answer has a body; other requests draw from the rest), until `limit` faults have been drawn. `faults` counts
    the injected faults by kind and `requests` the requests seen by method."""

    def __init__(
        self, upstream: str, share: float, seed: int = 0, kinds: tuple[str, ...] = KINDS, limit: int | None = None
    ) -> None:
        parsed = urlparse(upstream)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.share = share
        self.kinds = kinds
        self.limit = limit
        self._drawn = 0
        self.faults: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self._seed = seed
        self._rngs: dict[str, random.Random] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        # It notices `shutdown` within a poll: the default half second, at every test's end, adds up.
        serve = functools.partial(self._server.serve_forever, poll_interval=0.02)
        self._thread = threading.Thread(target=serve, name="s3-fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FaultyS3Proxy:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def draw(self, method: str) -> str | None:
        """The fault for the next request, or None to forward it untouched. Each method draws from its own
        stream, so the faults a run gets do not depend on how its concurrent clients interleave their requests
        (the 5th GET gets the same fate whichever task sends it)."""
        with self._lock:
            self.requests[method] += 1
            rng = self._rngs.setdefault(method, random.Random(f"{self._seed}-{method}"))
            kinds = [k for k in self.kinds if k != CUT or method == "GET"]
            if rng.random() >= self.share or not kinds or self._drawn == self.limit:
                return None
            self._drawn += 1
            return rng.choice(kinds)

    def count(self, kind: str) -> None:
        with self._lock:
            self.faults[kind] += 1


def _handler_for(proxy: FaultyS3Proxy) -> type[BaseHTTPRequestHandler]:
    return type("Handler", (_ForwardingHandler,), {"proxy": proxy})


class _ForwardingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects
    proxy: FaultyS3Proxy

    def log_message(self, *_: object) -> None:  # one line per request would drown a test's output
        pass

    def do_request(self) -> None:
        body = self._request_body()
        fault = self.proxy.draw(self.command)
        if fault == DROP:
            self.proxy.count(DROP)
            self.close_connection = True
            return
        if fault == SLOWDOWN:
            self.proxy.count(SLOWDOWN)
            self._answer_slowdown()
            return
        self._forward(body, cut=fault == CUT)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_request

    def _request_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _read_chunked(self) -> bytes:
        """A chunked request body, decoded (it goes upstream with a Content-Length)."""
        parts = []
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            parts.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers, then the blank line
            pass
        return b"".join(parts)

    def _answer_slowdown(self) -> None:
        self.send_response(503, "Slow Down")
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(_SLOWDOWN_BODY)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(_SLOWDOWN_BODY)

    def _forward(self, body: bytes, cut: bool) -> None:
        upstream = http.client.HTTPConnection(*self.proxy.upstream, timeout=60)
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                    upstream.putheader(name, value)
            if body or self.command in ("PUT", "POST"):
                upstream.putheader("Content-Length", str(len(body)))
            upstream.endheaders(body)
            self._relay(upstream.getresponse(), cut)
        finally:
            upstream.close()

    def _relay(self, answer: http.client.HTTPResponse, cut: bool) -> None:
        """Stream the upstream answer back; with `cut`, only half of a body, then close the connection."""
        length = answer.getheader("Content-Length")
        # A body without a length (chunked upstream) is read whole, to be sent with one.
        whole = None if length is not None or self.command == "HEAD" else answer.read()
        size = len(whole) if whole is not None else int(length or 0)
        send = size // 2 if cut and size >= 2 and answer.status < 300 and self.command == "GET" else size
        self.send_response_only(answer.status, answer.reason)  # upstream's own Date and Server, not a second pair
        for name, value in answer.getheaders():
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        if length is not None or whole is not None:
            self.send_header("Content-Length", str(size))
        self.end_headers()
        if self.command == "HEAD":
            return
        if whole is not None:
            self.wfile.write(whole[:send])
        else:
            self._copy(answer, send)
        if send < size:
            self.proxy.count(CUT)
            self.wfile.flush()
            self.close_connection = True

    def _copy(self, answer: http.client.HTTPResponse, amount: int) -> None:
        while amount > 0 and (piece := answer.read(min(_PIECE, amount))):
            self.wfile.write(piece)
            amount -= len(piece)

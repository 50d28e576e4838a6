"""The preview's HTTP side: the page, the MJPEG stream and the status JSON, from http.server threads.

    GET /             the page (inline CSS and JS, no external assets: it works on a Pi with no internet)
    GET /stream.mjpg  multipart/x-mixed-replace JPEGs, at most preview.max_fps, to preview.max_clients viewers
    GET /api/status   camera state, stats, MQTT state and the latest events (the page polls it every second)

Every request is checked first: with a token, the Authorization header must carry it (401 otherwise, and
no frame); without one, the Host header must name this machine (403 otherwise; see address.py). Each viewer
has its own thread with a small send buffer and a send timeout: a slow viewer gets fewer, newer frames, a
stalled one is cut off after STALL_TIMEOUT_S, and neither ever holds up the encoder or the processing loop.

Before any of that, what a client can cost without the token is bounded: at most max_clients + SPARE_CONNECTIONS
connections at once (503 and closed beyond them: a thread each), a request head of at most MAX_HEAD_BYTES
that must arrive within HEAD_TIMEOUT_S in all (431 / 408 otherwise: http.server alone reads 100 header lines
of 64 KB each, a byte every 9 s keeping the thread), and WRONG_TOKENS_PER_MIN wrong tokens a minute per
address (429 after that, without looking at the token).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import hashlib
import importlib.resources
import io
import json
import logging
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from edge.config import ConfigError
from edge.preview.address import host_header_is_loopback, is_loopback
from edge.preview.auth import authorized, load_token
from edge.preview.hub import PreviewHub

log = logging.getLogger("edge.preview")

STALL_TIMEOUT_S = 10.0  # a viewer that accepts no data this long is disconnected, freeing its place
STREAM_SNDBUF = 128 * 1024  # per viewer: a few frames in flight at most, so a slow link gets fresh ones
WAIT_FRAME_S = 5.0
REFUSAL_LOG_EVERY_S = (
    60.0  # refused requests are logged at most this often (a scanner must not fill the journal)
)
BOUNDARY = "frame"
SPARE_CONNECTIONS = 16  # beyond the viewers: page loads and status polls, and what a scanner may hold
MAX_HEAD_BYTES = 16 * 1024  # request line and headers; a browser sends 1-2 KB
HEAD_TIMEOUT_S = 10.0  # for the whole request head, however slowly it trickles in
WRONG_TOKENS_PER_MIN = 30  # per client address (a few typos and a browser retrying); then 429 for the minute
_THROTTLE_ADDRESSES = 1024  # addresses whose wrong tokens are remembered (the oldest are forgotten)


class PreviewError(RuntimeError):
    """The preview cannot start (port taken, address not on this machine): one clear line."""


def _csp_hash(html: str, tag: str) -> str:
    body = re.search(rf"<{tag}>(.*?)</{tag}>", html, re.S)
    assert body is not None, f"page.html has no <{tag}>"
    return "'sha256-" + base64.b64encode(hashlib.sha256(body.group(1).encode()).digest()).decode() + "'"


def load_page() -> tuple[bytes, str]:
    """The page and a Content-Security-Policy that allows exactly its own inline style and script."""
    html = importlib.resources.files("edge.preview").joinpath("page.html").read_text(encoding="utf-8")
    csp = (
        f"default-src 'none'; img-src 'self'; connect-src 'self'; style-src {_csp_hash(html, 'style')}; "
        f"script-src {_csp_hash(html, 'script')}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return html.encode("utf-8"), csp


class _Refusals:
    """Counts refused requests; logs the first and then at most one summary line a minute."""

    def __init__(self):
        self._lock = threading.Lock()
        self._count = 0
        self._logged_at = -REFUSAL_LOG_EVERY_S

    def note(self, status: int, client: str) -> None:
        with self._lock:
            self._count += 1
            now = time.monotonic()
            if now - self._logged_at < REFUSAL_LOG_EVERY_S:
                return
            count, self._count, self._logged_at = self._count, 0, now
        log.warning("preview: refused %d request(s) (latest: HTTP %d from %s)", count, status, client)


class _Throttle:
    """Wrong tokens per client address over the last minute: past WRONG_TOKENS_PER_MIN, 429 until it passes."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()

    def wait_s(self, address: str) -> float:
        """Seconds this address must wait before its token is looked at again; 0 when it may try now."""
        with self._lock:
            failures = self._recent(address)
            if failures is None or len(failures) < WRONG_TOKENS_PER_MIN:
                return 0.0
            return max(0.1, 60.0 - (self._clock() - failures[0]))

    def failed(self, address: str) -> None:
        with self._lock:
            failures = self._recent(address)
            if failures is None:
                failures = self._failures[address] = collections.deque(maxlen=WRONG_TOKENS_PER_MIN)
                while len(self._failures) > _THROTTLE_ADDRESSES:
                    self._failures.popitem(last=False)
            failures.append(self._clock())
            self._failures.move_to_end(address)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)

    def _recent(self, address: str):
        failures = self._failures.get(address)
        while failures and self._clock() - failures[0] >= 60.0:
            failures.popleft()
        return failures


class _Handler(BaseHTTPRequestHandler):
    """The preview's requests; make_handler gives each server its own subclass with these set."""

    hub: PreviewHub
    token: str | None  # None: no password, loopback Host only
    page: bytes
    csp: str
    refusals: _Refusals
    throttle: _Throttle

    server_version = "emotion-edge"
    sys_version = ""
    timeout = STALL_TIMEOUT_S  # also bounds a client that sends its request slowly

    def log_message(self, format, *args):
        log.debug("preview: %s %s", self.address_string(), format % args)

    def handle(self):
        """One request per connection (HTTP/1.0), its head read under a size and a time limit first."""
        self.close_connection = True
        head = self._read_head()
        if head is not None:
            self.rfile = io.BytesIO(head)
            self.handle_one_request()

    def _read_head(self) -> bytes | None:
        """The request line and headers, or None after answering a head too large or too slow."""
        data = bytearray()
        deadline = time.monotonic() + HEAD_TIMEOUT_S
        while b"\r\n\r\n" not in data and b"\n\n" not in data:
            if len(data) > MAX_HEAD_BYTES:
                self._refuse_early(431, "Request Header Fields Too Large")
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._refuse_early(408, "Request Timeout")
                return None
            try:
                self.connection.settimeout(remaining)
                chunk = self.connection.recv(4096)
            except TimeoutError:
                self._refuse_early(408, "Request Timeout")
                return None
            except OSError:
                return None
            if not chunk:  # the client gave up (or sent a head without its blank line): parse what came
                break
            data += chunk
        self.connection.settimeout(self.timeout)
        return bytes(data) if data else None

    def _refuse_early(self, status: int, reason: str) -> None:
        """Answer before the request was parsed (http.server's own replies need a parsed request)."""
        self.refusals.note(status, self.client_address[0])
        body = f"{status} {reason.lower()}\n".encode()
        head = f"HTTP/1.0 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        with contextlib.suppress(OSError):
            self.connection.settimeout(1.0)
            self.connection.sendall(head.encode() + body)

    def _send(self, status: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _refuse(self, status: int, text: str, extra: dict | None = None) -> None:
        self.refusals.note(status, self.client_address[0])
        self._send(status, f"{status} {text}\n".encode(), "text/plain; charset=utf-8", extra)

    def _allowed(self) -> bool:
        if self.token is None and not host_header_is_loopback(self.headers.get("Host")):
            self._refuse(403, "forbidden: without preview.token_file, only http://localhost:PORT/ is served")
            return False
        if self.token is None:
            return True
        address, header = self.client_address[0], self.headers.get("Authorization")
        wait = self.throttle.wait_s(address)
        if wait:  # the token is not even compared: guessing costs a minute per WRONG_TOKENS_PER_MIN tries
            self._refuse(429, "too many wrong tokens; try again later", {"Retry-After": str(int(wait) + 1)})
            return False
        if not authorized(header, self.token):
            if header:  # a browser's first request carries no header: that is no guess
                self.throttle.failed(address)
            self._refuse(
                401, "unauthorized", {"WWW-Authenticate": 'Basic realm="emotion-edge", charset="UTF-8"'}
            )
            return False
        self.throttle.succeeded(address)
        return True

    def do_GET(self):
        if not self._allowed():
            return
        path = urlsplit(self.path).path
        if path in ("/", "/index.html"):
            self._send(200, self.page, "text/html; charset=utf-8", {"Content-Security-Policy": self.csp})
        elif path == "/api/status":
            body = json.dumps(self.hub.status(), separators=(",", ":")).encode()
            self._send(200, body, "application/json")
        elif path == "/stream.mjpg":
            self._stream()
        else:
            self._send(404, b"404 not found\n", "text/plain; charset=utf-8")

    do_HEAD = do_GET

    def _stream(self) -> None:
        seq = self.hub.add_viewer()
        if seq is None:
            self._refuse(503, f"too many viewers (preview.max_clients: {self.hub.max_clients})")
            return
        peer = self.address_string()
        log.info("preview: viewer %s connected", peer)
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SNDBUF)
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            while self.command == "GET":
                got = self.hub.next_jpeg(seq, WAIT_FRAME_S)
                if got is None:  # the daemon is stopping
                    break
                seq, jpeg = got
                if jpeg is not None:
                    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                    self.wfile.write(head.encode() + jpeg + b"\r\n")
        except OSError as exc:  # gone (reset, broken pipe) or stalled past the send timeout
            log.info("preview: viewer %s disconnected (%s)", peer, type(exc).__name__)
        else:
            log.info("preview: viewer %s disconnected", peer)
        finally:
            self.hub.remove_viewer()


def make_handler(hub: PreviewHub, token: str | None) -> type[BaseHTTPRequestHandler]:
    page, csp = load_page()
    attrs = {
        "hub": hub,
        "token": token,
        "page": page,
        "csp": csp,
        "refusals": _Refusals(),
        "throttle": _Throttle(),
    }
    return type("Handler", (_Handler,), attrs)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True  # a viewer thread never keeps the daemon from exiting
    request_queue_size = 16
    max_connections = 4 + SPARE_CONNECTIONS  # set per server from preview.max_clients

    def server_activate(self):
        self._open = 0
        self._open_lock = threading.Lock()
        super().server_activate()

    def process_request(self, request, client_address):
        """A thread per connection, up to max_connections; past them a 503 and the connection closed, before
        a byte of the request is read."""
        with self._open_lock:
            full = self._open >= self.max_connections
            if not full:
                self._open += 1
        if full:
            self._turn_away(request, client_address)
            return
        try:
            super().process_request(request, client_address)
        except RuntimeError:  # no thread could be started (the unit's TasksMax=): turn it away too
            self._closed_one()
            self._turn_away(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._closed_one()

    def _closed_one(self) -> None:
        with self._open_lock:
            self._open -= 1

    @property
    def open_connections(self) -> int:
        return self._open

    def _turn_away(self, request, client_address) -> None:
        self.RequestHandlerClass.refusals.note(503, client_address[0])
        body = b"503 too many connections\n"
        with contextlib.suppress(OSError):
            request.settimeout(0.5)
            request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
                            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))  # fmt: skip
        self.shutdown_request(request)

    def handle_error(self, request, client_address):  # a dropped connection is not worth a traceback
        log.debug("preview: request from %s failed", client_address, exc_info=True)


class PreviewServer:
    def __init__(self, cfg, hub: PreviewHub, token: str | None):
        self.hub = hub
        self.token = token
        server_class = type(
            "Server",
            (_HttpServer,),
            {
                "address_family": socket.AF_INET6 if ":" in cfg.host else socket.AF_INET,
                "max_connections": int(cfg.max_clients) + SPARE_CONNECTIONS,
            },
        )
        try:
            self._httpd = server_class((cfg.host, cfg.port), make_handler(hub, token))
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise PreviewError(f"preview: cannot listen on {cfg.host}:{cfg.port}: {reason}") from None
        host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
        self.url = f"http://{host}:{self._httpd.server_address[1]}/"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.2,), name="preview-http", daemon=True
        )

    def start(self) -> PreviewServer:
        self.hub.start()
        self._thread.start()
        return self

    def offer(self, frame, result, stats, capture, event: dict | None = None) -> None:
        self.hub.offer(frame, result, stats, capture, event)

    def close(self) -> None:
        self.hub.close()
        self._httpd.shutdown()
        self._httpd.server_close()


def start_preview(config, source_id: str, labels: list[str], publishers) -> PreviewServer:
    """Listen and start serving, or raise PreviewError saying why not."""
    cfg = config.preview
    try:
        token = load_token(cfg)
    except ConfigError as exc:
        raise PreviewError(str(exc)) from None
    hub = PreviewHub(cfg, source_id, labels, publishers)
    hub.device_id = config.device_id
    server = PreviewServer(cfg, hub, token).start()
    where = "this machine only, elsewhere through ssh -L" if is_loopback(cfg.host) else "open to the network"
    access = "token required" if token else "no token"
    log.info(
        "preview: %s (%s; %s; up to %g fps, %d viewers)",
        server.url,
        where,
        access,
        cfg.max_fps,
        cfg.max_clients,
    )
    return server

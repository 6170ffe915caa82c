"""The live view: ``edgeseg run --out http://HOST:PORT`` serves the drawn frames to any browser.

Routes (GET and HEAD; any other method is 405, any other path 404):
  /              the page: the live overlay, the class legend with each class's share of the
                 newest frame's pixels, and the run's figures (FPS, latency p50/p95, frames
                 processed and dropped, uptime), refreshed about once a second from /stats.json
  /stream.mjpg   the drawn frames as MJPEG (multipart/x-mixed-replace)
  /snapshot.jpg  the newest frame
  /stats.json    the figures
Everything the page needs is in it (inline style and script, no font, no other resource), and its
Content-Security-Policy lets it fetch only from this server.

The model never waits for a viewer. The writer thread hands each drawn frame over by reference
(``write``: no copy, no encoding); a viewer's thread, when it is ready for a frame, takes the newest
one and JPEG-encodes it if no other viewer has yet, so each frame is encoded at most once and only
while someone watches. A viewer that stalls skips frames instead of queueing them; after
SEND_TIMEOUT_S without progress it is dropped. At most ``clients`` streams at once (4 unless the
URI says ``?clients=N``); past it /stream.mjpg answers 503. The server's threads run at the
helpers' lower priority (see threads.py), so the frames they encode come from the model's idle moments.

Safe by default:
- no host, ``localhost``, ``127.0.0.1`` or ``[::1]``: it listens on loopback only and answers only
  requests whose Host header names loopback, so a web page elsewhere cannot read it through DNS
  rebinding (403). From another machine: an SSH tunnel (see the README).
- any other address (``0.0.0.0``, a LAN address, a host name): every request needs the token,
  ``?token=...`` (403 without it or with a wrong one). The token is EDGESEG_LIVE_TOKEN if set,
  else generated at start, and printed once with the URL to open; the page carries it to its requests.
Checks run in this order: Host, token (403), method (405), path (404), client limit (503).

``close`` (every way out of ``edgeseg run``: end of input, q, Ctrl-C, SIGTERM) ends the server
within a second even with viewers connected, and frees the port.

The standard library's ``http.server`` serves it (ThreadingHTTPServer, one thread per connection):
a device has it already, and a few viewers need nothing more.
"""

from __future__ import annotations

import hmac
import html
import json
import os
import secrets
import select
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any, Callable, Deque, Dict, Optional, Set, Tuple
from urllib.parse import parse_qs, urlsplit

import numpy as np

from edgeseg.core.errors import EdgesegError
from edgeseg.video.sinks import VideoSink
from edgeseg.video.threads import HELPER_NICENESS, lower_priority

DEFAULT_PORT = 8080
DEFAULT_CLIENTS = 4
TOKEN_ENV = "EDGESEG_LIVE_TOKEN"
LOOPBACK_NAMES = ("", "localhost", "127.0.0.1", "::1")
JPEG_QUALITY = 80
SEND_TIMEOUT_S = 10.0  # a viewer that takes no data (or sends no request) for this long is dropped
POLL_S = 0.1  # how often the accept loop looks for close(): it ends within this
FPS_WINDOW_S = 2.0  # the page's FPS is over the last frames within this window
BOUNDARY = "edgeseg-frame"
EXTRA_CONNECTIONS = 16  # connections beyond the streams (the page, /stats.json); past them a new one is closed


class LiveAddress:
    """Where the live view listens, parsed from ``http://HOST:PORT[?clients=N]``."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        try:
            parts = urlsplit(uri)
            port = parts.port
        except ValueError:
            raise EdgesegError(f"--out {uri}: not a valid address; write http://HOST:PORT, e.g. http://0.0.0.0:8080") from None
        if parts.path not in ("", "/") or parts.fragment or parts.username or parts.password:
            raise EdgesegError(f"--out {uri}: the live view serves at the root; write http://HOST:PORT, e.g. http://0.0.0.0:8080")
        self.host = (parts.hostname or "").lower()
        self.port = DEFAULT_PORT if port is None else port
        self.clients = _clients(uri, parts.query)
        self.loopback = self.host in LOOPBACK_NAMES
        self.bind_host = "127.0.0.1" if self.host in ("", "localhost") else self.host
        self.family = socket.AF_INET6 if ":" in self.bind_host else socket.AF_INET

    def check_free(self) -> None:
        """Refuse, before the model loads, an address this machine cannot listen on."""
        probe = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
            probe.bind((self.bind_host, self.port))
        except OSError as err:
            raise EdgesegError(_bind_failure(self.uri, err)) from None
        finally:
            probe.close()


def _clients(uri: str, query: str) -> int:
    fields = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(fields) - {"clients"})
    if unknown:
        raise EdgesegError(f"--out {uri}: unknown setting {unknown[0]}; the live view takes only ?clients=N")
    text = fields.get("clients", [str(DEFAULT_CLIENTS)])[-1]
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise EdgesegError(f"--out {uri}: clients={text}: give the number of viewers allowed at once, 1 to 64")
    return int(text)


def _bind_failure(uri: str, err: OSError) -> str:
    reason = err.strerror or str(err)
    return f"--out {uri}: cannot listen there ({reason}); choose another port, or an address of this machine"


def is_live_uri(uri: str) -> bool:
    """``http://HOST:PORT``: the live view in a browser."""
    return uri.lower().startswith("http://")


def check_live(uri: str) -> None:
    """The address parses and can be listened on (``check_output`` for a live view)."""
    LiveAddress(uri).check_free()


# --- the frames and figures the run hands over ----------------------------------------------
class _Newest:
    """The newest drawn frame, and its JPEG once a viewer asked for it (encoded once per frame)."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.image: Optional[np.ndarray] = None
        self.number = 0  # frames handed over so far
        self.closed = False
        self._encoding = threading.Lock()
        self._jpeg: Tuple[int, bytes] = (0, b"")
        self.encoded = 0  # frames encoded (the benchmark and the tests read it)

    def put(self, image: np.ndarray) -> None:
        with self.changed:
            self.image = image
            self.number += 1
            self.changed.notify_all()

    def close(self) -> None:
        with self.changed:
            self.closed = True
            self.changed.notify_all()

    def wait_after(self, seen: int, timeout: float) -> bool:
        """Whether a frame newer than number ``seen`` is there (waits up to ``timeout``); False once closed."""
        with self.changed:
            self.changed.wait_for(lambda: self.number > seen or self.closed, timeout)
            return self.number > seen and not self.closed

    def jpeg(self) -> Tuple[int, bytes]:
        """(number, JPEG bytes) of the newest frame; (0, b"") before the first."""
        import cv2

        with self._encoding:
            with self.changed:
                image, number = self.image, self.number
            if image is not None and self._jpeg[0] != number:
                ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                if ok:
                    self._jpeg = (number, encoded.tobytes())
                    self.encoded += 1
            return self._jpeg


class _Figures:
    """What /stats.json reports, from the run's statistics and the newest frame's labels."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.stats: Any = None  # the run's RunStats (edgeseg.video.stats)
        self.labels: Optional[np.ndarray] = None
        self.classes: Tuple[str, ...] = ()
        self.colours: Tuple[str, ...] = ()
        self.times: Deque[float] = deque(maxlen=256)
        self.size: Optional[Tuple[int, int]] = None

    def to_dict(self, viewers: int) -> Dict[str, Any]:
        stats, labels = self.stats, self.labels
        report: Dict[str, Any] = {"uptime_s": round(time.monotonic() - self.started, 1), "viewers": viewers,
                                  "fps": round(self._recent_fps(), 2), "size": self.size}  # fmt: skip
        if stats is not None:
            latency = stats.latency_ms
            report.update(processed=stats.processed, dropped=stats.dropped, frames_in=stats.frames_in,
                          fps_run=round(stats.fps(), 2), latency_p50_ms=_rounded(latency.quantile(0.5)),
                          latency_p95_ms=_rounded(latency.quantile(0.95)),
                          model_p50_ms=_rounded(stats.model_ms.quantile(0.5)))  # fmt: skip
        report["class_shares"] = _shares(labels, len(self.classes)) if labels is not None else [0.0] * len(self.classes)
        return report

    def _recent_fps(self) -> float:
        times = list(self.times)
        if len(times) < 2 or time.monotonic() - times[-1] > FPS_WINDOW_S:
            return 0.0
        recent = [t for t in times if t >= times[-1] - FPS_WINDOW_S]
        return (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0


def _shares(labels: np.ndarray, classes: int) -> list:
    counts = np.bincount(labels.ravel(), minlength=classes)[:classes]
    return [round(float(c) / max(labels.size, 1), 5) for c in counts]


def _rounded(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 1)


# --- the sink -------------------------------------------------------------------------------
class LiveSink(VideoSink):
    """Serves the run's drawn frames and figures over HTTP while the run lasts (see the module's text)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.address = LiveAddress(uri)
        self.token = None if self.address.loopback else (os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(16))
        self.newest = _Newest()
        self.figures = _Figures()
        self.server = _Server(self)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self._serve, daemon=True, name="live view")
        self._thread.start()
        print(f"live view: {self.url()}", flush=True)

    def url(self) -> str:
        """The address to open, with the token where one is needed."""
        if self.address.loopback:
            host = f"[{self.address.bind_host}]" if ":" in self.address.bind_host else self.address.bind_host
            return f"http://{host}:{self.port}/ (this machine only; from another: ssh -L {self.port}:{host}:{self.port} THIS_HOST)"
        host = self.address.host
        if host in ("0.0.0.0", "::"):
            host = socket.gethostname() or host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/?token={self.token}"

    def describe(self, meta: Any) -> None:
        self.figures.classes = tuple(meta.classes)
        self.figures.colours = tuple("#%02x%02x%02x" % tuple(int(v) for v in rgb) for rgb in meta.palette)

    def write(self, image: np.ndarray) -> None:
        self.figures.size = (int(image.shape[1]), int(image.shape[0]))
        self.newest.put(image)

    def observe(self, stats: Any, labels: np.ndarray) -> None:
        self.figures.stats, self.figures.labels = stats, labels
        self.figures.times.append(time.monotonic())

    def close(self) -> None:
        """Stop serving: viewers' connections are cut, the port is free when this returns."""
        if self.newest.closed:
            return
        self.newest.close()
        if self._thread.is_alive():  # shutdown() would wait for ever for a loop that is not running
            self.server.shutdown()  # the accept loop ends within POLL_S
        self.server.cut_connections()
        self.server.server_close()
        self._thread.join(timeout=1.0)

    def _serve(self) -> None:
        lower_priority(HELPER_NICENESS)  # the connections' threads, started from this one, inherit it
        self.server.serve_forever(poll_interval=POLL_S)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 16

    def __init__(self, sink: LiveSink) -> None:
        self.sink = sink
        self.address_family = sink.address.family
        self.viewers = 0  # streams being served
        self.open: Set[socket.socket] = set()
        self._open_lock = threading.Lock()
        try:
            super().__init__((sink.address.bind_host, sink.address.port), _Handler)
        except OSError as err:
            raise EdgesegError(_bind_failure(sink.uri, err)) from None

    def server_bind(self) -> None:
        TCPServer.server_bind(self)  # not HTTPServer's, whose reverse DNS lookup can hang without a network
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            full = len(self.open) >= self.sink.address.clients + EXTRA_CONNECTIONS
            if not full:
                self.open.add(request)
        if full:
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self.open.discard(request)
        super().shutdown_request(request)

    def watch(self) -> bool:
        """Count one more stream, unless the client limit is reached."""
        with self._open_lock:
            if self.viewers >= self.sink.address.clients:
                return False
            self.viewers += 1
            return True

    def unwatch(self) -> None:
        with self._open_lock:
            self.viewers -= 1

    def cut_connections(self) -> None:
        with self._open_lock:
            connections = list(self.open)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)  # a viewer's thread blocked in send returns at once
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = SEND_TIMEOUT_S
    server_version = "edgeseg"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(body=False)

    def __getattr__(self, name: str) -> Callable[[], None]:
        if name.startswith("do_"):  # every other method: POST, PUT, DELETE, OPTIONS, ...
            return self._not_allowed
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        pass  # the run's own output stays readable

    def _not_allowed(self) -> None:
        if self._refused():
            return
        self.send_response(405)
        self.send_header("Allow", "GET, HEAD")
        self._plain_end(b"405 method not allowed: the live view answers GET and HEAD\n")

    def _answer(self, body: bool) -> None:
        if self._refused():
            return
        path = urlsplit(self.path).path
        route = {"/": self._page, "/stream.mjpg": self._stream, "/snapshot.jpg": self._snapshot,
                 "/stats.json": self._stats}.get(path)  # fmt: skip
        if route is None:
            self._error(404, "not found: the live view serves /, /stream.mjpg, /snapshot.jpg and /stats.json")
            return
        try:
            route(body)
        except (OSError, ValueError):  # the viewer went away, or close() cut the connection
            self.close_connection = True

    def _refused(self) -> bool:
        """403 for a Host that is not loopback (on a loopback server) or a missing or wrong token."""
        sink = self.server.sink
        if sink.address.loopback and not _loopback_host(self.headers.get("Host", "")):
            self._error(403, "forbidden: this live view answers only requests addressed to this machine's loopback")
            return True
        if sink.token is not None:
            given = parse_qs(urlsplit(self.path).query).get("token", [""])[-1]
            if not hmac.compare_digest(given.encode(), sink.token.encode()):
                self._error(403, "forbidden: open the address edgeseg run printed, with its ?token=")
                return True
        return False

    def _page(self, body: bool) -> None:
        text, policy = page(self.server.sink)
        self._send(200, "text/html; charset=utf-8", text.encode(), body, {"Content-Security-Policy": policy})

    def _stats(self, body: bool) -> None:
        sink = self.server.sink
        payload = json.dumps(sink.figures.to_dict(self.server.viewers)).encode()
        self._send(200, "application/json", payload, body)

    def _snapshot(self, body: bool) -> None:
        number, jpeg = self.server.sink.newest.jpeg()
        if not number:
            self._error(503, "no frame yet: the run has not drawn one", retry=True)
            return
        self._send(200, "image/jpeg", jpeg, body)

    def _stream(self, body: bool) -> None:
        if not self.server.watch():
            self._error(503, f"busy: {self.server.sink.address.clients} viewers already watch; try later", retry=True)
            return
        try:
            self.close_connection = True
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self._common_headers()
            self.end_headers()
            if body:
                self._frames()
        finally:
            self.server.unwatch()

    def _frames(self) -> None:
        newest, seen = self.server.sink.newest, 0
        while not newest.closed:
            if not newest.wait_after(seen, timeout=0.5):
                if self._gone():  # no frame for a while: free the viewer's place if it left
                    return
                continue
            seen, jpeg = newest.jpeg()
            head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
            self.wfile.write(head.encode() + jpeg + b"\r\n")

    def _gone(self) -> bool:
        """Whether the viewer closed its side (readable, and nothing to read)."""
        readable, _, _ = select.select([self.connection], [], [], 0)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _send(self, status: int, kind: str, payload: bytes, body: bool, headers: Optional[Dict[str, str]] = None) -> None:
        """The response; its body only for GET (HEAD gets the same headers)."""
        self.send_response(status)
        self.send_header("Content-Type", kind)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self._common_headers()
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def _error(self, status: int, message: str, retry: bool = False) -> None:
        self.send_response(status)
        if retry:
            self.send_header("Retry-After", "1")
        self._plain_end(f"{status} {message}\n".encode())

    def _plain_end(self, payload: bytes) -> None:
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self._common_headers()
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _common_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")


def _loopback_host(header: str) -> bool:
    """Whether a Host header names loopback (what a browser sends for http://127.0.0.1:PORT/). Any port:
    an SSH tunnel may forward another port of the laptop to this one."""
    value = header.strip().lower()
    host, _, port = value.rpartition(":") if not value.endswith("]") else ("", "", "")
    if not (host and port.isdigit()):
        host = value
    return host in ("localhost", "127.0.0.1", "[::1]")


# --- the page -------------------------------------------------------------------------------
_SCRIPT = """
const live = JSON.parse(document.getElementById("live").textContent);
const suffix = live.token ? "?token=" + encodeURIComponent(live.token) : "";
const byId = (id) => document.getElementById(id);
const ms = (v) => v === null || v === undefined ? "-" : v.toFixed(0) + " ms";
function uptime(s) {
  const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, sec = Math.floor(s % 60);
  return (h ? h + ":" + String(m).padStart(2, "0") : m) + ":" + String(sec).padStart(2, "0");
}
function show(stats) {
  byId("fps").textContent = stats.fps.toFixed(1);
  byId("latency").textContent = ms(stats.latency_p50_ms) + " / " + ms(stats.latency_p95_ms);
  byId("processed").textContent = stats.processed === undefined ? "-" : stats.processed;
  byId("dropped").textContent = stats.dropped === undefined ? "-" : stats.dropped;
  byId("uptime").textContent = uptime(stats.uptime_s);
  byId("viewers").textContent = stats.viewers;
  stats.class_shares.forEach((share, i) => {
    byId("bar" + i).style.width = (100 * share).toFixed(1) + "%";
    byId("share" + i).textContent = (100 * share).toFixed(1) + " %";
  });
  byId("state").textContent = "live";
}
function poll() {
  fetch("stats.json" + suffix, {cache: "no-store"})
    .then((r) => r.ok ? r.json() : Promise.reject(r.status))
    .then((stats) => { show(stats); setTimeout(poll, 1000); })
    .catch(() => { byId("state").textContent = "the run has ended"; });
}
byId("view").src = "stream.mjpg" + suffix;
poll();
"""

_STYLE = """
body { margin: 0; font: 15px system-ui, sans-serif; background: #15171a; color: #e8e8e8; }
header { padding: 10px 16px; background: #202328; display: flex; gap: 16px; align-items: baseline; }
header h1 { font-size: 17px; margin: 0; }
#state { color: #8fd18f; }
main { padding: 12px 16px; display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
#view { max-width: 100%; height: auto; background: #000; border: 1px solid #333; }
.panel { min-width: 280px; flex: 1; }
dl { display: grid; grid-template-columns: auto auto; gap: 4px 16px; margin: 0 0 14px; }
dt { color: #a8adb5; } dd { margin: 0; font-variant-numeric: tabular-nums; text-align: right; }
table { border-collapse: collapse; width: 100%; }
td { padding: 2px 4px; white-space: nowrap; font-variant-numeric: tabular-nums; }
.swatch { display: inline-block; width: 12px; height: 12px; border: 1px solid #555; vertical-align: -1px; }
td.track-cell { width: 60%; }
.track { width: 100%; background: #2a2d33; height: 10px; }
.bar { height: 10px; width: 0; }
td.share { text-align: right; width: 5em; }
"""


def _csp_hash(text: str) -> str:
    import base64
    import hashlib

    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def page(sink: LiveSink) -> Tuple[str, str]:
    """The page, with the token it was asked with (the page carries it to its requests), and its
    Content-Security-Policy (only this page's own style and script, requests to this server only)."""
    figures = sink.figures
    style = _STYLE + "".join(f".c{i} {{ background: {colour}; }}\n" for i, colour in enumerate(figures.colours))
    rows = "".join(
        f'<tr><td><span class="swatch c{i}"></span> {html.escape(name)}</td>'
        f'<td class="track-cell"><div class="track"><div class="bar c{i}" id="bar{i}"></div></div></td>'
        f'<td class="share" id="share{i}">-</td></tr>'
        for i, name in enumerate(figures.classes)
    )
    size = figures.size or (640, 480)
    settings = json.dumps({"token": sink.token}).replace("<", "\\u003c")
    text = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>edgeseg live</title><link rel="icon" href="data:,"><style>{style}</style></head>
<body><header><h1>edgeseg live</h1><span id="state">connecting</span></header>
<main><img id="view" alt="the segmented video" width="{size[0]}" height="{size[1]}">
<div class="panel"><dl>
<dt>FPS</dt><dd id="fps">-</dd><dt>latency p50 / p95</dt><dd id="latency">-</dd>
<dt>frames processed</dt><dd id="processed">-</dd><dt>frames dropped</dt><dd id="dropped">-</dd>
<dt>uptime</dt><dd id="uptime">-</dd><dt>viewers</dt><dd id="viewers">-</dd></dl>
<table aria-label="share of pixels per class">{rows}</table></div></main>
<script type="application/json" id="live">{settings}</script>
<script>{_SCRIPT}</script></body></html>
"""
    policy = (f"default-src 'none'; img-src 'self' data:; connect-src 'self'; script-src {_csp_hash(_SCRIPT)}; "
              f"style-src {_csp_hash(style)}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")  # fmt: skip
    return text, policy

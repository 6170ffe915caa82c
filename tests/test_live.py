"""The live view (`edgeseg run --out http://...`): a real `run` on a real clip in a subprocess, real
HTTP clients, and the page in a real headless Chromium. Every server binds to loopback only."""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

import browser as chromium
from conftest import ROOT, assert_one_line_error, run_cli, wait_for
from edgeseg.core.errors import EdgesegError
from edgeseg.data import resolve_dataset
from edgeseg.video.live import LiveSink

pytestmark = pytest.mark.slow
RUN_START_S = 90  # model load and the first frame, on a busy 2-core machine


@pytest.fixture(scope="module")
def meta(camvid):
    spec = resolve_dataset(f"camvid:{camvid}")

    class Meta:
        classes, palette = spec.classes, spec.palette

    return Meta


@pytest.fixture()
def sink(meta):
    """A live view on a free loopback port, fed by the test."""
    live = LiveSink("http://127.0.0.1:0")
    live.describe(meta)
    yield live
    live.close()


# --- helpers --------------------------------------------------------------------------------
class Run:
    """`edgeseg run ... --out http://127.0.0.1:0` in a subprocess; ``url`` is the address it prints."""

    def __init__(self, *args: str) -> None:
        command = [sys.executable, "-m", "edgeseg", "run", *map(str, args)]
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        assert wait_for(lambda: self.url is not None or self.process.poll() is not None, RUN_START_S), self.output()
        assert self.url is not None, self.output()
        self.port = int(self.url.split(":")[2].split("/")[0])

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def url(self) -> str | None:
        found = [line.split()[2] for line in self.lines if line.startswith("live view: ")]
        return found[0] if found else None

    def output(self) -> str:
        return "".join(self.lines)[-3000:]

    def end(self, signal_number: int | None, timeout: float = 30) -> int:
        if signal_number is not None:
            self.process.send_signal(signal_number)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()


def get(port: int, path: str, method: str = "GET", host: str = "127.0.0.1", headers: dict | None = None,
        connect: str = "127.0.0.1") -> tuple[int, dict, bytes]:  # fmt: skip
    connection = http.client.HTTPConnection(connect, port, timeout=10)
    connection.putrequest(method, path, skip_host=True)
    for name, value in {"Host": f"{host}:{port}", **(headers or {})}.items():
        if value is not None:
            connection.putheader(name, value)
    connection.endheaders()
    response = connection.getresponse()
    body = response.read() if not path.startswith("/stream.mjpg") or response.status != 200 else b""
    status, found = response.status, dict(response.getheaders())
    connection.close()
    return status, found, body


class Viewer:
    """A raw /stream.mjpg client: ``read=False`` connects, asks and then never reads a byte."""

    def __init__(self, port: int, query: str = "", read: bool = True, host: str = "127.0.0.1") -> None:
        self.socket = socket.create_connection((host, port), timeout=10)
        self.socket.sendall(f"GET /stream.mjpg{query} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        self.frames: list[bytes] = []
        self.ended = threading.Event()
        self.status = None
        if read:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        data = b""
        try:
            while True:
                chunk = self.socket.recv(1 << 16)
                if not chunk:
                    break
                data += chunk
                if self.status is None and b"\r\n" in data:
                    self.status = int(data.split(b" ", 2)[1])
                while True:  # every complete JPEG part
                    start = data.find(b"\xff\xd8")
                    end = data.find(b"\xff\xd9", start + 2) if start >= 0 else -1
                    if end < 0:
                        break
                    self.frames.append(data[start : end + 2])
                    data = data[end + 2 :]
        except OSError:
            pass
        finally:
            self.ended.set()

    def close(self) -> None:
        try:
            self.socket.shutdown(socket.SHUT_RDWR)  # close() alone waits for the reading thread's recv
        except OSError:
            pass
        self.socket.close()


def frame(number: int, size: tuple[int, int] = (360, 480)) -> np.ndarray:
    image = np.zeros((*size, 3), np.uint8)
    image[:, :, 1] = number % 256
    cv2.putText(image, str(number), (20, 60), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
    return image


def port_is_free(port: int) -> bool:
    probe = socket.socket()
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        probe.close()


# --- the page in a real browser, with `run` on a real clip -------------------------------------
def test_live_page_shows_the_run_in_chromium(browser, video_model, camvid_clip, tmp_path):
    recording = tmp_path / "rec.mp4"
    run = Run(video_model, "--source", camvid_clip, "--out", "http://127.0.0.1:0", "--out", recording, "--no-show",
              "--loop", "--realtime", "--threads", "1")  # fmt: skip
    origin = f"http://127.0.0.1:{run.port}/"
    try:
        browser.get(run.url)
        size = "const v = document.getElementById('view'); return [v.naturalWidth, v.naturalHeight];"
        assert wait_for(lambda: browser.execute_script(size) == [480, 360], 30), browser.execute_script(size)
        view = browser.find_element("id", "view")
        first = cv2.imdecode(np.frombuffer(view.screenshot_as_png, np.uint8), cv2.IMREAD_COLOR)
        processed = int(_text_when(browser, "processed", str.isdigit))
        assert wait_for(lambda: int(browser.find_element("id", "processed").text) > processed + 5, 30)
        later = cv2.imdecode(np.frombuffer(view.screenshot_as_png, np.uint8), cv2.IMREAD_COLOR)
        assert float(np.abs(first.astype(int) - later.astype(int)).mean()) > 2, "the image did not change"
        assert float(browser.find_element("id", "fps").text) > 0
        assert re.fullmatch(r"\d+ ms / \d+ ms", browser.find_element("id", "latency").text)
        shares = [float(browser.find_element("id", f"share{i}").text.split()[0]) for i in range(11)]
        assert abs(sum(shares) - 100) < 1 and max(shares) > 0
        page = chromium.screenshot(browser)
        cv2.imwrite(str(tmp_path / "live.png"), page)
        assert chromium.not_blank(page)
        assert chromium.console_errors(browser) == []
        requested = chromium.requested_urls(browser)
        assert requested and all(url.startswith(origin) or url.startswith("data:") for url in requested), requested
    finally:
        code = run.end(signal.SIGTERM)
    assert code == 143, run.output()
    assert port_is_free(run.port)
    assert recording.is_file() and cv2.VideoCapture(str(recording)).read()[0]


def _text_when(driver, element_id: str, condition) -> str:
    found = {}

    def ready() -> bool:
        found["text"] = driver.find_element("id", element_id).text
        return condition(found["text"])

    assert wait_for(ready, 20), found
    return found["text"]


def test_page_carries_the_token_to_its_requests(browser, meta, monkeypatch):
    """127.0.0.2 is loopback but not a loopback name: the view requires the token, as on 0.0.0.0."""
    monkeypatch.setenv("EDGESEG_LIVE_TOKEN", "t0k3n-for-the-test")
    live = LiveSink("http://127.0.0.2:0")
    live.describe(meta)
    feeding = threading.Thread(target=_feed, args=(live, 400), daemon=True)
    try:
        feeding.start()
        browser.get(f"http://127.0.0.2:{live.port}/?token=t0k3n-for-the-test")
        size = "const v = document.getElementById('view'); return [v.naturalWidth, v.complete];"
        assert wait_for(lambda: browser.execute_script(size)[0] == 480, 20)
        assert _text_when(browser, "state", lambda text: text == "live")
        assert chromium.console_errors(browser) == []
        assert all("token=t0k3n-for-the-test" in url for url in chromium.requested_urls(browser) if "127.0.0.2" in url)
    finally:
        live.close()


def _feed(live: LiveSink, count: int) -> None:
    for number in range(count):
        if live.newest.closed:
            return
        live.write(frame(number))
        time.sleep(0.02)


# --- the HTTP rules, each with its status code -------------------------------------------------
def test_routes_methods_and_status_codes(sink):
    port = sink.port
    status, headers, body = get(port, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html") and b'id="view"' in body
    assert "default-src 'none'" in headers["Content-Security-Policy"] and "connect-src 'self'" in headers["Content-Security-Policy"]
    assert get(port, "/snapshot.jpg")[0] == 503  # no frame yet
    sink.write(frame(1))
    status, headers, body = get(port, "/snapshot.jpg")
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and cv2.imdecode(np.frombuffer(body, np.uint8), 1).shape == (360, 480, 3)
    status, _, body = get(port, "/stats.json")
    assert status == 200 and json.loads(body)["size"] == [480, 360]
    status, headers, _ = get(port, "/stream.mjpg")
    assert status == 200 and headers["Content-Type"] == "multipart/x-mixed-replace; boundary=edgeseg-frame"
    for path in ("/index.html", "/stats", "/../etc/passwd", "/stream.mjpg/x"):
        assert get(port, path)[0] == 404, path
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
        status, headers, _ = get(port, "/", method=method)
        assert (status, headers.get("Allow")) == (405, "GET, HEAD"), method
    status, headers, body = get(port, "/", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 1000


def test_loopback_view_checks_the_host_header(sink):
    port = sink.port
    for host in ("127.0.0.1", "localhost", "[::1]"):
        assert get(port, "/stats.json", host=host)[0] == 200, host
    for host in ("evil.example", "192.168.1.10", "127.0.0.1.nip.io", "localhost.evil.example"):
        assert get(port, "/stats.json", host=host)[0] == 403, host  # DNS rebinding: another name for this address
    assert get(port, "/stats.json", headers={"Host": "127.0.0.1:9000"})[0] == 200  # an SSH tunnel from another port
    assert get(port, "/stats.json", headers={"Host": None})[0] == 403  # no Host at all
    assert get(port, "/", method="POST", host="evil.example")[0] == 403  # the host check comes first


def test_other_addresses_need_the_token(meta, monkeypatch, capsys):
    monkeypatch.delenv("EDGESEG_LIVE_TOKEN", raising=False)
    live = LiveSink("http://127.0.0.2:0")
    try:
        printed = capsys.readouterr().out
        assert printed.count(live.token) == 1 and len(live.token) >= 20 and f"?token={live.token}" in printed
        port = live.port
        for path in ("/", "/stats.json", "/snapshot.jpg", "/stream.mjpg", "/nope"):
            assert get(port, path, connect="127.0.0.2", host="127.0.0.2")[0] == 403, path
            assert get(port, path + "?token=wrong", connect="127.0.0.2", host="127.0.0.2")[0] == 403, path
        assert get(port, f"/stats.json?token={live.token}", connect="127.0.0.2", host="any.name")[0] == 200
        assert get(port, f"/nope?token={live.token}", connect="127.0.0.2", host="127.0.0.2")[0] == 404
        status, _, body = get(port, f"/?token={live.token}", connect="127.0.0.2", host="127.0.0.2")
        assert status == 200 and live.token.encode() in body
    finally:
        live.close()
    monkeypatch.setenv("EDGESEG_LIVE_TOKEN", "from-the-environment")
    live = LiveSink("http://127.0.0.2:0")
    try:
        assert get(live.port, "/stats.json?token=from-the-environment", connect="127.0.0.2", host="127.0.0.2")[0] == 200
    finally:
        live.close()


def test_client_limit_answers_503(meta):
    live = LiveSink("http://127.0.0.1:0?clients=2")
    live.describe(meta)
    try:
        live.write(frame(0))
        viewers = [Viewer(live.port), Viewer(live.port)]
        assert wait_for(lambda: all(v.frames for v in viewers), 10)
        third = Viewer(live.port)
        assert third.ended.wait(10) and third.status == 503
        assert get(live.port, "/stats.json")[0] == 200  # the limit is on streams; the page and figures still answer
        viewers[0].close()
        assert wait_for(lambda: live.server.viewers == 1, 10)
        fourth = Viewer(live.port)
        live.write(frame(1))
        assert wait_for(lambda: fourth.frames, 10) and fourth.status == 200
    finally:
        live.close()


def test_a_client_that_never_reads_does_not_hold_up_writes_or_others(sink):
    """The writer thread never waits for a viewer: 300 large frames go through while one viewer
    takes nothing (its socket buffers full) and another still gets the newest frames."""
    stalled = Viewer(sink.port, read=False)
    reader = Viewer(sink.port)
    noise = np.random.default_rng(0).integers(0, 256, (720, 1280, 3), dtype=np.uint8)  # ~1 MB a JPEG
    writes = threading.Thread(target=lambda: [sink.write(noise.copy()) or time.sleep(0.005) for _ in range(300)], daemon=True)
    writes.start()
    writes.join(timeout=60)
    assert not writes.is_alive(), "writing frames waited for a viewer"
    assert sink.server.viewers == 2 and len(reader.frames) > 10
    assert sink.newest.encoded <= sink.newest.number  # once a frame at most, however many viewers
    begin = time.monotonic()
    sink.close()
    assert time.monotonic() - begin < 1.0  # with the stalled viewer still connected
    assert reader.ended.wait(5)
    stalled.close()


def test_close_ends_streams_within_a_second_and_frees_the_port(meta):
    live = LiveSink("http://127.0.0.1:0")
    live.describe(meta)
    live.write(frame(0))
    viewers = [Viewer(live.port) for _ in range(3)]
    assert wait_for(lambda: all(v.frames for v in viewers), 10)
    begin = time.monotonic()
    live.close()
    assert time.monotonic() - begin < 1.0
    assert all(v.ended.wait(2) for v in viewers)
    assert port_is_free(live.port)


# --- `edgeseg run` ending with viewers connected ---------------------------------------------
def test_run_ends_at_end_of_input_with_viewers_including_a_stalled_one(video_model, camvid_clip, tmp_path):
    stats = tmp_path / "run.json"
    run = Run(video_model, "--source", camvid_clip, "--out", "http://127.0.0.1:0", "--no-show", "--loop",
              "--max-frames", "150", "--threads", "1", "--json", stats)  # fmt: skip
    stalled = Viewer(run.port, read=False)
    reader = Viewer(run.port)
    code = run.end(None, timeout=120)
    assert code == 0, run.output()
    report = json.loads(stats.read_text())
    assert report["processed"] == 150 and report["dropped"] == 0 and report["stopped_by"] == "end of input"
    assert reader.ended.wait(5) and len(reader.frames) > 5
    assert port_is_free(run.port)
    stalled.close()


def test_ctrl_c_ends_the_run_and_the_server(video_model, camvid_clip):
    run = Run(video_model, "--source", camvid_clip, "--out", "http://127.0.0.1:0", "--no-show", "--loop", "--realtime",
              "--threads", "1")  # fmt: skip
    reader = Viewer(run.port)
    assert wait_for(lambda: len(reader.frames) >= 3, 30), run.output()
    assert run.end(signal.SIGINT) == 130, run.output()
    assert reader.ended.wait(5) and port_is_free(run.port)


def test_bad_addresses_are_one_line_errors_before_the_model_loads(video_model, camvid_clip):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        for uri, fragment in ((f"http://127.0.0.1:{port}", "cannot listen there"),
                              ("http://127.0.0.1:99999", "not a valid address"),
                              ("http://127.0.0.1:8080/live", "serves at the root"),
                              ("http://127.0.0.1:8080?fps=3", "unknown setting fps"),
                              ("http://127.0.0.1:8080?clients=0", "clients=0")):  # fmt: skip
            done = run_cli("run", video_model, "--source", camvid_clip, "--out", uri, "--no-show", timeout=60)
            assert_one_line_error(done, f"--out {uri}", fragment)
    finally:
        taken.close()


def test_a_second_output_that_cannot_open_frees_the_first(video_model, camvid_clip):
    """Each address is free when checked, but 0.0.0.0:P and 127.0.0.1:P cannot both be listened on: the second
    fails to open after the first began serving; the first is closed and its port freed."""
    from edgeseg.video import RunOptions, run_session

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(EdgesegError, match="cannot listen there"):
        run_session(video_model, str(camvid_clip), [f"http://0.0.0.0:{port}", f"http://127.0.0.1:{port}"], RunOptions(threads=1))
    assert port_is_free(port)
    assert not [t for t in threading.enumerate() if "live" in t.name.lower()]


def test_uri_parsing():
    from edgeseg.video.live import LiveAddress

    for uri, bind, loopback in (("http://:8080", "127.0.0.1", True), ("http://localhost:8080", "127.0.0.1", True),
                                ("http://127.0.0.1:9000", "127.0.0.1", True), ("http://[::1]:8080", "::1", True),
                                ("http://0.0.0.0:8080", "0.0.0.0", False), ("http://192.168.1.5", "192.168.1.5", False),
                                ("HTTP://[::]:81", "::", False)):  # fmt: skip
        address = LiveAddress(uri)
        assert (address.bind_host, address.loopback) == (bind, loopback), uri
    assert LiveAddress("http://0.0.0.0").port == 8080 and LiveAddress("http://:1?clients=9").clients == 9

"""`affect live --serve HOST:PORT`: one local page that follows the head as it runs.

A stdlib HTTP server on a thread serves the page (inline CSS and JS, no external URL) at `/`
and server-sent events at `/events`: `update` (a prediction with latency p50/p95, drops and the
real-time factor), `frame` (the current video frame as a JPEG data URL, a few times a second),
`header` and `summary`. The page draws valence/arousal as a point with a trail on the circumplex
(an SVG, so its state is in the DOM; of a head that generates several reactions, the first),
or class probabilities as bars, one per column the update names. After `summary` the stream
ends and the page says the run is over.
"""

from __future__ import annotations

import base64
import io
import json
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from features_store.errors import UserError

FRAME_EVERY_S = 0.2  # the video frame goes out at most this often (JPEG encoding costs)

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>affect live: __TITLE__</title>
<style>
body{font:14px system-ui,sans-serif;margin:16px;background:#fafafa;color:#222}
#wrap{display:flex;gap:24px;flex-wrap:wrap}
#stats span{margin-right:16px}
.bar{height:16px;background:#4a7bd0;margin:2px 0}
.row{display:flex;align-items:center;gap:8px}
.row b{width:120px;font-weight:normal}
img{max-width:360px;border:1px solid #ccc}
</style></head>
<body data-updates="0">
<h1>affect live: __TITLE__</h1>
<div id="stats"><span id="status">connecting</span><span id="rtf"></span>
<span id="latency"></span><span id="drops"></span><span id="time"></span></div>
<div id="wrap">
<img id="frame" alt="current frame">
<svg id="circumplex" width="320" height="320" viewBox="-1.1 -1.1 2.2 2.2">
<circle cx="0" cy="0" r="1" fill="none" stroke="#999" stroke-width="0.01"/>
<line x1="-1" y1="0" x2="1" y2="0" stroke="#bbb" stroke-width="0.008"/>
<line x1="0" y1="-1" x2="0" y2="1" stroke="#bbb" stroke-width="0.008"/>
<text x="0.62" y="-0.02" font-size="0.08">valence +</text>
<text x="0.02" y="-1.0" font-size="0.08">arousal +</text>
<polyline id="trail" fill="none" stroke="#e0803080" stroke-width="0.02" points=""/>
<circle id="point" cx="0" cy="0" r="0.05" fill="#d04a4a" visibility="hidden"/>
</svg>
<div id="bars"></div>
</div>
<script>
const TRAIL = 50, trail = [];
let updates = 0;
const $ = id => document.getElementById(id);
const clamp = v => Math.max(-1, Math.min(1, v));
const events = new EventSource("/events");
events.addEventListener("open", () => { $("status").textContent = "live"; });
events.addEventListener("update", e => {
  const msg = JSON.parse(e.data), p = msg.prediction;
  updates += 1;
  document.body.dataset.updates = updates;
  $("rtf").textContent = "real-time factor " + p.rtf;
  $("latency").textContent = "latency p50 " + (msg.p50 || 0).toFixed(1) + " ms, p95 " +
    (msg.p95 || 0).toFixed(1) + " ms";
  $("drops").textContent = "dropped " + p.drops;
  $("time").textContent = "t " + p.time_s.toFixed(2) + " s";
  if (msg.kind === "va") {
    if (p.sample !== undefined && p.sample !== 0) return;  // REGNN: the first reaction only
    const x = clamp(p.valence), y = -clamp(p.arousal);
    trail.push(x.toFixed(4) + "," + y.toFixed(4));
    if (trail.length > TRAIL) trail.shift();
    $("trail").setAttribute("points", trail.join(" "));
    const point = $("point");
    point.setAttribute("cx", x.toFixed(4));
    point.setAttribute("cy", y.toFixed(4));
    point.setAttribute("visibility", "visible");
  } else {  // class probabilities (the header's columns) as bars; names are text, not markup
    $("circumplex").style.display = "none";
    const bars = $("bars");
    bars.replaceChildren(...(msg.columns || []).map(name => {
      const v = Number(p[name]), row = document.createElement("div");
      const label = document.createElement("b"), bar = document.createElement("div");
      row.className = "row";
      row.dataset.value = v.toFixed(4);
      label.textContent = name;
      bar.className = "bar";
      bar.style.width = Math.round(300 * Math.max(0, Math.min(1, v))) + "px";
      row.append(label, bar, v.toFixed(2));
      return row;
    }));
  }
});
events.addEventListener("frame", e => { $("frame").src = e.data; });
events.addEventListener("summary", e => {
  const s = JSON.parse(e.data);
  $("status").textContent = "ended (" + s.end + "): " + s.frames + " frames, " +
    s.predictions + " predictions";
  document.body.dataset.ended = "1";
  events.close();
});
</script>
</body></html>
"""


class LivePage:
    """The page's server; `publish` sends a message to every connected page."""

    def __init__(self, address: str, title: str) -> None:
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit():
            raise UserError(f"--serve {address!r}: expected HOST:PORT (e.g. 127.0.0.1:8765)")
        self.page = PAGE.replace("__TITLE__", _html_escape(title)).encode()
        self.clients: list[queue.Queue] = []
        self.lock = threading.Lock()
        self.last_frame = 0.0
        self.ended = False
        page = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args) -> None:  # noqa: A002 (stdlib's name)
                return  # requests are not news on the console

            def do_GET(self) -> None:  # noqa: N802 (stdlib's name)
                if self.path == "/":
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(page.page)))
                    self.end_headers()
                    self.wfile.write(page.page)
                elif self.path == "/events":
                    page._stream(self)
                else:
                    self.send_error(404)

        try:
            self.server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
        except OSError as exc:
            raise UserError(f"--serve {address}: cannot listen ({exc.strerror or exc})") from None
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       name="affect-live-page")
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/"

    def connected(self) -> int:
        with self.lock:
            return len(self.clients)

    def _stream(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.end_headers()
        messages: queue.Queue = queue.Queue()
        with self.lock:
            self.clients.append(messages)
        try:
            handler.wfile.write(b": connected\n\n")
            handler.wfile.flush()
            while True:
                event, data = messages.get()
                handler.wfile.write(f"event: {event}\ndata: {data}\n\n".encode())
                handler.wfile.flush()
                if event == "summary":
                    return  # the run is over: the page closes its side
        except (BrokenPipeError, ConnectionResetError):
            return  # the page went away
        finally:
            with self.lock:
                self.clients.remove(messages)

    def publish(self, message: dict, image: np.ndarray | None = None) -> None:
        """`{"prediction": ...}`, `{"header": ...}` or `{"summary": ...}`, and maybe a frame."""
        if "summary" in message:
            self._send("summary", json.dumps(message["summary"]))
            return
        if "header" in message:
            self._send("header", json.dumps(message["header"]))
            return
        self._send("update", json.dumps(message))
        now = time.perf_counter()
        if image is not None and now - self.last_frame >= FRAME_EVERY_S and self.connected():
            self.last_frame = now
            self._send("frame", _jpeg_data_url(image))

    def _send(self, event: str, data: str) -> None:
        with self.lock:
            for messages in self.clients:
                messages.put((event, data))

    def close(self, linger_s: float = 2.0) -> None:
        """Let connected pages read the summary (up to `linger_s`), then stop serving."""
        deadline = time.perf_counter() + linger_s
        while self.connected() and time.perf_counter() < deadline:
            time.sleep(0.05)
        self.server.shutdown()
        self.server.server_close()


def _jpeg_data_url(image: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=70)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _html_escape(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))

"""The `affect live --serve` page in a real browser: it connects, follows the updates and draws
the valence/arousal point; it loads nothing from elsewhere."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import urllib.request

import numpy as np
import pytest

from pipelines.live.page import LivePage

UPDATES = 20


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_page_holds_no_external_url():
    page = LivePage("127.0.0.1:0", title="trm - <camera>")
    try:
        html = urllib.request.urlopen(page.url, timeout=10).read().decode()
    finally:
        page.close(linger_s=0)
    assert "&lt;camera&gt;" in html  # the title is text, not markup
    # no src/href at all, and no URL but the page's own /events
    assert not re.search(r"\b(src|href)\s*=\s*\"", html), html
    assert not re.search(r"https?://|//[a-z]", html.replace("/events", "")), html


def dom_after(tmp_path, messages: list[dict], image: np.ndarray | None = None) -> str:
    """The page's DOM in headless chromium after `messages` and a summary were published."""
    if chromium() is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    page = LivePage("127.0.0.1:0", title="live")
    browser = subprocess.Popen(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-dev-shm-usage", "--no-first-run",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=60000",
         "--dump-dom", page.url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not page.connected():
            assert time.monotonic() < deadline and browser.poll() is None, "page never connected"
            time.sleep(0.05)
        for message in messages:
            page.publish(message, image=image)
        page.publish({"summary": {"frames": len(messages), "predictions": len(messages),
                                  "end": "end of media"}})
        dom, errors = browser.communicate(timeout=120)
    finally:
        if browser.poll() is None:
            browser.kill()
        page.close(linger_s=0)
    assert browser.returncode == 0, errors[-2000:]
    return dom


def test_page_in_chromium_receives_updates_and_draws_the_point(tmp_path):
    frame = np.zeros((48, 64, 3), np.uint8)
    messages = []
    for k in range(UPDATES):  # a point that ends at valence 0.5, arousal -0.25
        value = (k + 1) / UPDATES
        messages.append({"prediction": {"time_s": k / 25, "valence": 0.5 * value,
                                        "arousal": -0.25 * value, "latency_ms": 12.0,
                                        "drops": 3, "rtf": 1.2},
                         "kind": "va", "p50": 11.0, "p95": 14.0})
    # REGNN's other generated reactions of the same frame: counted, not drawn
    messages.append({"prediction": {**messages[-1]["prediction"], "sample": 1, "valence": -0.9,
                                    "arousal": 0.9}, "kind": "va", "p50": 11.0, "p95": 14.0})
    dom = dom_after(tmp_path, messages, image=frame)
    assert f'data-updates="{UPDATES + 1}"' in dom, dom[:3000]
    assert 'data-ended="1"' in dom
    point = re.search(r'<circle id="point"[^>]*>', dom).group(0)
    assert 'cx="0.5000"' in point and 'cy="0.2500"' in point and 'visible' in point, point
    trail = re.search(r'<polyline id="trail"[^>]*points="([^"]*)"', dom).group(1)
    assert len(trail.split()) == UPDATES
    assert "dropped 3" in dom and "latency p50 11.0 ms, p95 14.0 ms" in dom
    assert 'src="data:image/jpeg;base64,' in dom  # the video frame came over the events


def test_page_in_chromium_draws_class_probabilities_as_bars(tmp_path):
    """A classifier's window (temporal_attention, tpn_awm): one bar per class, named as the
    update's columns say, the last window's probabilities; a class name is text, not markup."""
    classes = ["neutral", "<b>happy</b>", "sad"]
    messages = []
    for k in range(UPDATES):  # the last window: 0.2, 0.7, 0.1
        last = k == UPDATES - 1
        values = [0.2, 0.7, 0.1] if last else [0.5, 0.25, 0.25]
        messages.append({"prediction": {"time_s": k / 2, "window_start_s": k / 2,
                                        "window_end_s": k / 2 + 2.0,
                                        **dict(zip(classes, values)), "latency_ms": 30.0,
                                        "drops": 0, "rtf": 2.0},
                         "kind": "classes", "columns": classes, "p50": 30.0, "p95": 31.0})
    dom = dom_after(tmp_path, messages)
    assert f'data-updates="{UPDATES}"' in dom and 'data-ended="1"' in dom
    rows = re.findall(r'<div class="row" data-value="([^"]*)"><b>([^<]*)</b>'
                      r'<div class="bar" style="width: (\d+)px;"></div>', dom)
    assert rows == [("0.2000", "neutral", "60"), ("0.7000", "&lt;b&gt;happy&lt;/b&gt;", "210"),
                    ("0.1000", "sad", "30")], dom[:3000]
    assert 'style="display: none;"' in re.search(r'<svg id="circumplex"[^>]*>', dom).group(0)

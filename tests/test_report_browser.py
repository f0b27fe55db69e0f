"""report.html renders in a real browser: headless Chromium screenshots it and dumps its DOM.

Skipped when no Chromium is installed (Debian: `apt-get install chromium`).
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from sampler_bench.report import render

from test_report import FakeResults

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run")


@pytest.fixture(scope="module")
def report_html(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("headless Chromium not found on PATH (chromium or chromium-browser); install it with "
                    "`apt-get install chromium` to check that report.html renders in a browser")
    r = FakeResults()
    for b in (4, 8, 16):
        for solver, p in (("euler", 1), ("heun", 2)):
            cid = r.cell("gmm2d", solver, b, order=p)
            r.metric(cid, "endpoint_rmse", 2.0 * b ** -p)
            r.metric(cid, "fd", 0.01 + 1.0 / b ** p)
    out = tmp_path_factory.mktemp("browser")
    return out, render(*r.frames(), out / "report", title="Browser check")["html"]


def chromium(out, *args) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={out / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120)


def test_report_html_screenshot_in_headless_chromium_is_not_blank(report_html):
    out, html = report_html
    shot = out / "report.png"
    chromium(out, f"--screenshot={shot}", "--window-size=1280,2000", html.as_uri())
    assert shot.is_file(), "Chromium wrote no screenshot"
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (2000, 1280)
    # A blank (or error) page is one flat colour; the report has text, tables and figures.
    assert pixels.std() > 20 and (pixels < 128).mean() > 0.01


def test_report_html_dom_in_headless_chromium_holds_the_tables_and_embedded_figures(report_html):
    out, html = report_html
    dom = chromium(out, "--dump-dom", html.as_uri()).stdout
    assert "<h1>Browser check</h1>" in dom
    assert dom.count("<table>") >= 4 and 'class="best"' in dom
    assert dom.count('src="data:image/png;base64,') == 4

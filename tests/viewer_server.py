"""The real review service on a free loopback port, and headless Chromium on its viewer, for browser tests."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image
from scipy import ndimage

from spinedx.serve.app import create_app
from spinedx.serve.settings import ServeSettings

CHROMIUM = Path("/usr/bin/chromium")
TOKEN = "browser-test-token"
REVIEWER = "Dr. Browser Test"
STARTUP_S = 30.0


def require_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (install Debian's chromium to run the viewer's browser tests)")


@dataclass
class RunningServer:
    url: str

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)

    def wait_done(self, study_id: str, timeout_s: float = 120.0) -> dict:
        with self.client() as client:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                study = client.get(f"/api/studies/{study_id}").raise_for_status().json()
                if study["status"] in ("done", "failed"):
                    assert study["status"] == "done", study["error"]
                    return study
                time.sleep(0.3)
        raise AssertionError(f"study {study_id} not analysed within {timeout_s} s")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def review_server(data_dir: Path) -> Iterator[RunningServer]:
    """``create_app`` served by uvicorn in a thread on 127.0.0.1, stopped on exit."""
    app = create_app(ServeSettings(data_dir=data_dir, token=TOKEN))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the review server did not start")
        time.sleep(0.05)
    try:
        yield RunningServer(f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextmanager
def chromium_page(base_url: str) -> Iterator:
    """A page of headless Chromium (Debian's binary, never a downloaded one), signed in to the viewer."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900}, device_scale_factor=1)
            page.goto(base_url + "/")
            page.fill("input[name=token]", TOKEN)
            page.fill("input[name=reviewer]", REVIEWER)
            page.click("button[type=submit]")
            page.wait_for_selector("section.studies")
            yield page
        finally:
            browser.close()


def open_study(page, study_id: str) -> None:
    """Opens a study from the list and waits until every slice and overlay is loaded and the panel drawn."""
    page.click(f"tr[data-study='{study_id}'] button")
    page.wait_for_selector(".finding.cursor")
    page.wait_for_selector("[data-testid=overlay][data-layers=loaded]", state="attached")
    page.wait_for_function(
        "() => { const c = document.querySelector('[data-testid=cache-line]');"
        " return c && c.textContent.startsWith('all '); }"
    )


def mask_colour(page, label: str) -> tuple[np.ndarray, float]:
    """The legend's colour and opacity of a mask label, as the page draws it."""
    item = page.locator(f".legend-item[data-label='{label}']")
    colour = np.array([int(v) for v in item.get_attribute("data-color").split(",")], dtype=float)
    return colour, float(item.get_attribute("data-alpha"))


class Screen:
    """Screenshots of the viewport, sampled at image pixel positions.

    The mapping is worked out here, not asked from the page: Cornerstone fits the whole image into
    the element, centred, and zooms about the centre.
    """

    def __init__(self, page, image_size: tuple[int, int]):
        self.page = page
        self.width, self.height = image_size
        self.box = page.locator("[data-testid=viewport]").bounding_box()

    def to_screen(self, x: float, y: float, zoom: float = 1.0) -> tuple[float, float]:
        scale = min(self.box["width"] / self.width, self.box["height"] / self.height) * zoom
        return (
            self.box["width"] / 2 + (x - self.width / 2) * scale,
            self.box["height"] / 2 + (y - self.height / 2) * scale,
        )

    def on_screen(self, x: float, y: float, zoom: float = 1.0, margin: int = 3) -> bool:
        sx, sy = self.to_screen(x, y, zoom)
        return margin <= sx < self.box["width"] - margin and margin <= sy < self.box["height"] - margin

    def grab(self) -> np.ndarray:
        self.page.wait_for_timeout(150)  # one animation frame for the overlay canvas
        png = self.page.screenshot(clip=self.box)
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=float)

    def sample(self, shot: np.ndarray, x: float, y: float, zoom: float = 1.0) -> np.ndarray:
        """Median RGB of the 5x5 screen pixels at image position (x, y)."""
        sx, sy = (int(round(v)) for v in self.to_screen(x, y, zoom))
        return np.median(shot[sy - 2 : sy + 3, sx - 2 : sx + 3].reshape(-1, 3), axis=0)


def deepest_point(region: np.ndarray, box: list[float]) -> tuple[float, float] | None:
    """The (x, y) centre of the pixel of ``region`` inside ``box`` farthest from the region's edge.

    A point at least 3 px deep, so a correct overlay is unambiguous there; None if there is none.
    """
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    inside = np.zeros_like(region, dtype=bool)
    inside[y0:y1, x0:x1] = region[y0:y1, x0:x1]
    depth = ndimage.distance_transform_edt(inside)
    y, x = np.unravel_index(np.argmax(depth), depth.shape)
    return (x + 0.5, y + 0.5) if depth[y, x] >= 3 else None

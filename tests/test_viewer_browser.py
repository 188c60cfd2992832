"""The review viewer end to end in real headless Chromium, against the real service.

A synthetic MRI slice is uploaded through the page and analysed by the bundled models; the mask
and heatmap overlays are toggled and checked on screen (the disc colour lands at each disc box
centre, also zoomed in), one Pfirrmann grade is corrected and one finding rejected by keyboard,
and after a reload both decisions are shown by the page and stored by the service.
Set SPINEDX_UPDATE_SCREENSHOT=1 to rewrite docs/img/viewer.png from this run.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from viewer_server import (
    REVIEWER,
    Screen,
    chromium_page,
    deepest_point,
    mask_colour,
    open_study,
    require_chromium,
    review_server,
)

SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "img" / "viewer.png"
COLOUR_TOLERANCE = 30


@pytest.fixture(scope="module")
def synthetic_slice(tmp_path_factory) -> Path:
    from spinedx.synth.mri import generate_mri_dataset

    root = tmp_path_factory.mktemp("viewer-synth")
    generate_mri_dataset(root, n_patients=1, seed=3, sequences=("t2",))
    return root / "images" / "1_t2.png"


def _row(page, finding: str):
    return page.locator(f"li.finding[data-finding='{finding}']")


def _overlays_shown(page) -> set[str]:
    return set((page.get_attribute("[data-testid=overlay]", "data-visible") or "").split())


def test_upload_overlays_keyboard_review_and_reload(tmp_path, synthetic_slice):
    require_chromium()
    with review_server(tmp_path / "data") as server, chromium_page(server.url) as page:
        page.set_input_files("input[data-testid=upload]", str(synthetic_slice))
        row = page.wait_for_selector("tr[data-status=done]", timeout=120_000)
        study_id = row.get_attribute("data-study")
        with server.client() as client:
            findings = client.get(f"/api/studies/{study_id}/findings").raise_for_status().json()
        discs = sorted(findings["discs"], key=lambda d: d["box"][1] + d["box"][3])  # head to foot, as shown
        assert len(discs) >= 3
        assert discs[0].get("evidence"), "the analysis wrote no heatmap for the first level"

        open_study(page, study_id)
        assert _overlays_shown(page) == {"boxes"}
        screen = Screen(page, (findings["input"]["width"], findings["input"]["height"]))
        disc_colour, alpha = mask_colour(page, "disc")
        with server.client() as client:
            label_map = np.asarray(
                Image.open(io.BytesIO(client.get(f"/api/studies/{study_id}/files/masks.png").content))
            )
            labels = client.get(f"/api/studies/{study_id}/files/labels.json").json()
        disc_label = next(int(value) for value, name in labels.items() if name == "disc")
        points = [deepest_point(label_map == disc_label, d["box"]) for d in discs]
        assert sum(p is not None for p in points) >= len(discs) // 2, "the mask misses most discs"

        # Window/level by left drag changes the picture; Z resets view and window.
        page.keyboard.press("l")  # boxes off, so the image alone shows, then the image and the mask
        before = screen.grab()
        middle = (screen.box["x"] + screen.box["width"] / 2, screen.box["y"] + screen.box["height"] / 2)
        page.mouse.move(*middle)
        page.mouse.down()
        page.mouse.move(middle[0] + 120, middle[1] + 60, steps=6)
        page.mouse.up()
        assert np.abs(screen.grab() - before).mean() > 5
        page.keyboard.press("z")

        # The mask lands on the anatomy: deep inside each disc's segment, the screen shows the image
        # under the disc colour at the legend's opacity; zoomed in (+), it still does.
        for zoom in (1.0, 1.25):
            if zoom != 1.0:
                page.keyboard.press("+")
            plain = screen.grab()
            page.keyboard.press("m")
            assert "mask" in _overlays_shown(page)
            masked = screen.grab()
            for x, y in (p for p in points if p and screen.on_screen(*p, zoom)):
                expected = screen.sample(plain, x, y, zoom) * (1 - alpha) + disc_colour * alpha
                assert np.abs(screen.sample(masked, x, y, zoom) - expected).max() < COLOUR_TOLERANCE, (
                    x,
                    y,
                    zoom,
                )
            page.keyboard.press("m")
        page.keyboard.press("z")  # reset the view

        # The heatmap of the selected level (the first) shows and changes the picture on its disc.
        page.keyboard.press("m")
        masked = screen.grab()
        page.keyboard.press("g")
        assert page.get_attribute("button[data-overlay=heatmap]", "aria-pressed") == "true"
        assert {"mask", "heatmap"} <= _overlays_shown(page)
        heated = screen.grab()
        (left, top), (right, bottom) = (
            screen.to_screen(*corner) for corner in np.reshape(discs[0]["box"], (2, 2))
        )
        change = np.abs(heated - masked).max(axis=2)[int(top) : int(bottom), int(left) : int(right)]
        assert change.mean() > 10

        # Keyboard review: the cursor starts on the first level's disc; ↓ goes to the second level.
        first, second = discs[0]["level"], discs[1]["level"]
        assert page.get_attribute(".finding.cursor", "data-finding") == f"{first}:disc"
        page.keyboard.press("ArrowDown")
        model_grade = discs[1]["grades"]["pfirrmann"]["grade"]
        corrected = model_grade % 5 + 1
        page.keyboard.press(str(corrected))
        assert _row(page, f"{second}:pfirrmann").get_attribute("class").split().count("pending") == 1
        page.keyboard.press("Enter")
        page.wait_for_selector(f"li.finding.decided[data-finding='{second}:pfirrmann']")
        # Enter moved to the next finding without a decision: the level's herniation.
        assert page.get_attribute(".finding.cursor", "data-finding") == f"{second}:herniation"
        page.keyboard.press("r")
        page.keyboard.press("Enter")
        page.wait_for_selector(f"li.finding.decided[data-finding='{second}:herniation']")
        if os.environ.get("SPINEDX_UPDATE_SCREENSHOT") == "1":
            page.keyboard.press("l")  # the levels back on, with the mask and heatmap
            page.wait_for_selector(".message:not(.shown)", state="attached")
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))

        page.reload()
        page.wait_for_selector(".finding.cursor")
        page.keyboard.press("ArrowDown")
        pfirrmann, herniation = _row(page, f"{second}:pfirrmann"), _row(page, f"{second}:herniation")
        assert json.loads(pfirrmann.get_attribute("data-value")) == corrected
        assert json.loads(herniation.get_attribute("data-value")) is False
        for row in (pfirrmann, herniation):
            assert row.get_attribute("data-source") == "person"
            assert row.get_attribute("data-decided") == "true"
        assert page.text_content("[data-testid=review-progress]").startswith("2 / ")

        page.click("text=← Studies")
        row = page.locator(f"tr[data-study='{study_id}'] td.review-progress")
        assert row.text_content().strip().startswith("2/")

        # Signing out forgets the token; a wrong one is refused at the form.
        page.click("text=Sign out")
        page.fill("input[name=token]", "not-the-token")
        page.fill("input[name=reviewer]", REVIEWER)
        page.click("button[type=submit]")
        page.wait_for_selector(".form-error:has-text('The server refused this token.')")

        with server.client() as client:
            history = client.get(f"/api/studies/{study_id}/reviews").raise_for_status().json()
        assert [(r["finding"], r["action"], r["before"], r["after"], r["reviewer"], r["source"]) for r in history] == [
            (f"{second}:pfirrmann", "correct", model_grade, corrected, REVIEWER, "person"),
            (f"{second}:herniation", "reject", discs[1]["grades"]["herniation"]["probability"] >= 0.5, False,
             REVIEWER, "person"),
        ]  # fmt: skip

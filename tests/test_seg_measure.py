"""Measurements on a hand-made label map, and analyze writing the mask and the new keys."""

import json

import numpy as np
import pytest
from PIL import Image

from spinedx.io.masks import CANAL, DISC, VERTEBRA
from spinedx.pipelines.analyze import analyze_inputs
from spinedx.pipelines.mri_discs.measure_seg import measure_disc
from spinedx.pipelines.mri_discs.pipeline import MriDiscPipeline

BOX = (18.0, 38.0, 52.0, 52.0)


def _spine(herniation_px: int = 5) -> np.ndarray:
    """Two vertebral bodies (posterior margin at column 49), a disc between them, canal behind."""
    labels = np.zeros((100, 100), np.uint8)
    labels[10:40, 20:50] = VERTEBRA
    labels[50:80, 20:50] = VERTEBRA
    labels[40:50, 20:50] = DISC
    labels[43:47, 50 : 50 + herniation_px] = DISC
    labels[10:80, 60:70] = CANAL
    return labels


def test_measurements_on_hand_made_label_map():
    pixels = measure_disc(_spine(), BOX)
    assert pixels.unit == "px"
    assert pixels.posterior_extent == pytest.approx(5.0)  # columns 50..54 behind the line x = 49
    assert pixels.canal_ap == pytest.approx(10.0, abs=0.5)  # columns 60..69
    assert pixels.disc_area == pytest.approx(10 * 30 + 4 * 2)  # disc rows 40-49 + herniation inside the box
    spaced = measure_disc(_spine(), BOX, pixel_spacing_mm=(0.5, 2.0))
    assert spaced.unit == "mm"
    assert spaced.posterior_extent == pytest.approx(10.0) and spaced.disc_area == pytest.approx(308 * 1.0)
    assert measure_disc(_spine(herniation_px=0), BOX).posterior_extent == 0.0


def test_measurements_undefined_without_disc_or_neighbours():
    labels = _spine()
    labels[labels == VERTEBRA] = 0
    missing = measure_disc(labels, BOX)
    assert missing.posterior_extent is None and missing.disc_area is not None
    assert measure_disc(np.zeros((100, 100), np.uint8), BOX).disc_area is None


class StubSegmenter:
    def segment(self, image):
        labels = np.zeros(image.pixels.shape, np.uint8)
        labels[:100, :100] = _spine()
        return labels


def test_analyze_writes_mask_png_and_measurement_keys(tmp_path):
    from test_analyze import StubGrader

    class OneDiscLocalizer:
        def detect(self, pixels):
            from spinedx.tasks.disc_localization.model import DiscDetection

            return [DiscDetection(BOX, 0.9, 1, "L5/S1")], []

    path = tmp_path / "case.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 110), dtype=np.uint8)).save(path)
    pipeline = MriDiscPipeline(OneDiscLocalizer(), StubGrader(), "test", StubSegmenter())
    (result,) = analyze_inputs([path], tmp_path / "out", "mri-discs", pipeline)
    assert result.error is None
    folder = tmp_path / "out" / "case"
    raw = json.loads((folder / "findings.json").read_text())
    assert raw["masks"] == "masks.png" and raw["mask_labels"] == "labels.json"
    mask = np.array(Image.open(folder / raw["masks"]))
    assert mask.shape == (120, 110) and set(np.unique(mask)) == {0, VERTEBRA, DISC, CANAL}
    measurements = raw["discs"][0]["measurements"]
    assert measurements["posterior_extent_mm"] == pytest.approx(5.0) and measurements["unit"] == "px"
    assert {"canal_ap_mm", "disc_area_mm2", "height_px"} <= set(measurements)

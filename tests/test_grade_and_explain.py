"""One grader pass for grades and Grad-CAM gives what the two separate calls give."""

from __future__ import annotations

import numpy as np

from spinedx.models.registry import resolve_weights
from spinedx.tasks.disc_grading.model import DiscGrader


def test_grade_and_explain_matches_grade_then_evidence():
    grader = DiscGrader.load(resolve_weights("disc_grader").path)
    rng = np.random.default_rng(0)
    pixels = rng.random((160, 120)).astype(np.float32)
    pixels[60:75, 30:90] += 1.0  # a bright band for the grader to look at
    boxes, labels = [(28.0, 55.0, 92.0, 80.0), (30.0, 95.0, 90.0, 118.0)], [2, 1]

    grades, explained, heatmaps = grader.grade_and_explain(pixels, boxes, labels)

    separate = grader.grade(pixels, boxes, labels)
    assert grades == separate
    assert explained == [grader.evidence_finding(grade) for grade in separate]
    for combined, alone in zip(heatmaps, grader.evidence(pixels, boxes, labels, explained), strict=True):
        assert combined.shape == pixels.shape
        np.testing.assert_allclose(combined, alone, atol=1e-6)
    assert grader.grade_and_explain(pixels, [], []) == ([], [], [])

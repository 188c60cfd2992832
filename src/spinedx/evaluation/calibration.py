"""Expected calibration error: how far predicted probabilities are from observed frequencies.

:func:`expected_calibration_error` is the usual 10-bin ECE: for binary tasks on the positive-class
probability, for multi-class on the top-label confidence. The calibrators themselves are parts of a
model (:mod:`spinedx.models.calibration`).
"""

from __future__ import annotations

import numpy as np

from spinedx.errors import InputError


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> float:
    """10-bin (equal-width) ECE: sum over bins of ``|mean confidence - accuracy| * share of samples``.

    ``probabilities`` 1-D: positive-class probabilities of 0/1 ``labels`` (bins on ``p``, accuracy =
    observed positive rate). 2-D ``(N, C)``: top-label confidence vs whether the top label equals
    ``labels`` (class indices 0..C-1). Bins are ``[0, 0.1), ..., [0.9, 1.0]``.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels).reshape(-1)
    if len(p) != len(y):
        raise InputError(f"ECE: {len(p)} predictions but {len(y)} labels")
    if len(y) == 0:
        raise ValueError("ECE of no samples")
    if p.ndim == 2:
        confidence = p.max(1)
        hit = (p.argmax(1) == y).astype(np.float64)
    else:
        confidence = p
        hit = y.astype(np.float64)
    bins = np.minimum((confidence * n_bins).astype(np.int64), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        inside = bins == b
        if inside.any():
            total += inside.mean() * abs(confidence[inside].mean() - hit[inside].mean())
    return float(total)

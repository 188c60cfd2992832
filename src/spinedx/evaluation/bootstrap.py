"""Percentile bootstrap confidence intervals for evaluation metrics.

Resampling is over samples, or over whole groups (patients, studies) when a ``groups`` array is
given, so that several images of one patient move in and out of a resample together. Resamples
where the metric is undefined (it raises ``ValueError``/``ZeroDivisionError`` or returns NaN, e.g.
ROC-AUC on a resample with one class only) are skipped; where nothing is left the interval is NaN.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from spinedx.errors import InputError

MetricFn = Callable[..., float]

_UNDEFINED_ERRORS = (ValueError, ZeroDivisionError, FloatingPointError)


@dataclass(frozen=True)
class BootstrapResult:
    """Point estimate on the full data, percentile interval, and how many resamples were usable."""

    estimate: float
    lower: float
    upper: float
    n_valid: int
    n_resamples: int

    def as_tuple(self) -> tuple[float, float, float]:
        return self.estimate, self.lower, self.upper


def _safe_metric(metric_fn: MetricFn, arrays: tuple[np.ndarray, ...]) -> float:
    """The metric as a float, NaN where it is undefined."""
    try:
        value = float(metric_fn(*arrays))
    except _UNDEFINED_ERRORS:
        return math.nan
    return value if math.isfinite(value) else math.nan


def _check_arrays(arrays: tuple[np.ndarray, ...], groups: np.ndarray | None) -> int:
    if not arrays:
        raise InputError("bootstrap: at least one array is required")
    lengths = {len(a) for a in arrays}
    if len(lengths) != 1:
        raise InputError(f"bootstrap: arrays have different lengths {sorted(lengths)}")
    n = lengths.pop()
    if groups is not None and len(groups) != n:
        raise InputError(f"bootstrap: groups has length {len(groups)} but the data has {n} samples")
    return n


def resample_indices(
    n: int, *, groups: np.ndarray | None = None, n_resamples: int = 1000, seed: int = 0
) -> Iterator[np.ndarray]:
    """Yield ``n_resamples`` index arrays drawn with replacement.

    Without ``groups``: ``n`` sample indices per resample. With ``groups``: as many groups as there
    are distinct groups are drawn with replacement, and all sample indices of each drawn group are
    concatenated (so a resample's size varies with group sizes).
    """
    rng = np.random.default_rng(seed)
    if n == 0:
        return
    if groups is None:
        for _ in range(n_resamples):
            yield rng.integers(0, n, size=n)
        return
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    counts = np.bincount(inverse)
    members = np.split(order, np.cumsum(counts)[:-1])
    n_groups = len(members)
    for _ in range(n_resamples):
        drawn = rng.integers(0, n_groups, size=n_groups)
        yield np.concatenate([members[g] for g in drawn])


def bootstrap_many(
    metric_fns: Mapping[str, MetricFn],
    *arrays: np.ndarray,
    groups: np.ndarray | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, BootstrapResult]:
    """Bootstrap several metrics on the same resamples (cheaper and mutually consistent).

    Each ``metric_fn`` is called as ``metric_fn(*resampled_arrays)`` and returns a float.
    """
    if not 0.0 < alpha < 1.0:
        raise InputError(f"bootstrap: alpha must be between 0 and 1, got {alpha}")
    if n_resamples < 0:
        raise InputError(f"bootstrap: n_resamples must be >= 0, got {n_resamples}")
    arrays = tuple(np.asarray(a) for a in arrays)
    n = _check_arrays(arrays, groups)
    names = list(metric_fns)
    values = np.full((len(names), n_resamples), np.nan)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        estimates = [_safe_metric(metric_fns[name], arrays) if n else math.nan for name in names]
        for r, idx in enumerate(resample_indices(n, groups=groups, n_resamples=n_resamples, seed=seed)):
            sample = tuple(a[idx] for a in arrays)
            for m, name in enumerate(names):
                values[m, r] = _safe_metric(metric_fns[name], sample)

    results: dict[str, BootstrapResult] = {}
    for m, name in enumerate(names):
        valid = values[m][np.isfinite(values[m])]
        if valid.size:
            bounds = np.percentile(valid, [100 * alpha / 2, 100 * (1 - alpha / 2)])
            # Clip away interpolation round-off (all-equal values must give exactly that value).
            lower, upper = np.clip(bounds, valid.min(), valid.max())
        else:
            lower = upper = math.nan
        results[name] = BootstrapResult(
            estimate=estimates[m],
            lower=float(lower),
            upper=float(upper),
            n_valid=int(valid.size),
            n_resamples=n_resamples,
        )
    return results


def bootstrap_ci(
    metric_fn: MetricFn,
    *arrays: np.ndarray,
    groups: np.ndarray | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float, float]:
    """``(estimate, lower, upper)``: the metric on the full data and its percentile bootstrap CI.

    ``metric_fn(*arrays)`` must return a float; ``arrays`` are indexed along their first axis.
    With ``groups`` (one label per sample) whole groups are resampled. Any value that is undefined
    comes back as NaN instead of raising.
    """
    result = bootstrap_many(
        {"metric": metric_fn}, *arrays, groups=groups, n_resamples=n_resamples, seed=seed, alpha=alpha
    )["metric"]
    return result.as_tuple()

"""Probability calibrators of a trained model (Platt scaling, temperature scaling).

Calibrators are fitted on out-of-fold predictions and stored in the model file as plain,
JSON-friendly parameters:

* :class:`PlattScaler` — ``p = sigmoid(a * logit + b)`` for a binary task, fitted by (almost)
  unregularised logistic regression on the logit.
* :class:`TemperatureScaler` — ``p = probs_fn(logits / T)`` for multi-class or ordinal heads, with
  ``T`` minimising the negative log-likelihood (one parameter, so the ranking never changes).
* :class:`LogitStack` — ``p = sigmoid(w . logits + b)``: one finding from the logits of several models,
  fitted by logistic regression on their out-of-fold logits.

Applying one needs numpy and scipy.special only; fitting imports its optimisers when called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import expit, log_softmax, logit

from spinedx.errors import InputError


def _as_logits(values: np.ndarray, *, probabilities: bool) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if probabilities:
        values = logit(np.clip(values, 1e-6, 1 - 1e-6))
    return values


@dataclass
class PlattScaler:
    """``sigmoid(a * logit + b)``; the identity is ``a = 1, b = 0``."""

    a: float = 1.0
    b: float = 0.0

    @classmethod
    def fit(cls, logits: np.ndarray, labels: np.ndarray, *, c: float = 1e4) -> PlattScaler:
        """Fit on raw logits and 0/1 labels (identity when only one class is present)."""
        from sklearn.linear_model import LogisticRegression

        x = _as_logits(logits, probabilities=False)
        y = np.asarray(labels).reshape(-1).astype(np.int64)
        if len(x) != len(y):
            raise InputError(f"calibration: {len(x)} logits but {len(y)} labels")
        if len(np.unique(y)) < 2:
            return cls()
        model = LogisticRegression(C=c, max_iter=1000).fit(x[:, None], y)
        return cls(float(model.coef_[0, 0]), float(model.intercept_[0]))

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of raw ``logits``."""
        return expit(self.a * np.asarray(logits, dtype=np.float64) + self.b)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def softmax_probabilities(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(np.asarray(logits, dtype=np.float64), axis=1))


@dataclass
class TemperatureScaler:
    """``probs_fn(logits / T)``; ``T > 1`` softens over-confident predictions."""

    temperature: float = 1.0

    @classmethod
    def fit(
        cls,
        logits: np.ndarray,
        labels: np.ndarray,
        probs_fn: Callable[[np.ndarray], np.ndarray] = softmax_probabilities,
        *,
        bounds: tuple[float, float] = (0.05, 20.0),
    ) -> TemperatureScaler:
        """``T`` minimising the NLL of class indices ``labels`` (0-based columns of ``probs_fn``)."""
        z = np.asarray(logits, dtype=np.float64)
        y = np.asarray(labels).reshape(-1).astype(np.int64)
        if z.ndim != 2 or len(z) != len(y):
            raise InputError(f"calibration: logits of shape {z.shape} do not match {len(y)} labels")
        if len(y) == 0:
            return cls()

        def nll(log_t: float) -> float:
            p = probs_fn(z / np.exp(log_t))
            return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1.0))))

        from scipy.optimize import minimize_scalar

        result = minimize_scalar(nll, bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded")
        return cls(float(np.exp(result.x)))

    def apply(
        self, logits: np.ndarray, probs_fn: Callable[[np.ndarray], np.ndarray] = softmax_probabilities
    ) -> np.ndarray:
        return probs_fn(np.asarray(logits, dtype=np.float64) / self.temperature)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class LogitStack:
    """``sigmoid(weights . logits + intercept)`` over one logit per source model (columns, in order)."""

    weights: list[float]
    intercept: float = 0.0

    @classmethod
    def fit(cls, logits: np.ndarray, labels: np.ndarray, *, c: float = 1e4) -> LogitStack:
        """Fit on an (N, K) matrix of raw logits and 0/1 labels (both classes must be present)."""
        from sklearn.linear_model import LogisticRegression

        x = np.asarray(logits, dtype=np.float64)
        y = np.asarray(labels).reshape(-1).astype(np.int64)
        if x.ndim != 2 or len(x) != len(y):
            raise InputError(f"logit stack: logits of shape {x.shape} do not match {len(y)} labels")
        if len(np.unique(y)) < 2:
            raise InputError("logit stack: the labels hold a single class; nothing to fit")
        model = LogisticRegression(C=c, max_iter=1000).fit(x, y)
        return cls([float(w) for w in model.coef_[0]], float(model.intercept_[0]))

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """Probabilities of an (N, K) matrix of raw logits."""
        x = np.asarray(logits, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.weights):
            raise InputError(f"logit stack: expected (N, {len(self.weights)}) logits, got {x.shape}")
        return expit(x @ np.asarray(self.weights) + self.intercept)

    def as_dict(self) -> dict:
        return asdict(self)

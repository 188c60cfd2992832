"""Pfirrmann per patient and level, fused over the patient's series as a study is fused.

A radiologist grades a study: :func:`spinedx.pipelines.study.fuse_levels` averages a level's Pfirrmann
probability vectors over its T2-weighted series when there are any (the grade is defined on T2).
Scoring the same fusion on a cohort with several series per patient measures what it adds over one
series; ``all_series`` beside it is the plain mean over every series, so the T2 rule is measured too.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from spinedx.evaluation.grading import ordinal_metrics
from spinedx.pipelines.study import pfirrmann_sources
from spinedx.tasks.disc_grading.network import pfirrmann_grade


def fused_pfirrmann_metrics(graded: pd.DataFrame, decode: str, n_resamples: int) -> dict:
    """Ordinal metrics of the fused grade against ``reference`` per (patient, level).

    ``graded``: one row per graded disc observation with ``patient``, ``level``, ``image_id``,
    ``reference`` (the patient's grade), ``probabilities`` (its Pfirrmann vector) and ``weighting``.
    """
    rows = []
    for (patient, _level), group in graded.groupby(["patient", "level"], sort=True):
        vectors = np.stack(group["probabilities"].to_list())
        t2 = pfirrmann_sources(group["weighting"].tolist())
        rows.append({
            "patient": patient,
            "reference": int(group["reference"].iloc[0]),
            "fused": vectors[t2].mean(axis=0),
            "all_series": vectors.mean(axis=0),
            "n_series": group["image_id"].nunique(),
            "n_series_used": group.loc[t2, "image_id"].nunique(),
        })  # fmt: skip
    fused = pd.DataFrame(rows)
    groups = fused["patient"].to_numpy()

    def kappa_of(column: str) -> dict:
        predicted = pfirrmann_grade(np.stack(fused[column].to_list()), decode)
        return ordinal_metrics(fused["reference"], predicted, labels=[1, 2, 3, 4, 5], groups=groups,
                               n_resamples=n_resamples)  # fmt: skip

    result = kappa_of("fused")
    result["all_series"] = kappa_of("all_series")["kappa_quadratic"]
    result["mean_series_per_level"] = float(fused["n_series"].mean())
    result["mean_series_used_per_level"] = float(fused["n_series_used"].mean())
    result["n_levels"] = len(fused)
    return result

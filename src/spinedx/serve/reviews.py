"""Review decisions as data: the findings of a study, each one's current value, and reviewer agreement.

A study's findings, each addressed ``"<level>:<finding>"``: for every disc of findings.json the
disc itself (``"L4/L5:disc"``, model value ``true``) and each of its grades (Pfirrmann and Modic
as integer grades, the others as present/absent: probability >= 0.5, as the report marks them).

Decisions never overwrite one another; each is stored with its reviewer, time, the value before
and after it, where that value comes from and the model version that made the finding. What a
decision does to the finding's current value:

``accept``   keeps the current value (and its source: the model's, or a person's earlier correction);
``correct``  sets the reviewer's value (integer grade in range, or boolean), source ``person``;
``reject``   the finding is wrong: a disc or a present/absent grade becomes ``false``, an integer
             grade becomes ``null`` (no grade); source ``person``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from spinedx.io.levels import GRADE_RANGES
from spinedx.store.models import Review, Study, utc_now

PRESENT_PROBABILITY = 0.5
DISC = "disc"
ORDINAL_GRADES = ("pfirrmann", "modic")
ACTIONS = ("accept", "reject", "correct")


class ReviewRejected(ValueError):
    """A decision that cannot be applied (unknown finding, value out of range); the message says which."""


def finding_values(findings: dict[str, Any] | None) -> dict[str, Any]:
    """Every finding id of a findings.json with the model's value, in reading order."""
    values: dict[str, Any] = {}
    for disc in (findings or {}).get("discs", []):
        level = disc["level"]
        values[f"{level}:{DISC}"] = True
        for name, grade in disc.get("grades", {}).items():
            if name in ORDINAL_GRADES:
                values[f"{level}:{name}"] = int(grade["grade"])
            else:
                values[f"{level}:{name}"] = bool(grade["probability"] >= PRESENT_PROBABILITY)
    return values


def finding_kind(finding: str) -> str:
    return finding.rpartition(":")[2]


@dataclass
class FindingState:
    finding: str
    model_value: Any
    current_value: Any
    source: str = "model"
    decided: bool = False
    reviewers: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "finding": self.finding,
            "model_value": self.model_value,
            "current_value": self.current_value,
            "source": self.source,
            "decided": self.decided,
            "reviewers": self.reviewers,
        }


def study_state(study: Study) -> dict[str, FindingState]:
    """The current value of each finding of ``study`` after its latest decision."""
    states = {
        finding: FindingState(finding, value, value)
        for finding, value in finding_values(study.findings).items()
    }
    for review in study.reviews:
        state = states.get(review.finding)
        if state is None:
            continue
        state.current_value, state.source, state.decided = review.after, review.source, True
        if review.reviewer not in state.reviewers:
            state.reviewers.append(review.reviewer)
    return states


def review_progress(study: Study) -> tuple[int, int]:
    """(findings in total, findings with at least one decision)."""
    states = study_state(study).values()
    return len(states), sum(state.decided for state in states)


def _corrected_value(finding: str, value: Any) -> Any:
    kind = finding_kind(finding)
    if kind in ORDINAL_GRADES:
        low, high = GRADE_RANGES[kind]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ReviewRejected(
                f"{finding}: a corrected {kind} grade must be an integer from {low} to {high}"
            )
        return value
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ReviewRejected(f"{finding}: a corrected {kind} value must be true or false")


def _after(state: FindingState, action: str, value: Any) -> tuple[Any, str]:
    if action == "accept":
        return state.current_value, state.source
    if action == "correct":
        return _corrected_value(state.finding, value), "person"
    return (None if finding_kind(state.finding) in ORDINAL_GRADES else False), "person"


def record_decisions(session: Session, study: Study, reviewer: str, decisions: list[dict[str, Any]]) -> int:
    """Store ``decisions`` (dicts with finding, action, value, comment) of ``reviewer``; all or none.

    Raises :class:`ReviewRejected` naming the first decision that cannot be applied.
    """
    states = study_state(study)
    now = utc_now()
    reviews = []
    for decision in decisions:
        finding, action = decision["finding"], decision["action"]
        state = states.get(finding)
        if state is None:
            raise ReviewRejected(f"{finding}: no such finding in this study")
        if action not in ACTIONS:
            raise ReviewRejected(f"{finding}: action must be one of {', '.join(ACTIONS)}")
        after, source = _after(state, action, decision.get("value"))
        reviews.append(
            Review(
                study_id=study.id,
                finding=finding,
                reviewer=reviewer,
                time=now,
                action=action,
                before=state.current_value,
                after=after,
                source=source,
                model_version=study.model_version,
                comment=decision.get("comment"),
            )
        )
        # Later decisions of the same request see this one's result.
        state.current_value, state.source, state.decided = after, source, True
    session.add_all(reviews)
    session.flush()
    session.refresh(study, ["reviews"])
    return len(reviews)


def review_json(review: Review) -> dict[str, Any]:
    return {
        "finding": review.finding,
        "reviewer": review.reviewer,
        "time": review.time.isoformat(),
        "action": review.action,
        "before": review.before,
        "after": review.after,
        "source": review.source,
        "model_version": review.model_version,
        "comment": review.comment,
    }


def agreement(session: Session) -> list[dict[str, Any]]:
    """Cohen's kappa per finding kind for each pair of reviewers who decided the same findings.

    Each reviewer's latest value per finding is compared; ``kappa`` is null when it is undefined
    (both reviewers gave one and the same value throughout).
    """
    # scikit-learn loads only when agreement is asked for, so the server starts light.
    from sklearn.metrics import cohen_kappa_score

    latest: dict[str, dict[tuple[str, str], Any]] = defaultdict(dict)
    for review in session.scalars(select(Review).order_by(Review.id)):
        latest[review.reviewer][(review.study_id, review.finding)] = review.after
    rows = []
    for first, second in combinations(sorted(latest), 2):
        shared = sorted(latest[first].keys() & latest[second].keys())
        by_kind: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for key in shared:
            by_kind[finding_kind(key[1])].append(key)
        for kind, keys in sorted(by_kind.items()):
            a = [str(latest[first][key]) for key in keys]
            b = [str(latest[second][key]) for key in keys]
            kappa = float(cohen_kappa_score(a, b)) if len(set(a) | set(b)) > 1 else None
            if kappa is not None and kappa != kappa:  # NaN: no variation to measure agreement on
                kappa = None
            agreed = sum(x == y for x, y in zip(a, b, strict=True))
            rows.append(
                {
                    "reviewers": [first, second],
                    "finding": kind,
                    "n": len(keys),
                    "agreement": agreed / len(keys),
                    "kappa": kappa,
                }
            )
    return rows

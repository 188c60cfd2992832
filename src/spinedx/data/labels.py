"""Mapping annotated lesion types onto the classes a model learns (e.g. the thesis' binary merge)."""

from __future__ import annotations

import pandas as pd

from spinedx.errors import InputError

CATCH_ALL = "*"


class LabelMap:
    """``{"Osteophytes": "Osteophytes", "*": "minor"}`` keeps Osteophytes and merges the rest.

    Class order is the order classes first appear among the mapping's values, so index 1 of a
    binary map is the class named second (the "positive" class for ROC curves).
    """

    def __init__(self, mapping: dict[str, str]):
        if not mapping:
            raise InputError("data.labels: the label map is empty")
        self.mapping = dict(mapping)
        self.class_names: list[str] = list(dict.fromkeys(self.mapping.values()))
        if len(self.class_names) < 2:
            raise InputError(
                f"data.labels: maps everything onto one class ({self.class_names[0]!r}); need two or more"
            )

    def class_of(self, lesion_type: str) -> str | None:
        """The class of a lesion type, or None when the map drops it."""
        return self.mapping.get(lesion_type, self.mapping.get(CATCH_ALL))

    def apply(self, annotations: pd.DataFrame) -> pd.DataFrame:
        """Rows the map keeps, with a ``label`` (class index) and ``class_name`` column."""
        names = annotations["lesion_type"].map(self.class_of)
        kept = annotations.loc[names.notna()].copy()
        kept["class_name"] = names[names.notna()]
        kept["label"] = kept["class_name"].map(self.class_names.index).astype(int)
        return kept

"""The disc grader's recipe section (``grader:`` of an ``mri-discs`` recipe)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from spinedx.recipes import Strict, data_paths_from_env


class GraderAugment(Strict):
    rotation_deg: float = Field(8.0, ge=0.0, le=45.0)
    scale: float = Field(0.1, ge=0.0, lt=0.5, description="zoom 1 +- scale")
    translate: float = Field(0.06, ge=0.0, lt=0.3, description="shift, fraction of the view")
    gamma: float = Field(0.3, ge=0.0, lt=1.5, description="gamma exp(+-gamma)")
    contrast: float = Field(0.15, ge=0.0, lt=1.0)
    brightness: float = Field(0.08, ge=0.0, lt=0.5)
    noise: float = Field(0.02, ge=0.0, lt=0.5)


class GraderConfig(Strict):
    data_root: Path = Field(
        description="spider-sagittal layout folder ($SPINEDX_DATA/spider-sagittal when left out)"
    )
    lumbar515_root: Path | None = Field(
        None,
        description="a lumbar515-sagittal folder to train on as well: the bundled localiser boxes each of "
        "its series and a disc takes the grades of the reference disc box whose centre it holds (bulging, "
        "spondylolisthesis, Pfirrmann); grades the cohort lacks are masked out of the loss and the metrics",
    )
    localizer: Path | None = Field(
        None,
        description="the disc localiser file whose boxes train the grader (localiser-boxed series, lumbar515); "
        "None: the bundled one. An mri-discs recipe sets it to the localiser it has just trained, so the "
        "grader learns from the boxes it will be given",
    )
    report_split: Path | None = Field(
        None,
        description="a split.json ({'<cohort>/<patient>': 'fit' | 'select' | 'report'}, as "
        "research/grader_research.py fixes it): its report patients are left out of training and CV, so "
        "`spinedx evaluate-discs --split` can score the final model on them end to end",
    )
    crop_size: int = Field(96, ge=32, le=512, description="network input side, px")
    margin: float = Field(0.35, ge=0.0, le=2.0, description="context on each side, fraction of the box")
    pad: float = Field(1.25, ge=1.0, le=2.0, description="padded crop / view, room for augmentation")
    backbone: str = "tf_efficientnet_lite0"
    pretrained: str = Field("imagenet", description="'imagenet', 'none' or a state-dict path")
    init: str = Field(
        "none",
        description="'bundled' or a disc grader file: start every model from its network (fine-tuning, e.g. on "
        "`spinedx reviews export` corrections); its network and crop settings apply, and one set here must match",
    )
    hidden: int = Field(256, ge=8)
    level_input: bool = Field(True, description="feed the disc level (one-hot) beside the CNN features")
    pfirrmann_head: Literal["coral", "softmax"] = Field(
        "coral", description="'coral' (ordinal, cumulative logits) or 'softmax' (5 classes, cross-entropy)"
    )
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    descriptors: bool = Field(True, description="feed region intensity descriptors beside the CNN features")
    freeze_blocks: int = Field(2, ge=0, description="stem + this many backbone stages stay frozen")
    epochs: int = Field(15, ge=1)
    batch_size: int = Field(32, ge=2)
    lr: float = Field(1e-3, gt=0.0, description="heads")
    backbone_lr: float = Field(3e-4, ge=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    warmup_epochs: float = Field(1.0, ge=0.0)
    binary_weight: float = Field(1.0, ge=0.0)
    pfirrmann_weight: float = Field(1.0, ge=0.0)
    modic_weight: float = Field(0.5, ge=0.0)
    pos_weight_power: float = Field(
        0.5, ge=0.0, le=1.0, description="pos_weight = (negatives / positives) ** power per binary task"
    )
    augment: GraderAugment = GraderAugment()
    folds: int = Field(5, ge=2)
    seed: int = 0
    threads: int = Field(1, ge=1, description="torch threads")
    pfirrmann_decode: Literal["expected", "argmax"] = "expected"
    bootstrap_resamples: int = Field(1000, ge=0, description="patient bootstrap resamples for the CIs")
    specificity_target: float = Field(0.88, gt=0.0, lt=1.0)
    max_patients: int | None = Field(None, ge=2, description="use only the first N patients (tests)")
    localizer_boxes: bool = Field(
        False,
        description="also train on the series without reference boxes, boxed by the bundled disc "
        "localiser and graded from gradings.csv by (patient, ivd_label); metrics stay on reference boxes",
    )

    @model_validator(mode="before")
    @classmethod
    def _data_from_env(cls, values: Any) -> Any:
        return data_paths_from_env(values, {"data_root": "spider-sagittal"})

    @model_validator(mode="after")
    def _settings_of_init(self) -> GraderConfig:
        """With ``init``, the network and crop settings come from that grader file; a conflicting one is an error."""
        if self.init == "none":
            return self
        from spinedx.tasks.disc_grading.model import init_settings  # reads the file: only for fine-tuning

        for name, value in init_settings(self.init).items():
            if name not in self.model_fields_set:
                setattr(self, name, value)
            elif getattr(self, name) != value:
                raise ValueError(f"{name} is {getattr(self, name)!r}, but the init grader's is {value!r}")
        return self

    def fingerprint(self) -> str:
        """Hash of everything that changes training (not threads / bootstrap settings)."""
        skip = {"threads", "bootstrap_resamples", "specificity_target", "pfirrmann_decode"}
        # Options at their defaults stay out, so fingerprints of runs from before an option existed hold.
        for name in ("localizer_boxes", "lumbar515_root", "localizer", "report_split", "level_input",
                     "pfirrmann_head"):  # fmt: skip
            if getattr(self, name) == type(self).model_fields[name].default:
                skip.add(name)
        payload = self.model_dump(mode="json", exclude=skip)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

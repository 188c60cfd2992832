"""The task registry: the one list of spinedx's clinical tasks, read by the CLI, the API and ``analyze``.

Each :class:`Task` names its recipe schema, its train and evaluate functions, the bundled model
files it owns (manifest name + format tag), its model card and, for tasks that analyse images, the
analyzer. Functions are given as ``"module:attribute"`` strings and imported only when used, so
listing tasks or analysing a slice never imports training code (``tests/test_layers.py`` checks it).

>>> from spinedx.tasks import TASKS, get_task
>>> [task.name for task in TASKS]
['xray-lesions', 'mri-discs', 'disc-localization', 'disc-grading', 'input-check', 'canal-stenosis', 'spine-seg']
>>> get_task("spine-seg").load("train")  # the train function, imported now  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spinedx.errors import InputError
from spinedx.io.levels import GRADE_COLUMNS

TASKS_DIR = Path(__file__).resolve().parent
DEFAULT_RECIPE_TASK = "xray-lesions"
"""A recipe without a ``task`` key is a radiograph classifier recipe (the first recipe format)."""


@dataclass(frozen=True)
class BundledModel:
    """A model file shipped in the package: its manifest name and the format tag inside the file."""

    name: str
    format: str


@dataclass(frozen=True)
class Task:
    name: str
    summary: str
    findings: tuple[str, ...]
    """What the task outputs: finding names or classes."""
    recipe: str | None = None
    """``module:Class`` of the recipe schema when recipes with ``task: <name>`` can be trained."""
    train: str | None = None
    """``module:function(recipe, run_dir, *, register_into=None) -> {name: path}``."""
    evaluate: str | None = None
    """``module:function(run_dir, *, data=None, images=None, out_dir=None, n_resamples=1000)`` scoring a
    training run folder of this task (``spinedx evaluate RUN``); returns ``.metrics``, ``.metrics_path``
    and ``.report_path``."""
    bundled: tuple[BundledModel, ...] = ()
    card: Path | None = None
    trained_by: str | None = None
    """The recipe task whose training writes this task's model (component tasks of mri-discs)."""
    analyzer: str | None = None
    """``module:Class`` with ``bundled()`` that ``spinedx analyze --task <name>`` runs."""
    modalities: tuple[str, ...] = field(default=())
    """DICOM Modality values that select this task in ``analyze`` when no task is given."""

    def load(self, what: str) -> Any:
        """Import and return the object named by the ``what`` attribute (``"train"``, ``"recipe"``, …)."""
        target = getattr(self, what)
        if target is None:
            raise InputError(f"task '{self.name}' has no {what}")
        module, _, attribute = target.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def describe(self) -> dict[str, Any]:
        """JSON-friendly description (``spinedx tasks --json``), bundled files with their manifest entries."""
        from spinedx.models.registry import manifest_entry

        return {
            "name": self.name,
            "summary": self.summary,
            "findings": list(self.findings),
            "recipe": self.recipe,
            "trained_by": self.trained_by or (self.name if self.train else None),
            "train": self.train,
            "evaluate": self.evaluate,
            "analyzer": self.analyzer,
            "modalities": list(self.modalities),
            "model_card": str(self.card.relative_to(TASKS_DIR.parents[1])) if self.card else None,
            "bundled": [{"name": b.name, "format": b.format, **manifest_entry(b.name)} for b in self.bundled],
        }


MRI_DISCS_CARD = TASKS_DIR / "mri_discs" / "MODEL_CARD.md"

TASKS: tuple[Task, ...] = (
    Task(
        name="xray-lesions",
        summary="Lesion classes of radiologist-drawn boxes on spine radiographs (VinDr-SpineXR format)",
        findings=("lesion class per box (the recipe's data.labels)",),
        recipe="spinedx.tasks.xray_lesions.config:ExperimentConfig",
        train="spinedx.tasks.xray_lesions.train:train_recipe",
        evaluate="spinedx.tasks.xray_lesions.evaluate:evaluate_run",
        card=TASKS_DIR / "xray_lesions" / "MODEL_CARD.md",
    ),
    Task(
        name="mri-discs",
        summary="Sagittal lumbar MRI: find every disc, name its level, grade and measure it",
        findings=(
            "level",
            "box",
            *GRADE_COLUMNS,
            "stenosis",
            "height_mm",
            "posterior_extent_mm",
            "canal_ap_mm",
            "disc_area_mm2",
        ),
        recipe="spinedx.tasks.mri_discs.config:MriDiscsRecipe",
        train="spinedx.tasks.mri_discs.train:train_mri_discs",
        evaluate="spinedx.pipelines.mri_discs.evaluate:evaluate_run",
        card=MRI_DISCS_CARD,
        analyzer="spinedx.pipelines.mri_discs.pipeline:MriDiscPipeline",
        modalities=("MR",),
    ),
    Task(
        name="disc-localization",
        summary="Boxes around every intervertebral disc of a sagittal MR slice, with levels (U-Net)",
        findings=("box", "level", "score"),
        bundled=(BundledModel("disc_localizer", "spinedx.disc_localizer/1"),),
        card=MRI_DISCS_CARD,
        trained_by="mri-discs",
    ),
    Task(
        name="disc-grading",
        summary="Calibrated per-disc grades from a crop of the disc",
        findings=GRADE_COLUMNS,
        bundled=(BundledModel("disc_grader", "spinedx.disc_grader/1"),),
        card=MRI_DISCS_CARD,
        trained_by="mri-discs",
    ),
    Task(
        name="input-check",
        summary="Is the input a sagittal spine MR slice, the right way up?",
        findings=("sagittal_spine_mr", "reoriented_spine_mr", "other"),
        bundled=(BundledModel("input_check", "spinedx.input_check/1"),),
        card=MRI_DISCS_CARD,
        trained_by="mri-discs",
    ),
    Task(
        name="canal-stenosis",
        summary="Central canal stenosis per disc, from a crop of its posterior margin and the canal (lumbar515)",
        findings=("stenosis",),
        recipe="spinedx.tasks.canal_stenosis.config:CanalStenosisRecipe",
        train="spinedx.tasks.canal_stenosis.train:train_canal_stenosis",
        evaluate="spinedx.tasks.canal_stenosis.evaluate:evaluate_run",
        bundled=(BundledModel("canal_stenosis", "spinedx.canal_stenosis/1"),),
        card=MRI_DISCS_CARD,
    ),
    Task(
        name="spine-seg",
        summary="Background / vertebra / disc / spinal canal label map of a sagittal MR slice (U-Net)",
        findings=("background", "vertebra", "disc", "canal"),
        recipe="spinedx.tasks.spine_seg.config:SpineSegRecipe",
        train="spinedx.tasks.spine_seg.train:train_spine_seg",
        evaluate="spinedx.tasks.spine_seg.evaluate:evaluate_run",
        bundled=(BundledModel("spine_segmenter", "spinedx.spine_segmenter/1"),),
        card=TASKS_DIR / "spine_seg" / "MODEL_CARD.md",
    ),
)

_BY_NAME = {task.name: task for task in TASKS}


def get_task(name: str) -> Task:
    """The task called ``name``; an unknown name is a one-line error listing the known ones."""
    if name not in _BY_NAME:
        raise InputError(f"unknown task '{name}' (available: {', '.join(_BY_NAME)})")
    return _BY_NAME[name]


def analysis_tasks() -> tuple[Task, ...]:
    """Tasks that ``spinedx analyze`` can run."""
    return tuple(task for task in TASKS if task.analyzer)


def parse_recipe(raw: dict, source: str = "config") -> Any:
    """``raw`` validated by the schema of its ``task`` (radiograph classifier when absent)."""
    from spinedx.recipes import validate_recipe

    name = raw.setdefault("task", DEFAULT_RECIPE_TASK)
    if not isinstance(name, str) or name not in _BY_NAME or _BY_NAME[name].recipe is None:
        trainable = ", ".join(task.name for task in TASKS if task.recipe)
        raise InputError(f"{source}: field 'task': '{name}' is not a trainable task ({trainable})")
    return validate_recipe(_BY_NAME[name].load("recipe"), raw, source)

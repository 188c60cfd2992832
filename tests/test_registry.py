"""The task registry is the one source of truth: every bundled file has a task, a sha256, a format
tag and a model card; recipes find their schema by ``task``; `spinedx tasks --json` describes all."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from spinedx.cli import app
from spinedx.errors import InputError
from spinedx.models.registry import BUNDLED_DIR, sha256_of
from spinedx.recipes import read_recipe
from spinedx.tasks import TASKS, get_task, parse_recipe

MANIFEST = json.loads((BUNDLED_DIR / "manifest.json").read_text())
OWNER = {model.name: (task, model) for task in TASKS for model in task.bundled}


def test_every_bundled_file_has_a_task_a_sha256_a_format_tag_and_a_card():
    assert set(MANIFEST) == set(OWNER), "manifest entries and registry entries differ"
    for name, entry in MANIFEST.items():
        task, model = OWNER[name]
        path = BUNDLED_DIR / entry["file"]
        assert sha256_of(path) == entry["sha256"], name
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert state["format"] == model.format, name
        assert "program" in state, f"{name}: bundled without its traced program (slow cold start)"
        assert task.card is not None and task.card.is_file(), name


def test_registry_format_tags_are_the_ones_the_loaders_check():
    from spinedx.tasks.canal_stenosis.model import FORMAT as STENOSIS
    from spinedx.tasks.disc_grading.model import FORMAT as GRADER
    from spinedx.tasks.disc_localization.model import FORMAT as LOCALIZER
    from spinedx.tasks.input_check.model import FORMAT as INPUT_CHECK
    from spinedx.tasks.spine_seg.network import FORMAT as SEGMENTER

    formats = {model.name: model.format for _, model in OWNER.values()}
    assert formats == {
        "disc_grader": GRADER,
        "disc_localizer": LOCALIZER,
        "input_check": INPUT_CHECK,
        "spine_segmenter": SEGMENTER,
        "canal_stenosis": STENOSIS,
    }


@pytest.mark.parametrize("task", [task for task in TASKS if task.recipe], ids=lambda task: task.name)
def test_trainable_tasks_resolve_their_recipe_train_and_evaluate(task):
    assert callable(task.load("train")) and callable(task.load("evaluate"))
    assert task.load("recipe").model_fields["task"].default == task.name


@pytest.mark.parametrize(
    ("config", "task"),
    [
        ("configs/xray_lesions.yaml", "xray-lesions"),
        ("configs/thesis.yaml", "xray-lesions"),
        ("configs/spider_discs.yaml", "mri-discs"),
        ("configs/spine_seg.yaml", "spine-seg"),
    ],
)
def test_each_shipped_recipe_validates_under_its_task(config, task):
    assert parse_recipe(read_recipe(config), config).task == task


def test_a_recipe_without_task_is_a_radiograph_recipe_and_an_unknown_task_is_one_line():
    assert parse_recipe({"name": "x"}).task == "xray-lesions"
    with pytest.raises(InputError, match=r"field 'task': 'disc-grading' is not a trainable task"):
        parse_recipe({"name": "x", "task": "disc-grading"})
    with pytest.raises(InputError, match="unknown task 'nope'"):
        get_task("nope")


def test_tasks_json_lists_every_task_with_its_bundled_files():
    result = CliRunner().invoke(app, ["tasks", "--json"])
    assert result.exit_code == 0, result.output
    described = {task["name"]: task for task in json.loads(result.output)}
    assert list(described) == [task.name for task in TASKS]
    grader = described["disc-grading"]["bundled"][0]
    assert grader["sha256"] == MANIFEST["disc_grader"]["sha256"]
    assert described["disc-grading"]["trained_by"] == "mri-discs"
    assert described["mri-discs"]["analyzer"].endswith(":MriDiscPipeline")

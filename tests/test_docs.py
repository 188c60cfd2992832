"""The docs never drift from the code: generated reference pages match a fresh generation, and every
relative link (and anchor) in docs/ points at something that exists."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
REGENERATE = ".venv/bin/python docs/generate_reference.py"


def _generator():
    spec = importlib.util.spec_from_file_location("generate_reference", DOCS / "generate_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated() -> dict[str, str]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        return _generator().generate()


def test_generated_reference_pages_are_committed_and_current(generated):
    assert set(generated) == {
        "docs/reference/cli.md",
        "docs/reference/recipes.md",
        "docs/reference/tasks.md",
        "docs/reference/findings.md",
    }
    stale = [
        name
        for name, text in generated.items()
        if not (REPO / name).is_file() or (REPO / name).read_text(encoding="utf-8") != text
    ]
    assert not stale, f"out of date: {', '.join(stale)}; run `{REGENERATE}` and commit the result"


def test_generation_is_deterministic_and_machine_independent(generated):
    again = _generator().generate()
    assert again == generated
    for name, text in generated.items():
        assert str(REPO) not in text, f"{name} holds this machine's path"


def test_every_cli_command_and_recipe_task_is_documented(generated):
    from spinedx.tasks import TASKS

    cli = generated["docs/reference/cli.md"]
    for command in ("train", "evaluate", "predict", "analyze", "evaluate-discs", "evaluate-seg", "tasks"):
        assert f"## spinedx-{command}\n" in cli
    recipes = generated["docs/reference/recipes.md"]
    tasks = generated["docs/reference/tasks.md"]
    for task in TASKS:
        assert f"## {task.name}\n" in tasks
        if task.recipe:
            assert f"## {task.name}\n" in recipes


_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _anchors(markdown: str) -> set[str]:
    """GitHub-style heading anchors of ``markdown`` (code blocks left out)."""
    anchors = set()
    for line in _FENCE.sub("", markdown).splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            text = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("page", sorted(DOCS.rglob("*.md")), ids=lambda p: p.relative_to(DOCS).as_posix())
def test_relative_links_resolve(page):
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    broken = []
    for target in _LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        missing_anchor = (
            linked.is_file()
            and anchor
            and linked.suffix == ".md"
            and anchor not in _anchors(linked.read_text(encoding="utf-8"))
        )
        if not linked.exists() or missing_anchor:
            broken.append(target)
    assert not broken, f"{page.relative_to(REPO)}: broken links {broken}"

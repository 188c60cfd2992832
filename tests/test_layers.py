"""The package's layering, as tests: inference never imports training, imports point down the layers.

Layers, bottom up (a module may import its own layer and the ones below):
errors/recipes/io → data, synth → models → training, evaluation, report → tasks → pipelines →
dicom, serve → api → cli. Inside ``tasks``, a ``model.py`` or ``network.py`` (what analysis loads)
imports only io, data, models and its own task's network, model and recipe schema; ``train.py`` modules are imported only by
the task registry (lazily, by name) and by the composite ``mri_discs`` recipe trainer.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "spinedx"

LAYERS: dict[str, int] = {
    "errors": 0,
    "recipes": 0,
    "io": 0,
    "data": 1,
    "synth": 1,
    "models": 2,
    "training": 3,
    "evaluation": 3,
    "report": 3,
    "tasks": 4,
    "pipelines": 5,
    "dicom": 6,
    "serve": 6,
    "api": 7,
    "cli": 8,
    "__main__": 9,
}
INFERENCE_MODULES = ("model", "network")
OWN_TASK_MODULES_FOR_INFERENCE = (*INFERENCE_MODULES, "config")
ALLOWED_BELOW_TASK_MODEL = {"errors", "io", "data", "models"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """(imported spinedx module, line) of every import statement in ``path``, lazy ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("spinedx"):
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            found += [(name, node.lineno) for name in names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names if alias.name.startswith("spinedx")]
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_imports_point_down_the_layers():
    upward = []
    for path in SOURCES:
        importer = _module_name(path)
        own = _layer(importer)
        if own is None:
            continue
        for imported, line in _imports(path):
            target = _layer(imported)
            if target is not None and LAYERS[target] > LAYERS[own]:
                upward.append(f"{path.relative_to(PACKAGE)}:{line} ({own}) imports {imported} ({target})")
    assert not upward, "imports that point up the layers:\n" + "\n".join(upward)


def test_task_models_import_only_io_data_models_and_their_own_task():
    wrong = []
    for path in sorted((PACKAGE / "tasks").glob("*/*.py")):
        if path.stem not in INFERENCE_MODULES:
            continue
        task = path.parent.name
        for imported, line in _imports(path):
            parts = imported.split(".")
            own_task = parts[1] == "tasks" and len(parts) > 2 and parts[2] == task
            allowed = parts[1] in ALLOWED_BELOW_TASK_MODEL or own_task
            if not allowed or (
                own_task and len(parts) > 3 and parts[3] not in OWN_TASK_MODULES_FOR_INFERENCE
            ):
                wrong.append(f"tasks/{task}/{path.name}:{line} imports {imported}")
    assert not wrong, "inference modules importing beyond io/data/models:\n" + "\n".join(wrong)


def test_train_modules_are_imported_only_by_the_composite_recipe_trainer():
    trainers = {f"spinedx.tasks.{p.parent.name}.train" for p in (PACKAGE / "tasks").glob("*/train.py")}
    composite = PACKAGE / "tasks" / "mri_discs" / "train.py"
    wrong = []
    for path in SOURCES:
        if path == composite or path.parent.name == "tasks" and path.name == "__init__.py":
            continue
        own = _module_name(path)
        for imported, line in _imports(path):
            module = imported if imported in trainers else imported.rsplit(".", 1)[0]
            if module in trainers and not own.startswith(module.rsplit(".", 1)[0]):
                wrong.append(f"{path.relative_to(PACKAGE)}:{line} imports {module}")
    assert not wrong, "train modules imported outside their task:\n" + "\n".join(wrong)


def test_no_import_cycles_between_modules():
    graph: dict[str, set[str]] = {}
    known = {_module_name(p) for p in SOURCES}
    for path in SOURCES:
        edges = set()
        for imported, _ in _imports(path):
            while imported and imported not in known:
                imported = imported.rpartition(".")[0]
            if imported and imported != _module_name(path):
                edges.add(imported)
        graph[_module_name(path)] = edges
    visiting, done, cycles = set(), set(), []

    def visit(node: str, trail: list[str]) -> None:
        if node in done:
            return
        if node in visiting:
            cycles.append(" -> ".join([*trail[trail.index(node) :], node]))
            return
        visiting.add(node)
        for child in sorted(graph.get(node, ())):
            # a package's __init__ importing its own submodules is how packages are built, not a cycle
            if not child.startswith(node + "."):
                visit(child, [*trail, node])
        visiting.discard(node)
        done.add(node)

    for node in sorted(graph):
        visit(node, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


FORBIDDEN_AFTER_ANALYSIS = (
    "sklearn",
    "pandas",
    "timm",
    "monai",
    "torchvision",
    "matplotlib",
    "spinedx.training",
)

ANALYSE_ONE_SLICE = """
import sys
from pathlib import Path

from spinedx.pipelines.analyze import analyze_inputs

(result,) = analyze_inputs([Path(sys.argv[1])], Path(sys.argv[2]), "mri-discs")
assert result.error is None, result.error
loaded = [m for m in sys.modules if m.split(".")[0] in FORBIDDEN or any(m.startswith(f + ".") or m == f for f in FORBIDDEN)]
print("\\n".join(sorted(loaded)))
"""


@pytest.mark.slow
def test_analysing_a_slice_loads_no_training_code_nor_training_libraries(tmp_path):
    """What analysis needs is in the tasks' model modules: no training module, sklearn, pandas,
    timm, MONAI or torchvision is loaded by importing the pipeline and analysing a synthetic slice."""
    from spinedx.synth.mri import generate_mri_dataset

    root = generate_mri_dataset(tmp_path / "mri", n_patients=1, seed=3, image_size=(320, 320))
    image = sorted((root / "images").glob("*.png"))[0]
    script = f"FORBIDDEN = {FORBIDDEN_AFTER_ANALYSIS!r}\n" + ANALYSE_ONE_SLICE
    done = subprocess.run(
        [sys.executable, "-c", script, str(image), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "", f"loaded during analysis:\n{done.stdout}"

"""Study-level analysis: a folder of several series gives one findings file with fused per-level grades."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from spinedx import api
from spinedx.io.findings import Findings
from spinedx.pipelines.analyze import analyze_inputs
from spinedx.pipelines.mri_discs.pipeline import T1_PFIRRMANN_WARNING, MriDiscPipeline
from spinedx.pipelines.study import SCHEMA, fuse_levels, is_study

# Sagittal stack in LPS: columns run posterior, rows run inferior (cranial up), slices run to the left.
SAGITTAL_DIRECTION = (0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0)


@pytest.fixture(scope="module")
def pipeline() -> MriDiscPipeline:
    return MriDiscPipeline.bundled()


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """One synthetic patient: its T1 and T2 slices as PNG series, a 5-slice NIfTI volume of the T2
    slice, and a file that is no image."""
    root = tmp_path_factory.mktemp("synth")
    api.synth_mri(root / "synth", n_patients=1, seed=3, image_size=384)
    folder = root / "study-1"
    folder.mkdir()
    for sequence in ("t1", "t2"):
        (folder / f"{sequence}.png").write_bytes(
            (root / "synth" / "images" / f"1_{sequence}.png").read_bytes()
        )
    slice_ = np.asarray(Image.open(root / "synth" / "images" / "1_t2.png"), dtype=np.int16)
    volume = sitk.GetImageFromArray(np.stack([slice_] * 5))
    volume.SetDirection(SAGITTAL_DIRECTION)
    volume.SetSpacing((0.8, 0.8, 4.0))
    sitk.WriteImage(volume, str(folder / "t2_volume.nii.gz"))
    (folder / "notes.png").write_text("not an image")
    return folder


def test_a_study_gives_one_fused_findings_file(study, pipeline, tmp_path):
    (result,) = analyze_inputs([study], tmp_path / "out", pipeline=pipeline)
    assert result.error is None and result.out_dir == tmp_path / "out" / "study-1"
    fused = json.loads((result.out_dir / "findings.json").read_text())
    assert fused == result.study and fused["schema"] == SCHEMA
    series = {entry["name"]: entry for entry in fused["series"]}
    assert set(series) == {"t1", "t2", "t2_volume", "notes"}
    assert series["notes"]["error"] and series["notes"]["folder"] is None
    assert series["t2_volume"]["n_slices_analysed"] == 3 and series["t1"]["n_slices_analysed"] == 1
    for name in ("t1", "t2", "t2_volume"):
        assert (result.out_dir / series[name]["folder"] / "findings.json").is_file()
    levels = {level["level"]: level for level in fused["levels"]}
    assert {"L5/S1", "L4/L5", "L3/L4"} <= set(levels)
    lowest = levels["L5/S1"]
    assert lowest["n_observations"] == len(lowest["evidence"]) == 5  # t1, t2 and three volume slices
    assert {entry["series"] for entry in lowest["evidence"]} == {"t1", "t2", "t2_volume"}
    expected = np.mean([entry["grades"]["herniation"]["probability"] for entry in lowest["evidence"]])
    assert lowest["grades"]["herniation"]["probability"] == pytest.approx(expected)
    # Pfirrmann, a T2 grade, from the T2-weighted series alone (told by their names here).
    assert {entry["series"]: entry["weighting"] for entry in lowest["evidence"]} == {
        "t1": "T1", "t2": "T2", "t2_volume": "T2"
    }  # fmt: skip
    t2_vectors = [entry["grades"]["pfirrmann"]["probabilities"] for entry in lowest["evidence"]
                  if entry["weighting"] == "T2"]  # fmt: skip
    assert lowest["pfirrmann_from"] == "T2-weighted series"
    assert lowest["grades"]["pfirrmann"]["probabilities"] == pytest.approx(np.mean(t2_vectors, axis=0))
    assert T1_PFIRRMANN_WARNING in series["t1"]["warnings"] and not series["t2"]["warnings"]
    html = (result.out_dir / "report.html").read_text()
    assert "L5/S1" in html and "notes" in html and "series/t1/report.html" in html


def _findings(
    level_probabilities: dict[str, tuple[float, list[float]]], weighting: str | None = None
) -> Findings:
    discs = []
    for label, (level, (herniation, pfirrmann)) in enumerate(level_probabilities.items(), start=1):
        probability = {"probability": herniation}
        discs.append(
            {
                "level": level, "ivd_label": label, "box": [0, 0, 10, 10], "score": 0.9,
                "grades": {
                    "herniation": probability, "bulging": probability, "narrowing": probability,
                    "up_endplate": probability, "low_endplate": probability, "spondylolisthesis": probability,
                    "pfirrmann": {"grade": int(np.argmax(pfirrmann)) + 1, "probabilities": pfirrmann},
                    "modic": {"grade": 0, "probabilities": [1.0, 0.0, 0.0, 0.0]},
                },
                "measurements": {"height_mm": None, "height_px": 10.0, "height_ratio": None},
            }
        )  # fmt: skip
    return Findings.model_validate(
        {"input": {"path": "x", "image_id": "x", "task": "mri-discs", "width": 64, "height": 64,
                   "weighting": weighting},
         "model": {"name": "m", "version": "1"}, "discs": discs, "timing_s": {"total": 0.0}}
    )  # fmt: skip


def test_fusion_averages_the_probabilities_of_every_observation():
    first = _findings({"L5/S1": (0.2, [0.0, 0.0, 1.0, 0.0, 0.0]), "L4/L5": (0.9, [0.0, 1.0, 0.0, 0.0, 0.0])})
    second = _findings({"L5/S1": (0.6, [0.0, 0.0, 0.0, 0.0, 1.0])})
    fused = fuse_levels([("t1", None, first), ("t2", None, second)])
    assert [level["level"] for level in fused] == ["L5/S1", "L4/L5"]
    lowest = fused[0]
    assert lowest["grades"]["herniation"]["probability"] == pytest.approx(0.4)
    assert lowest["grades"]["pfirrmann"]["probabilities"] == pytest.approx([0, 0, 0.5, 0, 0.5])
    assert lowest["grades"]["pfirrmann"]["grade"] == 4  # rounded expected grade (3 + 5) / 2
    assert lowest["n_observations"] == 2 and fused[1]["n_observations"] == 1
    assert lowest["pfirrmann_from"] == "all series"  # neither observation's weighting is known


def test_pfirrmann_is_fused_from_the_t2_weighted_series_when_there_are_any():
    t1 = _findings(
        {"L5/S1": (0.2, [0.0, 1.0, 0.0, 0.0, 0.0]), "L4/L5": (0.2, [1.0, 0.0, 0.0, 0.0, 0.0])}, "T1"
    )
    t2 = _findings({"L5/S1": (0.6, [0.0, 0.0, 0.0, 1.0, 0.0])}, "T2")
    lowest, above = fuse_levels([("a", None, t1), ("b", None, t2)])
    assert lowest["grades"]["pfirrmann"]["probabilities"] == pytest.approx([0, 0, 0, 1, 0])
    assert lowest["grades"]["herniation"]["probability"] == pytest.approx(0.4)  # every series still
    assert lowest["pfirrmann_from"] == "T2-weighted series"
    assert (
        above["pfirrmann_from"] == "all series" and above["grades"]["pfirrmann"]["grade"] == 1
    )  # no T2 there


def test_a_folder_of_dicom_files_is_one_series_not_a_study(tmp_path):
    series = tmp_path / "series"
    series.mkdir()
    for index in range(3):
        (series / f"{index}.dcm").write_bytes(b"\0" * 128 + b"DICM")
    assert not is_study(series)
    study = tmp_path / "study"
    study.mkdir()
    (study / "sagittal_t2").mkdir()
    assert is_study(study)
    assert not is_study(study / "missing")

"""The analyze path with stand-in models: findings schema, files written, task resolution, bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from spinedx.cli import app
from spinedx.errors import InputError
from spinedx.io.findings import SCHEMA, read_findings
from spinedx.io.output_location import output_stem as input_stem
from spinedx.io.volumes import read_sagittal
from spinedx.pipelines import analyze as analyze_module
from spinedx.pipelines.analyze import analyze_inputs, resolve_task
from spinedx.pipelines.mri_discs.measure import disc_heights
from spinedx.pipelines.mri_discs.pipeline import NO_DISC_WARNING, MriDiscPipeline
from spinedx.tasks.disc_localization.model import DiscDetection

BOXES = [(40.0, 150.0, 90.0, 170.0), (42.0, 120.0, 92.0, 142.0), (44.0, 90.0, 94.0, 100.0)]


class StubLocalizer:
    def detect(self, pixels):
        levels = ["L5/S1", "L4/L5", "L3/L4"]
        return [DiscDetection(box, 0.9, i + 1, levels[i]) for i, box in enumerate(BOXES)], []


class NoDiscLocalizer:
    def detect(self, pixels):
        return [], []


class StubGrader:
    canal_model_sha256 = None  # no canal fusion
    thresholds: dict[str, float] = {}
    pfirrmann_decode = "expected"

    def operating_points(self, fused):
        return dict(self.thresholds)

    def grade(self, pixels, boxes, ivd_labels, canal_logits=None):
        probability = {"probability": 0.7}
        return [
            {
                "herniation": probability, "bulging": {"probability": 0.2}, "narrowing": probability,
                "pfirrmann": {"grade": 4, "probabilities": [0.0, 0.1, 0.2, 0.6, 0.1]},
                "modic": {"grade": 0, "probabilities": [0.9, 0.05, 0.05, 0.0]},
                "up_endplate": probability, "low_endplate": probability, "spondylolisthesis": {"probability": 0.01},
            }
            for _ in boxes
        ]  # fmt: skip

    def evidence_finding(self, grades):
        return "herniation"

    def evidence(self, pixels, boxes, ivd_labels, findings):
        """Full evidence inside each box, none elsewhere."""
        heatmaps = []
        for xmin, ymin, xmax, ymax in boxes:
            heatmap = np.zeros(np.shape(pixels), dtype=np.float32)
            heatmap[int(ymin) : int(ymax), int(xmin) : int(xmax)] = 1.0
            heatmaps.append(heatmap)
        return heatmaps

    def grade_and_explain(self, pixels, boxes, ivd_labels, canal_logits=None):
        grades = self.grade(pixels, boxes, ivd_labels)
        explained = [self.evidence_finding(grade) for grade in grades]
        return grades, explained, self.evidence(pixels, boxes, ivd_labels, explained)


@pytest.fixture
def slice_png(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "case_01.png"
    Image.fromarray(rng.integers(0, 255, (256, 200), dtype=np.uint8)).save(path)
    return path


def stub_pipeline(localizer=None) -> MriDiscPipeline:
    return MriDiscPipeline(localizer or StubLocalizer(), StubGrader(), "test")


def test_findings_files_and_schema(slice_png, tmp_path):
    (result,) = analyze_inputs([slice_png], tmp_path / "out", "mri-discs", stub_pipeline())
    assert result.error is None
    folder = tmp_path / "out" / "case_01"
    assert {p.name for p in folder.iterdir()} == {"findings.json", "overlay.png", "report.html", "evidence"}
    raw = json.loads((folder / "findings.json").read_text())
    assert raw["schema"] == SCHEMA
    assert raw["input"] == {
        "path": str(slice_png), "image_id": "case_01", "task": "mri-discs", "modality": None,
        "width": 200, "height": 256, "pixel_spacing_mm": None, "slice_index": None, "weighting": None,
    }  # fmt: skip
    assert [disc["level"] for disc in raw["discs"]] == ["L5/S1", "L4/L5", "L3/L4"]
    first = raw["discs"][0]
    assert first["ivd_label"] == 1 and first["box"] == list(BOXES[0])
    assert first["grades"]["pfirrmann"]["grade"] == 4 and len(first["grades"]["modic"]["probabilities"]) == 4
    assert first["measurements"] == {
        "height_mm": None,
        "height_px": 20.0,
        "height_ratio": round(20 / 22, 3),
    }
    assert set(raw) >= {"model", "warnings", "timing_s"} and raw["timing_s"]["total"] >= 0
    assert read_findings(folder / "findings.json").discs[1].level == "L4/L5"
    html = (folder / "report.html").read_text()
    assert "L4/L5" in html and "data:image/png;base64," in html
    assert "Evidence (Grad-CAM)" in html and "L4/L5 · herniation 0.70" in html


def test_every_disc_has_its_heatmap_in_place(slice_png, tmp_path):
    (result,) = analyze_inputs([slice_png], tmp_path / "out", "mri-discs", stub_pipeline())
    folder = result.out_dir
    for disc in json.loads((folder / "findings.json").read_text())["discs"]:
        assert disc["evidence"] == {
            "heatmap": f"evidence/{disc['level'].replace('/', '-')}.png",
            "finding": "herniation",
            "model": "disc_grader",  # the stub pipeline has no canal model to fuse with
        }
        heatmap = np.asarray(Image.open(folder / disc["evidence"]["heatmap"]))
        assert heatmap.shape == (256, 200) and heatmap.dtype == np.uint8
        xmin, ymin, xmax, ymax = (int(v) for v in disc["box"])
        assert heatmap[ymin:ymax, xmin:xmax].min() == 255
        assert heatmap.sum() == 255 * (ymax - ymin) * (xmax - xmin)


def test_no_disc_and_constant_images_warn(tmp_path):
    constant = tmp_path / "flat.png"
    Image.fromarray(np.full((64, 64), 100, dtype=np.uint8)).save(constant)
    (flat,) = analyze_inputs([constant], tmp_path / "out", "mri-discs", stub_pipeline())
    assert flat.findings.discs == [] and any("constant" in w for w in flat.findings.warnings)
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8)).save(noise)
    (empty,) = analyze_inputs([noise], tmp_path / "out", "mri-discs", stub_pipeline(NoDiscLocalizer()))
    assert NO_DISC_WARNING in empty.findings.warnings


def test_task_is_required_for_plain_images(slice_png):
    with pytest.raises(InputError, match=r"case_01.png: cannot tell the task.*--task"):
        resolve_task(read_sagittal(slice_png), None)
    with pytest.raises(InputError, match="unknown task"):
        resolve_task(read_sagittal(slice_png), "knee")


def test_batch_goes_on_past_bad_input(slice_png, tmp_path, monkeypatch):
    monkeypatch.setattr(analyze_module.MriDiscPipeline, "bundled", classmethod(lambda cls: stub_pipeline()))
    corrupt = tmp_path / "broken.dcm"
    corrupt.write_bytes(b"\x00" * 128 + b"DICM" + b"garbage")
    result = CliRunner().invoke(
        app,
        [
            "analyze",
            str(corrupt),
            str(slice_png),
            "--out",
            str(tmp_path / "out"),
            "--task",
            "mri-discs",
            "--json",
        ],
    )
    assert result.exit_code == 2
    assert "broken.dcm" in result.stderr
    (line,) = result.stdout.strip().splitlines()
    assert json.loads(line)["input"]["image_id"] == "case_01"


def test_heights_in_mm_and_ratios():
    heights = disc_heights(list(BOXES), [1, 2, 3], (0.5, 0.5))
    assert [h.height_px for h in heights] == [20.0, 22.0, 10.0]
    assert heights[0].height_mm == 10.0
    assert heights[1].height_ratio == pytest.approx(22 / 15)
    assert disc_heights([BOXES[0]], [1], None)[0].height_ratio is None


def test_input_stems():
    assert input_stem(Path("a/b/case.nii.gz")) == "case"
    assert input_stem(Path("a/series_folder")) == "series_folder"


def test_evaluate_discs_with_reference_boxes(tmp_path):
    from spinedx.io.spider import read_spider
    from spinedx.pipelines.mri_discs.evaluate import evaluate_discs
    from spinedx.synth.mri import generate_mri_dataset

    root = generate_mri_dataset(
        tmp_path / "mri", n_patients=3, seed=3, image_size=(192, 192), pixel_spacing_mm=1.8
    )
    dataset = read_spider(root)
    reference = {
        image_id: [
            DiscDetection((r.xmin, r.ymin, r.xmax, r.ymax), 1.0, int(r.ivd_label), r.level)
            for r in rows.sort_values("ivd_label").itertuples()
        ]
        for image_id, rows in dataset.discs.groupby("image_id")
    }
    order = iter(dataset.series["image_id"])

    class ReferenceLocalizer:
        def detect(self, pixels):
            return reference.get(next(order), []), []

    class ThresholdedStubGrader(StubGrader):
        thresholds = {"herniation": 0.5}

    pipeline = MriDiscPipeline(ReferenceLocalizer(), ThresholdedStubGrader(), "test")
    outcome = evaluate_discs(root, tmp_path / "eval", pipeline, n_resamples=20)
    localisation = outcome.metrics["localisation"]
    assert localisation["disc_recall_iou50"]["estimate"] == 1.0
    assert localisation["level_accuracy_of_matched"]["estimate"] == 1.0
    grading = outcome.metrics["grading"]
    assert grading["n_discs"] == len(dataset.discs)
    assert grading["pfirrmann"]["n"] == len(dataset.discs)
    assert "Failure gallery" in outcome.report_path.read_text()
    assert json.loads(outcome.metrics_path.read_text())["localisation"]["n_series"] == dataset.series.shape[0]


def test_synth_mri_cli(tmp_path):
    result = CliRunner().invoke(
        app, ["synth", "mri", "--out", str(tmp_path / "m"), "--patients", "2", "--size", "384"]
    )
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "m" / "images").glob("*.png"))) == 4


def test_task_comes_from_the_dicom_modality(tmp_path):
    from test_io_images import make_dicom, save

    pixels = np.random.default_rng(2).integers(0, 4095, (128, 96), dtype=np.uint16)
    mr = save(make_dicom(pixels, bits_stored=12, Modality="MR", PixelSpacing=[0.5, 0.6]), tmp_path / "mr.dcm")
    (result,) = analyze_inputs([mr], tmp_path / "out", None, stub_pipeline())
    assert result.error is None
    assert result.findings.input.modality == "MR" and result.findings.input.pixel_spacing_mm == [0.5, 0.6]
    assert result.findings.discs[0].measurements.height_mm == 10.0  # 20 px at 0.5 mm per row
    dx = save(make_dicom(pixels, bits_stored=12), tmp_path / "dx.dcm")
    (refused,) = analyze_inputs([dx], tmp_path / "out", None, stub_pipeline())
    assert "Modality DX" in refused.error

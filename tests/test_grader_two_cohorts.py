"""The disc grader on two cohorts: lumbar515 discs boxed by the localiser and graded from their reference
box, grades a cohort lacks masked (never read as 0), a report split left out, the plain-CNN design
(softmax Pfirrmann head, no level input) end to end, the canal fusion of herniation, and
``evaluate-discs --split``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from spinedx import api
from spinedx.errors import InputError
from spinedx.io.images import read_image
from spinedx.io.lumbar515 import read_lumbar515
from spinedx.io.volumes import read_sagittal
from spinedx.pipelines.mri_discs.pipeline import DiscEvidence, MriDiscPipeline
from spinedx.synth.mri import generate_mri_dataset
from spinedx.tasks.canal_stenosis.model import CanalStenosis
from spinedx.tasks.canal_stenosis.network import StenosisNet
from spinedx.tasks.disc_grading import train as training
from spinedx.tasks.disc_grading.config import GraderConfig
from spinedx.tasks.disc_grading.model import DiscGrader
from spinedx.tasks.disc_grading.network import (
    BINARY_TASKS,
    DiscGraderNet,
    pfirrmann_probabilities,
    pfirrmann_score,
)
from spinedx.tasks.disc_localization.model import DiscDetection
from spinedx.tasks.mri_discs.train import CANAL_FUSION_METRICS, fit_canal_fusion


@pytest.fixture(scope="module")
def spider(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth-spider")
    generate_mri_dataset(out, n_patients=4, seed=3, image_size=(192, 192), pixel_spacing_mm=1.8)
    return out


@pytest.fixture
def fake_localizer(lumbar515_cohort, monkeypatch):
    """A localiser that finds each lumbar515 reference disc with a slightly larger box (so its centre is
    inside), plus a stray box over no disc, which must be left out."""
    dataset = read_lumbar515(lumbar515_cohort)
    found = {}
    for image_id, rows in dataset.discs.groupby("image_id"):
        pixels = read_image(dataset.image_path(image_id)).pixels
        found[pixels.tobytes()] = [
            DiscDetection(
                box=(r.xmin - 2, r.ymin - 3, r.xmax + 2, r.ymax + 3),
                score=0.9,
                ivd_label=int(r.ivd_label),
                level=r.level,
            )  # fmt: skip
            for r in rows.itertuples()
        ] + [DiscDetection(box=(1.0, 1.0, 20.0, 10.0), score=0.2, ivd_label=9, level="L0/L1")]

    class FakeLocalizer:
        def detect(self, pixels):
            return found.get(np.asarray(pixels).tobytes(), []), []

    monkeypatch.setattr(training, "_load_localizer", lambda path: (FakeLocalizer(), "e" * 64))
    return dataset


def _config(spider: Path, lumbar515: Path, **extra) -> GraderConfig:
    values = dict(data_root=spider, lumbar515_root=lumbar515, crop_size=40, epochs=1, folds=2, batch_size=16,
                  backbone="resnet10t", pretrained="none", hidden=16, freeze_blocks=0, descriptors=False,
                  level_input=False, pfirrmann_head="softmax", bootstrap_resamples=20, threads=1)  # fmt: skip
    return GraderConfig(**(values | extra))


def test_lumbar515_discs_take_their_reference_grades_and_mask_the_rest(spider, lumbar515_cohort, fake_localizer,
                                                                        tmp_path):  # fmt: skip
    data = training.load_grading_data(_config(spider, lumbar515_cohort), cache_dir=tmp_path)
    table = data.table
    second = table[table["cohort"] == "lumbar515"]
    assert len(second) == len(fake_localizer.discs)  # every reference disc once; the stray box is left out
    assert second["patient"].str.startswith("lumbar515/").all()
    assert second["image_id"].str.startswith("lumbar515/").all()
    for grade in ("herniation", "narrowing", "up_endplate", "low_endplate", "modic"):
        assert second[grade].isna().all(), grade  # not labelled by this cohort: masked, not 0
    reference = fake_localizer.discs.assign(
        patient="lumbar515/" + fake_localizer.discs["patient"].astype(str)
    )
    merged = second.merge(reference, on=["patient", "level"], suffixes=("", "_ref"))
    merged = merged[merged["image_id"] == "lumbar515/" + merged["image_id_ref"]]
    assert len(merged) == len(second)
    for grade in ("bulging", "spondylolisthesis", "pfirrmann"):
        np.testing.assert_array_equal(merged[grade].to_numpy(float), merged[f"{grade}_ref"].to_numpy(float))
    assert second["bulging"].isna().any() and second["pfirrmann"].isna().any()  # ddd boxes; above L3/L4
    assert (table.loc[table["cohort"] == "spider", "herniation"].notna()).all()
    assert data.crops.shape[0] == len(table)
    assert (tmp_path / f"lumbar515_{training.LOCALIZER_CACHE}").is_file()


def test_report_split_patients_are_left_out(spider, lumbar515_cohort, fake_localizer, tmp_path):
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"spider/1": "report", "spider/2": "fit", "lumbar515/3": "report"}))
    table = training.load_grading_data(_config(spider, lumbar515_cohort, report_split=split)).table
    patients = set(table["patient"].astype(str))
    assert "1" not in patients and "lumbar515/3" not in patients
    assert {"2", "lumbar515/1"} <= patients
    split.write_text("[1, 2]")
    with pytest.raises(InputError, match="split.json: expected an object"):
        training.load_grading_data(_config(spider, lumbar515_cohort, report_split=split))


def test_masked_loss_equals_the_loss_of_the_labelled_discs():
    generator = torch.Generator().manual_seed(0)
    outputs = {"binary": torch.randn(4, 6, generator=generator), "pfirrmann": torch.randn(4, 5, generator=generator),
               "modic": torch.randn(4, 4, generator=generator)}  # fmt: skip
    binary = torch.tensor([[0.0, 1, 0, 1, 0, 0], [1, 0, 1, 0, 1, 0]] + [[float("nan")] * 6] * 2)
    pfirrmann = torch.tensor([2.0, 5.0, float("nan"), float("nan")])
    modic = torch.tensor([0.0, 2.0, float("nan"), float("nan")])
    weight = torch.ones(6)
    both, _ = training.grader_loss(
        outputs, binary, pfirrmann, modic, pos_weight=weight, pfirrmann_head="softmax"
    )
    first = {key: value[:2] for key, value in outputs.items()}
    alone, _ = training.grader_loss(first, binary[:2], pfirrmann[:2], modic[:2], pos_weight=weight,
                                    pfirrmann_head="softmax")  # fmt: skip
    assert torch.isfinite(both) and float(both) == pytest.approx(float(alone))
    # A batch in which nothing is labelled trains nothing (zero loss, no NaN).
    nothing, _ = training.grader_loss(outputs, torch.full((4, 6), float("nan")), torch.full((4,), float("nan")),
                                      torch.full((4,), float("nan")), pos_weight=weight)  # fmt: skip
    assert float(nothing) == 0.0


def test_softmax_head_without_level_input():
    net = DiscGraderNet("resnet10t", pretrained="none", hidden=8, descriptors=False, level_input=False,
                        pfirrmann_head="softmax").eval()  # fmt: skip
    images = torch.rand(3, 1, 48, 48)
    with torch.no_grad():
        out = net(images, torch.tensor([1, 2, 3]))
        same = net(images, torch.tensor([7, 8, 9]))  # the level is not an input
    assert out["pfirrmann"].shape == (3, 5)
    torch.testing.assert_close(out["pfirrmann"], same["pfirrmann"])
    probabilities = pfirrmann_probabilities(out["pfirrmann"], "softmax")
    torch.testing.assert_close(probabilities.sum(1), torch.ones(3))
    worse = torch.tensor([[0.0, 0, 0, 0, 5], [5.0, 0, 0, 0, 0]])
    score = pfirrmann_score(worse, "softmax")
    assert score[0] > 4.5 and score[1] < 1.5  # the expected grade, what Grad-CAM explains
    with pytest.raises(InputError, match="pfirrmann_head"):
        DiscGraderNet("resnet10t", pfirrmann_head="ordinal")


def test_two_cohort_grader_reports_each_cohort_and_grades_end_to_end(spider, lumbar515_cohort, fake_localizer,
                                                                     tmp_path):  # fmt: skip
    config = _config(spider, lumbar515_cohort)
    result = training.cross_validate_grader(config, tmp_path / "cv")
    cohorts = result["cohorts"]
    assert set(cohorts) == {"spider", "lumbar515"}
    second = cohorts["lumbar515"]["summary"]["model"]
    assert "bulging_auroc" in second and "pfirrmann_kappa" in second
    assert "herniation_auroc" not in second and "modic_accuracy" not in second  # unlabelled there
    assert "herniation_auroc" in cohorts["spider"]["summary"]["model"]
    oof = (tmp_path / "cv" / training.OOF_PREDICTIONS).read_text().splitlines()
    assert "cohort" in oof[0].split(",") and "pfirrmann_5_logit" in oof[0].split(",")
    path = training.train_grader(config, tmp_path / "grader.pt", cv_dir=tmp_path / "cv")
    grader = DiscGrader.load(path)
    assert grader.pfirrmann_head == "softmax"
    pixels = read_image(next((spider / "images").glob("*.png"))).pixels
    boxes, labels = [(60.0, 80.0, 120.0, 100.0), (62.0, 105.0, 122.0, 125.0)], [2, 1]
    grades, explained, heatmaps = grader.grade_and_explain(pixels, boxes, labels)
    assert [len(g["pfirrmann"]["probabilities"]) for g in grades] == [5, 5]
    assert sum(grades[0]["pfirrmann"]["probabilities"]) == pytest.approx(1.0)
    assert len(heatmaps) == 2 and heatmaps[0].shape == pixels.shape and heatmaps[0].max() > 0
    grader.compile(path)  # bundled graders are traced programs: same grades
    traced = DiscGrader.load(path).grade(pixels, boxes, labels)
    assert traced[0]["pfirrmann"]["probabilities"] == pytest.approx(grades[0]["pfirrmann"]["probabilities"])
    _check_canal_fusion(config, path, tmp_path / "cv", pixels, boxes, labels)


def _check_canal_fusion(config: GraderConfig, path: Path, cv_dir: Path, pixels, boxes, labels) -> None:
    """The canal fusion: fitted on the CV's out-of-fold logits (SPIDER herniation, the only cohort that
    labels it), herniation alone changes, and a pipeline fuses only with the canal model it was fitted with."""
    torch.manual_seed(0)
    canal = CanalStenosis(StenosisNet("resnet10t"), crop={"size": 32, "scale": 1.3},
                          calibration={"a": 1.0, "b": 0.0}, architecture={"backbone": "resnet10t"},
                          sha256="c" * 64)  # fmt: skip
    report = fit_canal_fusion(config, path, cv_dir, canal, n_resamples=20)
    herniation = report["findings"]["herniation"]
    assert herniation["cohorts"] == ["spider"]
    assert {"fused", "grader", "canal", "level_prior"} <= set(herniation)
    assert "sensitivity" in herniation["fused"] and "sensitivity" not in herniation["level_prior"]
    assert json.loads((cv_dir / CANAL_FUSION_METRICS).read_text())["canal_sha256"] == "c" * 64
    grader = DiscGrader.load(path)
    assert grader.canal_model_sha256 == "c" * 64
    entry = grader.canal_fusion["findings"]["herniation"]
    assert grader.operating_points(fused=True)["herniation"] == entry["threshold"]
    assert grader.operating_points(fused=False) == grader.thresholds
    plain = grader.probabilities(pixels, boxes, labels)["binary"]
    low = grader.probabilities(pixels, boxes, labels, canal_logits=[-4.0, -4.0])["binary"]
    high = grader.probabilities(pixels, boxes, labels, canal_logits=[4.0, 4.0])["binary"]
    column = BINARY_TASKS.index("herniation")
    others = [j for j in range(len(BINARY_TASKS)) if j != column]
    np.testing.assert_allclose(low[:, others], plain[:, others])
    assert np.all(np.sign(high[:, column] - low[:, column]) == np.sign(entry["weights"][1]))

    pipeline = MriDiscPipeline(training._load_localizer(None)[0], grader, "test", stenosis=canal)
    assert pipeline.fuses_canal and pipeline.operating_points["herniation"] == entry["threshold"]
    image_path = next(iter(_lumbar515_images(config.lumbar515_root)))
    image = read_sagittal(image_path)
    findings = pipeline.analyze(image, "fused")
    found = [disc.box for disc in findings.discs]
    found_labels = [disc.ivd_label for disc in findings.discs]
    expected = grader.grade(
        image.pixels, found, found_labels, canal.logits(image.pixels, found, found_labels)
    )
    assert [disc.grades.herniation.probability for disc in findings.discs] == pytest.approx(
        [grade["herniation"]["probability"] for grade in expected], abs=1e-3
    )
    # A fused finding's heatmap is the canal model's Grad-CAM; other findings keep the grader's.
    heatmaps = [np.zeros(image.pixels.shape, dtype=np.float32) for _ in found[:2]]
    evidence = [DiscEvidence("herniation", heatmaps[0]), DiscEvidence("bulging", heatmaps[1])]
    pipeline._canal_evidence(evidence, image.pixels, found[:2], found_labels[:2])
    assert [(item.finding, item.model) for item in evidence] == [
        ("herniation", "canal_stenosis"), ("bulging", "disc_grader")
    ]  # fmt: skip
    np.testing.assert_allclose(
        evidence[0].heatmap, canal.evidence(image.pixels, found[:1], found_labels[:1])[0]
    )
    canal.sha256 = "d" * 64  # another canal model: the grader's own herniation, its own operating point
    assert not pipeline.fuses_canal and pipeline.operating_points == grader.thresholds


def _lumbar515_images(lumbar515: Path) -> list[Path]:
    dataset = read_lumbar515(lumbar515)
    return [dataset.image_path(image_id) for image_id in dataset.series["image_id"]]


def test_evaluate_discs_split_scores_only_report_patients(lumbar515_cohort, tmp_path):
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"lumbar515/1": "report", "lumbar515/2": "report", "lumbar515/3": "fit"}))
    result = api.evaluate_discs(lumbar515_cohort, tmp_path / "eval", n_resamples=20, split=split)
    metrics = json.loads(result.metrics_path.read_text())
    assert metrics["localisation"]["n_series"] == 4  # t1 + t2 of two patients
    assert metrics["patients"].startswith("report patients of")
    split.write_text(json.dumps({"spider/1": "report"}))
    with pytest.raises(InputError, match="no report patient of this lumbar515 folder"):
        api.evaluate_discs(lumbar515_cohort, tmp_path / "eval2", n_resamples=20, split=split)


def test_stenosis_trainer_leaves_the_report_patients_out(lumbar515_cohort, tmp_path):
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"lumbar515/1": "report", "lumbar515/2": "fit", "spider/3": "report"}))
    config = tmp_path / "stenosis.yaml"
    config.write_text(
        f"task: canal-stenosis\ndata_root: {lumbar515_cohort}\nreport_split: {split}\npretrained: none\n"
        "backbone: resnet10t\ncrop_size: 32\nepochs: 1\nfolds: 2\nbatch_size: 16\nbootstrap_resamples: 20\n"
    )
    paths = api.train(config, tmp_path / "run")
    assert (
        json.loads(paths["cv_metrics"].read_text())["n_patients"] == 5
    )  # 6 synthetic patients, one held out
    tested = set()
    for fold in range(2):
        tested |= set(
            json.loads((tmp_path / "run" / "cv" / f"fold_{fold}" / "fold.json").read_text())["test_patients"]
        )
    assert "1" not in tested and "2" in tested

"""The bundled MRI disc pipeline gives the same findings in ONNX Runtime as in torch eager."""

import numpy as np
import pytest
import torch

from spinedx.io.volumes import read_sagittal
from spinedx.pipelines.mri_discs.pipeline import MriDiscPipeline

pytest.importorskip("onnxruntime")


def test_onnx_runtime_pipeline_matches_torch(tmp_path):
    from spinedx.pipelines.mri_discs.onnx_engine import onnx_runtime_pipeline
    from spinedx.synth.mri import generate_mri_dataset

    torch.set_num_threads(1)
    root = generate_mri_dataset(tmp_path / "mri", n_patients=1, seed=11, image_size=(384, 384))
    image = read_sagittal(next((root / "images").glob("*.png")))
    eager = MriDiscPipeline.bundled()
    onnx = onnx_runtime_pipeline(eager, tmp_path / "onnx", threads=1)
    assert (tmp_path / "onnx" / "disc_grader.onnx").is_file()
    assert (onnx.segmenter is None) == (eager.segmenter is None)
    expected, actual = eager.analyze(image, "case"), onnx.analyze(image, "case")
    assert len(expected.discs) == len(actual.discs) > 0
    assert actual.model.version.endswith("+onnxruntime")
    for want, got in zip(expected.discs, actual.discs, strict=True):
        assert got.level == want.level
        np.testing.assert_allclose(got.box, want.box, atol=0.5)
        for name in ("herniation", "bulging", "narrowing"):
            assert getattr(got.grades, name).probability == pytest.approx(
                getattr(want.grades, name).probability, abs=1e-3
            )
        np.testing.assert_allclose(
            got.grades.pfirrmann.probabilities, want.grades.pfirrmann.probabilities, atol=1e-3
        )
        if want.measurements.disc_area_mm2 is not None:  # with the bundled segmenter
            assert got.measurements.disc_area_mm2 == pytest.approx(want.measurements.disc_area_mm2, rel=0.02)

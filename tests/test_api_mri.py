"""The MRI half of the Python API, with the bundled models on synthetic slices (no shared data)."""

import json

import torch

from spinedx import api


def test_synth_analyze_and_evaluate_discs(tmp_path):
    torch.set_num_threads(1)
    root = api.synth_mri(tmp_path / "mri", n_patients=1, seed=5)
    images = sorted((root / "images").glob("*.png"))
    results = api.analyze([*images, tmp_path / "missing.png"], tmp_path / "out", task="mri-discs")
    assert [r.error is None for r in results] == [True, True, False]
    assert "missing.png" in results[-1].error
    for result in results[:2]:
        saved = json.loads((result.out_dir / "findings.json").read_text())
        assert saved["schema"] == "spinedx/findings@1" and saved["input"]["image_id"] == result.path.stem
    outcome = api.evaluate_discs(root, tmp_path / "eval", n_resamples=20)
    assert outcome.metrics["localisation"]["n_series"] == 2
    assert outcome.metrics["models"] == "one model for all patients"
    assert outcome.report_path.is_file()

"""What a cold start of `spinedx analyze` pays once: each bundled file is read and verified once."""

from pathlib import Path

from spinedx.models import registry
from spinedx.pipelines.mri_discs.pipeline import MriDiscPipeline


def test_bundled_pipeline_hashes_each_bundled_file_once(monkeypatch) -> None:
    hashed: list[str] = []
    sha256_of = registry.sha256_of

    def counting_sha256_of(path: Path) -> str:
        hashed.append(Path(path).name)
        return sha256_of(path)

    monkeypatch.setattr(registry, "sha256_of", counting_sha256_of)
    pipeline = MriDiscPipeline.bundled()
    loaded = [
        pipeline.localizer,
        pipeline.grader,
        pipeline.segmenter,
        pipeline.input_check,
        pipeline.stenosis,
    ]
    assert len(hashed) == sum(model is not None for model in loaded)
    assert len(set(hashed)) == len(hashed), f"hashed more than once: {sorted(hashed)}"

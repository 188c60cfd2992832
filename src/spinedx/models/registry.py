"""Bundled model weights: resolved offline from the package, each load checked against its sha256.

``weights/manifest.json`` lists every bundled file with its sha256, version and model card.
``SPINEDX_WEIGHTS_DIR`` points at another folder with the same layout (e.g. retrained weights);
its manifest is checked the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from spinedx.errors import InputError
from spinedx.io.atomic import atomic_write_text

BUNDLED_DIR = Path(__file__).resolve().parent / "weights"
ENV_OVERRIDE = "SPINEDX_WEIGHTS_DIR"


@dataclass(frozen=True)
class WeightsEntry:
    name: str
    path: Path
    sha256: str
    version: str


def weights_dir() -> Path:
    return Path(os.environ.get(ENV_OVERRIDE) or BUNDLED_DIR)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def has_weights(name: str) -> bool:
    """Whether the manifest lists ``name`` (optional models are used only when present)."""
    manifest_path = weights_dir() / "manifest.json"
    return manifest_path.is_file() and name in json.loads(manifest_path.read_text())


def manifest_entry(name: str) -> dict:
    """The manifest's record of ``name`` (file, sha256, version), or ``{}`` when it is not bundled."""
    manifest_path = weights_dir() / "manifest.json"
    if not manifest_path.is_file():
        return {}
    return dict(json.loads(manifest_path.read_text()).get(name, {}))


def resolve_weights(name: str) -> WeightsEntry:
    """The verified weight file registered as ``name``."""
    folder = weights_dir()
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise InputError(f"{manifest_path}: no weights manifest (set {ENV_OVERRIDE} to a folder holding one)")
    manifest = json.loads(manifest_path.read_text())
    if name not in manifest:
        raise InputError(f"{manifest_path}: no entry '{name}' (has: {', '.join(sorted(manifest))})")
    entry = manifest[name]
    path = folder / entry["file"]
    if not path.is_file():
        raise InputError(f"{path}: weights file listed in {manifest_path.name} is missing")
    actual = sha256_of(path)
    if actual != entry["sha256"]:
        raise InputError(
            f"{path}: sha256 {actual[:12]}… does not match the manifest ({entry['sha256'][:12]}…)"
        )
    return WeightsEntry(name, path, actual, entry["version"])


def register_weights(name: str, path: Path, version: str, folder: Path | None = None) -> None:
    """Record ``path`` (inside ``folder``) in the manifest with its sha256."""
    folder = Path(folder or weights_dir())
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    manifest[name] = {"file": Path(path).name, "sha256": sha256_of(Path(path)), "version": version}
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def bundle_model(
    name: str, trained: Path, version: str, folder: Path, compile_file: Callable[[Path], Path]
) -> Path:
    """Install the trained model file ``trained`` in ``folder`` as ``name``: copied, compiled to its
    traced program (``compile_file`` rewrites it in place, so analysis needs no model library), and
    recorded in the manifest with its sha256."""
    target = Path(folder) / Path(trained).name
    target.write_bytes(Path(trained).read_bytes())
    compile_file(target)
    register_weights(name, target, version, Path(folder))
    return target

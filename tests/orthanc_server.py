"""A throwaway Orthanc for tests: Debian's binary on loopback with a temporary JSON configuration.

No systemd and no /etc/orthanc: the configuration below is the whole of it (free HTTP and DICOM
ports, storage in a temporary folder, the DICOMweb plugin, a short StableAge, no remote access).
docs/how-to/orthanc.md shows the same configuration; :func:`orthanc_config` is its one source.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

ORTHANC_BINARY = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
ORTHANC_AE = "ORTHANC"
SPINEDX_MODALITY = "spinedx"
"""Orthanc's name for spinedx's C-STORE receiver (``POST /modalities/spinedx/store``)."""
STARTUP_SECONDS = 30


def orthanc_missing() -> str | None:
    """Why Orthanc cannot run here, or None when it can."""
    for path, package in ((ORTHANC_BINARY, "orthanc"), (DICOMWEB_PLUGIN, "orthanc-dicomweb")):
        if not path.exists():
            return f"{path} not installed (apt install {package})"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def orthanc_config(
    storage: Path, http_port: int, dicom_port: int, spinedx_port: int, stable_age: int = 1
) -> dict:
    """Orthanc's configuration: loopback only, DICOMweb on, stores accepted from spinedx's AE only."""
    return {
        "Name": "spinedx-test",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomAet": ORTHANC_AE,
        "DicomPort": dicom_port,
        # C-STORE only from the AE registered below, at 127.0.0.1.
        "DicomAlwaysAllowStore": False,
        "DicomCheckModalityHost": True,
        "DicomModalities": {SPINEDX_MODALITY: ["SPINEDX", "127.0.0.1", spinedx_port]},
        "StableAge": stable_age,
        "SaveJobs": False,
        "ConcurrentJobs": 1,
        "HttpCompressionEnabled": False,
    }


@dataclass
class OrthancServer:
    url: str
    dicom_port: int
    spinedx_port: int
    """The port Orthanc sends to for its ``spinedx`` modality (a test's C-STORE receiver)."""
    log: Path


@contextmanager
def orthanc_server(stable_age: int = 1) -> Iterator[OrthancServer]:
    """Start Orthanc, wait until ``/system`` answers, yield it; stop it and delete its files after."""
    missing = orthanc_missing()
    if missing:
        raise FileNotFoundError(missing)
    root = Path(tempfile.mkdtemp(prefix="spinedx-orthanc-"))
    http_port, dicom_port, spinedx_port = free_port(), free_port(), free_port()
    config = root / "orthanc.json"
    config.write_text(
        json.dumps(orthanc_config(root / "db", http_port, dicom_port, spinedx_port, stable_age), indent=2)
    )
    log = root / "orthanc.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [str(ORTHANC_BINARY), "--no-jobs", str(config)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=root,
        )
    url = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {process.returncode}: {log.read_text()[-2000:]}")
            try:
                if requests.get(f"{url}/system", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not answer within {STARTUP_SECONDS} s")
            time.sleep(0.1)
        yield OrthancServer(url, dicom_port, spinedx_port, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(root, ignore_errors=True)

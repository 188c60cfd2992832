"""A throwaway PostgreSQL cluster for tests: initdb + pg_ctl in a temp folder, loopback, a free port.

Debian's server binaries are used (``/usr/lib/postgresql/<version>/bin``); when they are absent the
caller skips. PostgreSQL refuses to run as root, so under root the cluster belongs to ``nobody``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

POSTGRES_BINARIES = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
UNPRIVILEGED_USER = "nobody"


def postgres_bin() -> Path | None:
    """Folder holding initdb and pg_ctl of the newest installed PostgreSQL, or None."""
    for folder in POSTGRES_BINARIES:
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_cluster_owner(command: list[str]) -> list[str]:
    return ["runuser", "-u", UNPRIVILEGED_USER, "--", *command] if os.geteuid() == 0 else command


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a cluster and yield its SQLAlchemy URL (``postgresql+psycopg://...``); stop and delete it after."""
    binaries = postgres_bin()
    if binaries is None:
        raise FileNotFoundError("PostgreSQL server binaries (/usr/lib/postgresql/*/bin) not installed")
    root = Path(tempfile.mkdtemp(prefix="spinedx-pg-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, UNPRIVILEGED_USER)
        shutil.chown(sockets, UNPRIVILEGED_USER)
    port = _free_port()
    run = {"check": True, "capture_output": True, "cwd": root, "timeout": 60}
    try:
        subprocess.run(
            _as_cluster_owner(
                [str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"]
            ),
            **run,
        )
        options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            _as_cluster_owner(
                [
                    str(binaries / "pg_ctl"),
                    "-D",
                    str(data),
                    "-o",
                    options,
                    "-l",
                    str(root / "log"),
                    "-w",
                    "start",
                ]
            ),
            **run,
        )
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run(
                _as_cluster_owner(
                    [str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
                ),
                **run,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)

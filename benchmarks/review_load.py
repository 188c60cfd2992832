"""Load on the review service: concurrent uploads, then a server killed mid-queue and restarted.

    python benchmarks/review_load.py [--uploads 50] [--restart-uploads 20] [--workers 1] [--timeout 600]

Starts ``spinedx serve`` on 127.0.0.1 (a free port, a temporary data folder, a random token) in a
subprocess and sends ``--uploads`` concurrent uploads of one synthetic 384x384 sagittal slice. It
waits until every study is analysed and prints the errors (rejected uploads or failed analyses),
the lost studies (accepted but never finished), p50/p95 upload latency (request to 202), the
end-to-end time (first request to last study done) and the throughput. Then it queues
``--restart-uploads`` more, kills the server (SIGKILL) once a few are done, starts it again on the
same folder and checks that every queued study finishes. Loopback only; every wait is bounded by
``--timeout``; exit code 1 when anything is lost or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class Server:
    """``spinedx serve`` in a subprocess, on loopback."""

    def __init__(self, data: Path, port: int, token: str, workers: int, log: Path):
        self.command = [sys.executable, "-m", "spinedx", "serve", "--host", HOST, "--port", str(port)]
        self.command += ["--data", str(data), "--workers", str(workers), "--max-queued", "200"]
        self.env = dict(os.environ, SPINEDX_TOKEN=token, HF_HUB_OFFLINE="1")
        self.url = f"http://{HOST}:{port}"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}; see {self.log}")
            try:
                if httpx.get(f"{self.url}/api/studies", headers=self.headers, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError("server did not start")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


async def upload_all(server: Server, image: bytes, n: int) -> tuple[list[str], list[float], int]:
    """(study ids, upload latencies in s, errors) of ``n`` concurrent uploads."""
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=120) as client:

        async def one(k: int) -> tuple[str | None, float]:
            start = time.perf_counter()
            response = await client.post("/api/studies", files={"file": (f"slice-{k}.png", image)})
            elapsed = time.perf_counter() - start
            return (response.json()["id"] if response.status_code == 202 else None), elapsed

        results = await asyncio.gather(*(one(k) for k in range(n)))
    ids = [study_id for study_id, _ in results if study_id]
    return ids, [elapsed for _, elapsed in results], n - len(ids)


def wait_for(server: Server, ids: list[str], timeout: float, until_done: int | None = None) -> dict[str, str]:
    """Status of each study once all are finished (or ``until_done`` of them), or at the timeout."""
    deadline = time.monotonic() + timeout
    wanted = set(ids)
    while True:
        listed = httpx.get(f"{server.url}/api/studies", headers=server.headers, timeout=30).json()
        status = {study["id"]: study["status"] for study in listed if study["id"] in wanted}
        finished = sum(value in ("done", "failed") for value in status.values())
        if finished >= (len(ids) if until_done is None else until_done) or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=50)
    parser.add_argument("--restart-uploads", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600.0, help="bound on each wait, seconds")
    args = parser.parse_args()

    from spinedx.synth.mri import generate_mri_dataset

    work = Path(tempfile.mkdtemp(prefix="spinedx-load-"))
    root = generate_mri_dataset(work / "mri", n_patients=1, seed=21, image_size=(384, 384))
    image = (root / "images" / "1_t2.png").read_bytes()
    server = Server(work / "data", free_port(), secrets.token_urlsafe(16), args.workers, work / "server.log")
    ok = True
    try:
        server.start(args.timeout)
        started = time.perf_counter()
        ids, latencies, rejected = asyncio.run(upload_all(server, image, args.uploads))
        status = wait_for(server, ids, args.timeout)
        elapsed = time.perf_counter() - started
        failed = sum(value == "failed" for value in status.values())
        lost = len(ids) - sum(value in ("done", "failed") for value in status.values())
        print(f"{args.uploads} concurrent uploads of a 384x384 slice, {args.workers} worker(s):")
        print(f"  errors: {rejected + failed} (rejected uploads {rejected}, failed analyses {failed})")
        print(f"  lost: {lost} (accepted but not finished within --timeout {args.timeout:.0f} s)")
        print(
            f"  upload latency p50 {percentile(latencies, 50) * 1000:.0f} ms, p95 {percentile(latencies, 95) * 1000:.0f} ms"
        )
        print(f"  end to end: {elapsed:.1f} s; throughput {len(ids) / elapsed:.2f} studies/s")
        ok = rejected == failed == lost == 0

        queued, _, rejected = asyncio.run(upload_all(server, image, args.restart_uploads))
        before = wait_for(server, queued, args.timeout, until_done=2)
        server.kill()
        finished_before = sum(value == "done" for value in before.values())
        server.start(args.timeout)
        after = wait_for(server, queued, args.timeout)
        done = sum(value == "done" for value in after.values())
        total = len(httpx.get(f"{server.url}/api/studies", headers=server.headers, timeout=30).json())
        print(f"kill and restart: {len(queued)} queued, {finished_before} done when the server was killed,")
        print(f"  {done} done after the restart, {len(queued) - done} lost; {total} studies in the store")
        ok = ok and rejected == 0 and done == len(queued) and total == len(ids) + len(queued)
    finally:
        server.stop()
    if ok:
        shutil.rmtree(work, ignore_errors=True)
    print("OK" if ok else f"FAILED (server log: {server.log})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Load test of `tripwire serve` on loopback: single-image requests from a bounded asyncio client.

Starts ``tripwire serve`` (a subprocess, no keys, loopback) on a saved detector, sends one-image
``.npy`` requests of the model's test images from `--concurrency` concurrent clients for
`--duration` seconds, and reports requests answered, failures (any status but 200, any transport
error), images per second, latency p50 / p99, the mean images per model pass (from the server's
``/metrics``) and the server's RSS at the start, every 10 s and at the end (from ``/proc``).
Then, in this process, the bare model's forward throughput at that mean batch size, and the
ratio.

Run it twice to compare: with micro-batching (``--max-batch 32``) and without (``--max-batch 1``).
``--sigterm-at S`` sends SIGTERM to the server S seconds in; requests the server had accepted must
still answer 200 (connection errors after the listener closed are counted apart).

Usage:
    .venv/bin/tripwire fit --model resnet-cifar10 --out det-resnet/ --threads 1
    TRIPWIRE_DATA=../shared/data .venv/bin/python benchmarks/load_serve.py --detector det-resnet \\
        --model resnet-cifar10 --concurrency 32 --duration 60 --max-batch 32
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from tripwire.data import load_source
from tripwire.models.zoo import get_recipe, load_model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


def npy(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, image)
    return buffer.getvalue()


async def load(
    url: str,
    bodies: list[bytes],
    concurrency: int,
    duration: float,
    server: subprocess.Popen[bytes],
    sigterm_at: float | None,
) -> dict[str, object]:
    latencies: list[float] = []
    failures: dict[str, int] = {}
    refused = 0
    stop = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client(k: int) -> None:
        nonlocal refused
        async with httpx.AsyncClient(limits=limits, timeout=60) as http:
            i = k
            while time.perf_counter() < stop:
                start = time.perf_counter()
                try:
                    r = await http.post(
                        f"{url}/v1/score", files={"b": ("b.npy", bodies[i % len(bodies)])}
                    )
                except httpx.ConnectError:  # the listener is closed (after SIGTERM): not accepted
                    refused += 1
                    if server.poll() is not None:
                        return
                    continue
                except httpx.TransportError as e:
                    failures[type(e).__name__] = failures.get(type(e).__name__, 0) + 1
                    continue
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - start)
                else:
                    failures[str(r.status_code)] = failures.get(str(r.status_code), 0) + 1
                i += concurrency

    rss: list[float] = []

    async def sample_rss() -> None:  # every 10 s while the load runs
        while time.perf_counter() < stop and server.poll() is None:
            rss.append(rss_mib(server.pid))
            await asyncio.sleep(10)

    async def terminate() -> None:
        if sigterm_at is not None:
            await asyncio.sleep(sigterm_at)
            server.send_signal(signal.SIGTERM)

    started = time.perf_counter()
    await asyncio.gather(terminate(), sample_rss(), *(client(k) for k in range(concurrency)))
    elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {
        "answered": len(latencies),
        "failures": failures,
        "refused_after_sigterm": refused,
        "images_per_second": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
        "rss_mib_every_10s": [round(r, 1) for r in rss],
    }


def mean_batch(metrics: str) -> float:
    total = float(re.search(r"tripwire_batch_images_sum (\S+)", metrics).group(1))  # type: ignore[union-attr]
    count = float(re.search(r"tripwire_batch_images_count (\S+)", metrics).group(1))  # type: ignore[union-attr]
    return total / max(count, 1)


def bare_forward(model: torch.nn.Module, images: torch.Tensor, batch: int, seconds: float) -> float:
    """Images per second of the model alone on batches of `batch` images."""
    x = images[:batch]
    with torch.no_grad():
        model(x)
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            model(x)
            done += batch
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detector", type=Path, required=True, help="a `tripwire fit` folder")
    parser.add_argument("--model", required=True, help="the zoo model it was fitted on")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--sigterm-at", type=float, default=None)
    parser.add_argument("--out", type=Path, help="append the result as one JSON line")
    args = parser.parse_args()
    source = get_recipe(args.model).source
    images = load_source(source, "evaluation").take(256, seed=0).images
    layout = images.permute(0, 2, 3, 1).numpy()  # N×H×W×C uint8
    bodies = [npy(im) for im in layout]
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "tripwire",
        "serve",
        "--detector",
        str(args.detector),
        "--model",
        args.model,
        "--no-auth",
        "--no-audit",
        "--port",
        str(port),
        "--max-batch",
        str(args.max_batch),
        "--max-wait-ms",
        str(args.max_wait_ms),
    ]
    if args.threads:
        command += ["--threads", str(args.threads)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(1200):
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise SystemExit("the server did not become ready")
        rss_start = rss_mib(server.pid)
        result = asyncio.run(
            load(url, bodies, args.concurrency, args.duration, server, args.sigterm_at)
        )
        if args.sigterm_at is None:
            result["rss_mib_start"], result["rss_mib_end"] = rss_start, rss_mib(server.pid)
            result["mean_images_per_pass"] = mean_batch(httpx.get(f"{url}/metrics").text)
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
        result_code = server.wait(timeout=120)
    result.update(
        vars(args) | {"detector": str(args.detector), "out": None, "server_exit": result_code}
    )
    if args.sigterm_at is None:
        if args.threads:
            torch.set_num_threads(args.threads)
        model = load_model(args.model, train_if_missing=False).eval()
        batch = max(1, round(float(result["mean_images_per_pass"])))  # type: ignore[arg-type]
        bare = bare_forward(model, images.float() / 255, batch, seconds=10)
        result["bare_forward_images_per_second"] = bare
        result["served_over_bare"] = float(result["images_per_second"]) / bare  # type: ignore[arg-type]
    line = json.dumps(result)
    print(line)
    if args.out:
        with args.out.open("a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()

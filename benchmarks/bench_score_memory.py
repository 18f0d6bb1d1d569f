"""Peak memory of `tripwire score` on a large input file: it must not grow with the number of
images (target: under 1 GB for 200,000 MNIST-sized images).

Builds an ``.npz`` of N uint8 28×28 images (MNIST training images repeated) in a temporary
folder, once compressed and once stored, fits the default detector for the zoo's LeNet-5 (or
reuses ``--detector``), then runs ``tripwire score`` on each file in a fresh process and reports
that process's peak resident memory (``ru_maxrss`` of the child) and its wall time. For scale,
the same is measured for N / 4 images: memory that grows with N shows as a difference.

Usage:
    TRIPWIRE_DATA=../shared/data .venv/bin/python benchmarks/bench_score_memory.py --n 200000
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tripwire.data import load_source


def _peak_rss_of(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of `cmd`, run alone in a child process."""
    runner = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t)"
    )
    out = subprocess.run(
        [sys.executable, "-c", runner, *cmd], check=True, capture_output=True, text=True
    ).stdout.split()
    return int(out[0]) / 1024, float(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200_000, help="images in the large file")
    parser.add_argument("--detector", type=Path, help="a fitted detector (default: fit one)")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    tripwire = [sys.executable, "-m", "tripwire", "--quiet"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        detector = args.detector
        if detector is None:
            detector = folder / "det"
            start = time.perf_counter()
            subprocess.run(
                [*tripwire, "fit", "--model", "lenet-mnist", "--out", detector], check=True
            )
            print(f"fitted the default detector in {time.perf_counter() - start:.0f} s")
        mnist = load_source("mnist", "train").images[:, 0].numpy()
        print(f"machine: {os.cpu_count()} CPUs; 1-min load average {os.getloadavg()[0]:.2f}")
        print(f"{'images':>8} {'file':>11} {'size MiB':>9} {'peak RSS MiB':>13} {'wall s':>7}")
        for n in (args.n // 4, args.n):
            x = np.resize(mnist, (n, 28, 28))
            for kind, save in (("stored", np.savez), ("compressed", np.savez_compressed)):
                path = folder / f"x-{n}-{kind}.npz"
                save(path, x=x)
                cmd = [*tripwire, "score", "--detector", str(detector), "--input", str(path)]
                cmd += ["--out", str(folder / "scores.csv"), "--batch-size", str(args.batch_size)]
                rss, wall = _peak_rss_of(cmd)
                with open(folder / "scores.csv") as f:
                    rows = sum(1 for _ in f) - 1
                if rows != n:
                    raise SystemExit(f"scored {rows} rows of {n} images")
                size = path.stat().st_size / 2**20
                print(f"{n:>8} {kind:>11} {size:>9.0f} {rss:>13.0f} {wall:>7.1f}", flush=True)
                path.unlink()
    print(f"this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()

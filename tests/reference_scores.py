"""Reference scores of every registered detector on the contract world, kept in
``tests/reference_scores.json`` so that a change meant to keep a detector's behaviour (a refactor,
a faster kernel) is checked to keep its scores.

Each detector is fitted with the contract's hyper-parameters and scores 24 images: the first 12
new ID test images and the first 12 uniform-noise images. All on one torch thread: on this world
some detectors (ViM's principal space of a 16-unit head with dead units, the uniform detectors'
min–max constants) amplify the rounding differences that another thread count brings.

The fits of some detectors go through numpy, SciPy and scikit-learn (LAPACK, libsvm), whose
results on this ill-conditioned world move with those libraries' builds and the CPU features
their kernels dispatch on (between two machines of the same kind, with scikit-learn 1.9.1 on
both, ViM's scores moved by up to 350 % and fingerprints' Spearman ρ fell to 0.91): the file
records the versions and CPU features it was made with, and the test compares those detectors
exactly only on the same (see `LIBRARY_FITTED`).

After a change that is *meant* to move a detector's scores, rewrite the file and say why in the
commit:

    python tests/reference_scores.py
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import torch

from tiny_world import CONTRACT_PARAMS, contract_world, fit_on_world
from tripwire.detectors import create_detector, list_detectors

REFERENCE_FILE = Path(__file__).with_name("reference_scores.json")
# detectors whose fit calls numpy / SciPy / scikit-learn linear algebra or libsvm (or numpy's
# random draws), on which the contract world's rounding is amplified
LIBRARY_FITTED = frozenset(
    {
        "feature-response",
        "fingerprints",
        "lid",
        "rmds",
        "uniform",
        "uniform-fusion",
        "uniform-plus",
        "vim",
    }
)


def platform() -> dict[str, str]:
    """The versions of the numerical libraries the references depend on, and the CPU features
    their kernels dispatch on."""
    import numpy as np

    libraries = {name: version(name) for name in ("torch", "numpy", "scipy", "scikit-learn")}
    simd = np.show_config(mode="dicts")["SIMD Extensions"]["found"]  # type: ignore[index]
    return {
        **libraries,
        "numpy_simd": ",".join(simd),
        "torch_cpu": torch.backends.cpu.get_cpu_capability(),
    }


def reference_images(world: dict) -> torch.Tensor:
    """The 24 images the references are scores of."""
    return torch.cat([world["test"][:12], world["shift"][:12]])


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread inside the block."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def reference_world() -> dict:
    """The contract world, its model trained on one thread."""
    with one_thread():
        return contract_world()


def detector_scores(name: str, world: dict) -> list[float]:
    """Scores of detector `name`, fitted on `world` on one thread, of `reference_images`."""
    with one_thread():
        det = fit_on_world(create_detector(name, **CONTRACT_PARAMS.get(name, {})), world)
        return det.score(world["model"], reference_images(world)).tolist()


def main() -> None:
    world = reference_world()
    scores = {name: detector_scores(name, world) for name in list_detectors()}
    lines = [f"  {json.dumps(name)}: {json.dumps(s)}" for name, s in scores.items()]
    REFERENCE_FILE.write_text(
        f'{{\n "platform": {json.dumps(platform())},\n "scores": {{\n'
        + ",\n".join(lines)
        + "\n }\n}\n"
    )
    print(f"wrote {REFERENCE_FILE} ({len(scores)} detectors)")


if __name__ == "__main__":
    main()

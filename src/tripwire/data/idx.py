"""Reading the IDX format of MNIST-style data sets (LeCun et al.), gzipped or not, and fetching
missing files from canonical mirrors with checksum verification."""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import struct
import urllib.request
from pathlib import Path

import numpy as np

from tripwire.errors import DataError
from tripwire.paths import file_digest

logger = logging.getLogger(__name__)

OFFLINE_ENV = "TRIPWIRE_OFFLINE"

_DTYPES: dict[int, type | str] = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) into a numpy array, with clear errors on bad files."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read ({e}); the file is corrupt or truncated") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(
            f"{path}: IDX header announces shape {shape} ({expected} bytes) "
            f"but the file holds {len(data) - header} bytes"
        )
    return (
        np.frombuffer(data, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def fetch(folder: Path, filename: str, md5: str, mirrors: tuple[str, ...], dataset: str) -> Path:
    """Return `folder/filename` (or its un-gzipped twin), downloading it when missing.

    The download is tried from each mirror in turn and verified against `md5`. Where no mirror
    is reachable the error says which files to put where. With ``TRIPWIRE_OFFLINE=1`` in the
    environment no download is tried at all (the tests use this).
    """
    path = folder / filename
    if path.exists():
        return path
    raw = path.with_suffix("") if path.suffix == ".gz" else None
    if raw is not None and raw.exists():
        return raw
    errors = []
    if os.environ.get(OFFLINE_ENV, "0") not in ("0", "", "false", "no"):
        errors.append(f"no download tried: {OFFLINE_ENV} is set")
        mirrors = ()
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + filename
        tmp = path.with_name(path.name + ".part")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            logger.info("downloading %s", url)
            with urllib.request.urlopen(url, timeout=20) as r, open(tmp, "wb") as f:
                shutil.copyfileobj(r, f)
        except OSError as e:
            errors.append(f"{url}: {e}")
            tmp.unlink(missing_ok=True)
            continue
        got = file_digest(tmp, "md5")
        if got != md5:
            tmp.unlink(missing_ok=True)
            errors.append(f"{url}: checksum mismatch (md5 {got}, expected {md5})")
            continue
        tmp.replace(path)
        return path
    raise DataError(
        f"{dataset}: {path} is missing and could not be downloaded "
        f"({'; '.join(errors) or 'no mirror'}).\n"
        f"Put the file {filename} into {folder} (or point --data-dir / $TRIPWIRE_DATA at a "
        "directory that holds it)."
    )

"""The audit log of a served guard: one row per flagged input, in SQLite or PostgreSQL.

Each row holds when the input was scored (UTC), the SHA-256 of its pixels (as the model saw them:
the same image sent twice has the same hash), its name in the request, the predicted class, the
score and the threshold it exceeded, and optionally a PNG thumbnail. Only the newest `keep` rows
are kept. Any database SQLAlchemy reaches works; tested are SQLite (``sqlite:///audit.db``) and
PostgreSQL (``postgresql+psycopg://user@host/db``, with the psycopg driver installed).
"""

from __future__ import annotations

import datetime
import hashlib
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    create_engine,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from tripwire.errors import InvalidInputError

THUMBNAIL_SIDE = 64

_metadata = MetaData()
FLAGGED = Table(
    "tripwire_flagged_inputs",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("scored_at", DateTime(timezone=True), nullable=False),
    Column("image_sha256", String(64), nullable=False, index=True),
    Column("name", String(512), nullable=False),
    Column("predicted_class", Integer, nullable=False),
    Column("score", Float, nullable=False),
    Column("threshold", Float, nullable=False),
    Column("thumbnail_png", LargeBinary, nullable=True),
)


@dataclass(frozen=True)
class FlaggedInput:
    """One flagged input, as the audit log stores it."""

    image_sha256: str
    name: str
    predicted_class: int
    score: float
    threshold: float
    thumbnail_png: bytes | None = None


def flagged_input(
    image: torch.Tensor,
    name: str,
    predicted: int,
    score: float,
    threshold: float,
    thumbnail: bool,
) -> FlaggedInput:
    """The audit row of `image` (C×H×W, uint8 or float in [0, 1])."""
    pixels = image.detach().cpu().contiguous()
    digest = hashlib.sha256(str(pixels.dtype).encode() + pixels.numpy().tobytes()).hexdigest()
    return FlaggedInput(
        digest, name[:512], predicted, score, threshold, _thumbnail(pixels) if thumbnail else None
    )


def _thumbnail(image: torch.Tensor) -> bytes:
    """A PNG of `image`, its longer side at most `THUMBNAIL_SIDE` pixels."""
    x = image if image.dtype == torch.uint8 else (image.clamp(0, 1) * 255).round().byte()
    array = x.permute(1, 2, 0).numpy()
    picture = Image.fromarray(array[..., 0] if array.shape[2] == 1 else np.ascontiguousarray(array))
    picture.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


class AuditLog:
    """Flagged inputs in the database at `url` (its table created if missing), the newest
    `keep` of them kept.

    Raises:
        InvalidInputError: a URL SQLAlchemy cannot read, or whose driver is not installed.
    """

    def __init__(self, url: str, keep: int = 100_000) -> None:
        if keep < 1:
            raise InvalidInputError(f"keep must be ≥ 1, got {keep}")
        try:
            self.engine: Engine = create_engine(url, pool_pre_ping=True)
        except (ArgumentError, NoSuchModuleError, ImportError) as e:
            raise InvalidInputError(f"audit database {url!r}: {e}") from None
        self.keep = keep
        _metadata.create_all(self.engine)

    def record(self, rows: list[FlaggedInput]) -> None:
        """Store `rows` (one transaction) and drop all but the newest `keep` rows."""
        if not rows:
            return
        now = datetime.datetime.now(datetime.UTC)
        with self.engine.begin() as db:
            db.execute(insert(FLAGGED), [{"scored_at": now, **vars(r)} for r in rows])
            newest = db.execute(select(func.max(FLAGGED.c.id))).scalar_one()
            db.execute(delete(FLAGGED).where(FLAGGED.c.id <= newest - self.keep))

    def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest `limit` rows, newest first."""
        query = select(FLAGGED).order_by(FLAGGED.c.id.desc()).limit(limit)
        with self.engine.connect() as db:
            return [dict(row._mapping) for row in db.execute(query)]

    def close(self) -> None:
        self.engine.dispose()

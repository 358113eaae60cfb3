"""``GET /v1/models`` and ``GET /v1/models/{id}``."""

from __future__ import annotations

import msgspec

__all__ = ["ModelCard", "ModelList"]


class ModelCard(msgspec.Struct):
    id: str
    created: int
    owned_by: str = "syn4pse"
    object: str = "model"


class ModelList(msgspec.Struct):
    data: list[ModelCard]
    object: str = "list"

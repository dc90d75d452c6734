"""Prompt tokens of image parts, by OpenAI's documented formulas.

Tile models scale the image to fit 2048x2048, then so that its shortest side is at
most 768 px, and charge ``base + tile * (number of 512 px tiles)``; ``detail: low``
charges ``base`` only. Patch models charge one token per 32 px patch (at most 1536,
scaling the image down to fit), times a per-model multiplier, whatever the detail.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from dataclasses import dataclass

from aiofast.tokens._models import bare_model_id

__all__ = ["ImageCost", "image_size_from_data_url", "image_tokens"]

_MAX_TILES = 8  # 768 x 2048 after scaling: 2 x 4 tiles, the most any image can have.
_MAX_PATCHES = 1536


@dataclass(frozen=True)
class _Tiles:
    base: int
    tile: int


@dataclass(frozen=True)
class _Patches:
    multiplier: float


# Longest family first; anything else (gpt-4o, gpt-4.1, gpt-4.5, gpt-5, unknown) is 85/170.
_IMAGE_COSTS: tuple[tuple[str, _Tiles | _Patches], ...] = (
    ("gpt-4.1-mini", _Patches(1.62)),
    ("gpt-4.1-nano", _Patches(2.46)),
    ("o4-mini", _Patches(1.72)),
    ("computer-use-preview", _Tiles(65, 129)),
    ("gpt-4o-mini", _Tiles(2833, 5667)),
    ("o1", _Tiles(75, 150)),
    ("o3", _Tiles(75, 150)),
)
_DEFAULT_TILES = _Tiles(85, 170)


@dataclass(frozen=True)
class ImageCost:
    """Tokens of one image part; ``upper_bound`` is true when its size was unknown."""

    tokens: int
    upper_bound: bool


def _costs_for(model: str) -> _Tiles | _Patches:
    bare = bare_model_id(model)
    for family, costs in _IMAGE_COSTS:
        if bare.startswith(family):
            return costs
    return _DEFAULT_TILES


def _tile_tokens(costs: _Tiles, width: int, height: int) -> int:
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        scale = 2048 / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > 768:
        scale = 768 / min(w, h)
        w, h = w * scale, h * scale
    tiles = math.ceil(w / 512) * math.ceil(h / 512)
    return costs.base + costs.tile * tiles


def _patch_tokens(costs: _Patches, width: int, height: int) -> int:
    patches = math.ceil(width / 32) * math.ceil(height / 32)
    if patches > _MAX_PATCHES:
        shrink = math.sqrt(32 * 32 * _MAX_PATCHES / (width * height))
        w, h = width * shrink / 32, height * shrink / 32
        # Shrink a little more so that a whole number of patches covers one side.
        shrink = min(math.floor(w) / w, math.floor(h) / h)
        # The tolerance keeps a side that is a whole number of patches from rounding up.
        patches = math.ceil(w * shrink - 1e-9) * math.ceil(h * shrink - 1e-9)
    return int(min(patches, _MAX_PATCHES) * costs.multiplier)


def image_tokens(model: str, detail: str, size: tuple[int, int] | None) -> ImageCost:
    """Tokens of an image part for ``model``; without a size, the largest possible count."""
    costs = _costs_for(model)
    if isinstance(costs, _Patches):
        if size is None:
            return ImageCost(int(_MAX_PATCHES * costs.multiplier), upper_bound=True)
        return ImageCost(_patch_tokens(costs, *size), upper_bound=False)
    if detail == "low":
        return ImageCost(costs.base, upper_bound=False)
    if size is None:
        return ImageCost(costs.base + costs.tile * _MAX_TILES, upper_bound=True)
    return ImageCost(_tile_tokens(costs, *size), upper_bound=False)


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    return None


def _gif_size(data: bytes) -> tuple[int, int] | None:
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return width, height
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP" or len(data) < 30:
        return None
    chunk = data[12:16]
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 9 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker in _JPEG_FRAMES:
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        pos += 2 + length
    return None


# Enough of the start of an image to find its size; JPEG frame headers can follow EXIF.
_HEADER_BYTES = 96 * 1024


def image_size_from_data_url(url: str) -> tuple[int, int] | None:
    """Width and height of a base64 ``data:`` URL image (PNG, JPEG, GIF, WebP), if readable."""
    if not url.startswith("data:"):
        return None
    _, _, payload = url.partition(";base64,")
    head = payload[: _HEADER_BYTES * 4 // 3 // 4 * 4]
    try:
        data = base64.b64decode(head, validate=False)
    except (binascii.Error, ValueError):
        return None
    for reader in (_png_size, _jpeg_size, _gif_size, _webp_size):
        size = reader(data)
        if size is not None:
            return size if size[0] > 0 and size[1] > 0 else None
    return None

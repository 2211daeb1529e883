"""Tiny PNG images made and read with the standard library (zlib, struct): the sample folder of
the image example job, and what the demo agent answers about an image.

The demo agent's answer is checkable from the bytes alone: `png <width>x<height> <colour>`, the
colour being the commonest pixel as `#rrggbb`. `sample_answer(i)` says what image `i` of the
sample folder gets, so a test regenerates the folder and checks every answer.
"""

from __future__ import annotations

import struct
import zlib
from collections import Counter
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A small palette with names, so a prompt can ask for "the colour".
PALETTE = (
    (0xE5, 0x39, 0x35),
    (0x43, 0xA0, 0x47),
    (0x1E, 0x88, 0xE5),
    (0xFD, 0xD8, 0x35),
    (0x8E, 0x24, 0xAA),
    (0x00, 0x00, 0x00),
    (0xFF, 0xFF, 0xFF),
)


class NotAnImage(ValueError):
    """The bytes are not a PNG this module can read."""


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def make_png(
    width: int,
    height: int,
    colour: tuple[int, int, int],
    *,
    accent: tuple[int, int, int] | None = None,
    padding: int = 0,
) -> bytes:
    """An 8-bit RGB PNG of `colour`, with a one-pixel `accent` diagonal (never the commonest
    colour for images larger than 2x2). `padding` adds a private ancillary chunk of that many
    bytes: a large file with a small image."""
    if width < 1 or height < 1:
        raise ValueError("width and height must be >= 1")
    rows = []
    for y in range(height):
        row = bytearray(b"\x00")  # filter type 0 (None)
        for x in range(width):
            pixel = accent if accent is not None and x == y else colour
            row += bytes(pixel)
        rows.append(bytes(row))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunks = [_chunk(b"IHDR", header)]
    if padding:
        chunks.append(_chunk(b"paDd", b"\x00" * padding))
    chunks.append(_chunk(b"IDAT", zlib.compress(b"".join(rows), 9)))
    chunks.append(_chunk(b"IEND", b""))
    return PNG_SIGNATURE + b"".join(chunks)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def read_png(data: bytes) -> tuple[int, int, list[tuple[int, ...]]]:
    """(width, height, pixels) of an 8-bit RGB or RGBA, non-interlaced PNG (any row filters)."""
    if not data.startswith(PNG_SIGNATURE):
        raise NotAnImage("not a PNG (no PNG signature)")
    pos = len(PNG_SIGNATURE)
    header: tuple[int, ...] | None = None
    idat = bytearray()
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    if header is None:
        raise NotAnImage("PNG without IHDR")
    width, height, depth, colour_type, _, _, interlace = header
    if depth != 8 or colour_type not in (2, 6) or interlace:
        raise NotAnImage("only 8-bit RGB/RGBA non-interlaced PNGs are read")
    channels = 3 if colour_type == 2 else 4
    stride = width * channels
    try:
        raw = zlib.decompress(bytes(idat))
    except zlib.error as e:
        raise NotAnImage(f"PNG data does not decompress: {e}") from None
    if len(raw) < height * (stride + 1):
        raise NotAnImage("PNG data is truncated")
    pixels: list[tuple[int, ...]] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        row_filter = raw[start]
        line = bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if row_filter == 1:
                line[i] = (line[i] + left) & 0xFF
            elif row_filter == 2:
                line[i] = (line[i] + up) & 0xFF
            elif row_filter == 3:
                line[i] = (line[i] + ((left + up) >> 1)) & 0xFF
            elif row_filter == 4:
                line[i] = (line[i] + _paeth(left, up, corner)) & 0xFF
            elif row_filter != 0:
                raise NotAnImage(f"unknown PNG row filter {row_filter}")
        pixels.extend(tuple(line[x : x + 3]) for x in range(0, stride, channels))
        previous = line
    return width, height, pixels


def describe(data: bytes) -> str:
    """`png <width>x<height> #rrggbb` (the commonest colour)."""
    width, height, pixels = read_png(data)
    (colour, _), *_ = Counter(pixels).most_common(1)
    return f"png {width}x{height} #{colour[0]:02x}{colour[1]:02x}{colour[2]:02x}"


def describe_files(files: tuple[bytes, ...] | list[bytes]) -> str:
    """The demo agent's answer about a message's files: each described, `; `-separated
    (`not a png (N bytes)` for a file it cannot read)."""
    answers = []
    for data in files:
        try:
            answers.append(describe(data))
        except NotAnImage:
            answers.append(f"not a png ({len(data)} bytes)")
    return "; ".join(answers)


def sample_image(index: int) -> tuple[str, bytes]:
    """Image `index` of the sample folder: (file name, PNG bytes). Sizes and colours vary."""
    width = 3 + index % 7
    height = 3 + (index * 5) % 11
    colour = PALETTE[index % len(PALETTE)]
    accent = PALETTE[(index + 3) % len(PALETTE)]
    return f"image_{index:03d}.png", make_png(width, height, colour, accent=accent)


def sample_answer(index: int) -> str:
    """What the demo agent answers about image `index` (computed without decoding it)."""
    r, g, b = PALETTE[index % len(PALETTE)]
    return f"png {3 + index % 7}x{3 + (index * 5) % 11} #{r:02x}{g:02x}{b:02x}"


def write_sample_folder(folder: str | Path, count: int = 36) -> Path:
    """Write `count` sample images into `folder` (created if missing); returns the folder."""
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        name, data = sample_image(index)
        (target / name).write_bytes(data)
    return target


__all__ = [
    "NotAnImage",
    "describe",
    "describe_files",
    "make_png",
    "read_png",
    "sample_answer",
    "sample_image",
    "write_sample_folder",
]

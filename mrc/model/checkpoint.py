"""Best-checkpoint format: ``encoder/`` (HF, safetensors), ``tokenizer/``, ``span.safetensors`` (head, neck and
match embedding), ``mrc.yaml``.

Loading never runs code named in the checkpoint (HuggingFace's rule: no code unless the user asks for
it with ``trust_remote_code``, which we never pass). Weights load without pickle (safetensors); the
config is plain YAML read as data: the head and the neck are built directly from the allow-lists
:data:`heads.HEADS` and :data:`mrc.model.necks.NECKS` (by option name, or by one of those classes'
``_target_`` paths) with scalar keyword arguments only, never through Hydra ``instantiate``. Anything else in
``mrc.yaml`` is refused with a
:class:`CheckpointError` naming the file and the key, and so is a number outside its range
(:data:`mrc.model.limits.RANGES`). ``mrc.yaml`` is read as plain data (:mod:`mrc.model.plain_yaml`: no
``${...}`` interpolation, no aliases, size-capped), never through OmegaConf resolution.

:func:`save` writes into a temp sibling and swaps it in whole (:func:`mrc.model.atomic.replaced_dir`), with a
``manifest.json`` of every file's sha256 (:mod:`mrc.model.manifest`) that :func:`load` verifies. A save killed
between its two renames leaves the previous checkpoint as ``.<name>.old`` beside the missing one; a load of the
missing one says so. A checkpoint written before manifests loads with a warning. ``mrc.yaml`` carries its
format (:data:`FORMAT`); an older one is brought up to date by one migration per format (:data:`MIGRATIONS`).
``span.safetensors`` must hold exactly the model's span state, and no loaded weight may be NaN or infinite.
"""
from __future__ import annotations

import inspect
import json
import logging
import math
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file

from heads import HEADS
from mrc.data.features import Geometry
from mrc.model import atomic
from mrc.model.build import span_model
from mrc.model.encoder import from_checkpoint
from mrc.model.finetune import FINETUNES, plain_encoder
from mrc.model.limits import out_of_range, unreadable_version
from mrc.model.manifest import ManifestError, verify_manifest, write_manifest
from mrc.model.necks import NECKS
from mrc.model.plain_yaml import PlainYamlError, load_plain
from mrc.model.span_model import SpanModel, max_positions

# mrc.yaml's format (its ``format`` key; a file without one is format 1). Format 1 had no neck or finetune
# section when it was written before necks and fine-tuning modes existed; format 2 always has both. A change to
# what mrc.yaml holds bumps FORMAT and adds one migration from the previous format (:data:`MIGRATIONS`).
FORMAT = 2
CALIBRATION_FILE = "calibration.json"  # the confidence calibrators, fitted on the calibration split (plain JSON)
_MAX_CALIBRATION_BYTES = 1 << 20

log = logging.getLogger(__name__)

# The sections built from an allow-list: name -> (classes by option name, the arguments the loader gives).
_BUILT = {"head": (HEADS, {"hidden_size"}), "neck": (NECKS, {"hidden_size", "num_layers"}),
          "finetune": (FINETUNES, set())}
_SCALARS = (str, int, float, bool, type(None))
# The keys a checkpoint's mrc.yaml may hold outside ``head``, with the types each accepts.
_SECTIONS = {
    "model": {"match_feature": (bool,)},
    "data": {"max_len": (int,), "max_query_len": (int,), "doc_stride": (int,)},
    "decode": {"max_answer_len": (int, type(None)), "n_best": (int,), "null_threshold": (int, float, str, type(None)),
               "tune_on": (str, type(None)), "save_nbest": (bool,)},
}


def _from_format_1(raw: dict) -> dict:
    """Format 1 -> 2: a checkpoint written before necks and fine-tuning modes had none (and trained the whole
    encoder)."""
    return {"neck": {"name": "none"}, "finetune": {"name": "full"}, **raw}


MIGRATIONS = {1: _from_format_1}  # format -> its mrc.yaml in the next format


class CheckpointError(ValueError):
    """A checkpoint directory that cannot or may not be loaded (the message names the file and key)."""

    user_facing = True


def save(path: str | Path, model: SpanModel, tokenizer, cfg: DictConfig, null_threshold="config",
         calibration: dict | None = None) -> Path:
    """Write the model, tokenizer and the config needed to rebuild the head and windows, atomically
    (``null_threshold``: the value to store when it was tuned during the run; ``calibration``: the confidence
    calibrators fitted on the calibration split, as plain data, written to ``calibration.json``)."""
    path = Path(path)
    keep = {"format": FORMAT, "head": OmegaConf.to_container(cfg.head, resolve=True),
            "neck": OmegaConf.to_container(cfg.neck, resolve=True) if cfg.get("neck") else {"name": "none"},
            "finetune": (OmegaConf.to_container(cfg.finetune, resolve=True) if cfg.get("finetune")
                         else {"name": "full"}),
            # only the keys read_config accepts: run-level options (e.g. decode.abstention_pool) stay in the run
            **{name: {k: v for k, v in OmegaConf.to_container(cfg[name], resolve=True).items() if k in keys}
               for name, keys in _SECTIONS.items()}}
    if null_threshold != "config":
        keep["decode"]["null_threshold"] = null_threshold
    try:
        with atomic.replaced_dir(path) as tmp:  # a kill at any point leaves the previous checkpoint whole
            plain_encoder(model.encoder).save_pretrained(tmp / "encoder", safe_serialization=True)  # LoRA: merged
            tokenizer.save_pretrained(tmp / "tokenizer")
            save_file({k: v.detach().contiguous().cpu() for k, v in model.span_state().items()},
                      str(tmp / "span.safetensors"))
            OmegaConf.save(OmegaConf.create(keep), tmp / "mrc.yaml")
            if calibration:
                (tmp / CALIBRATION_FILE).write_text(json.dumps(calibration, allow_nan=False), encoding="utf-8")
            write_manifest(tmp)
    except Exception as e:  # noqa: BLE001 - an OS error (disk full, ...) becomes one line; anything else is a bug
        reason = atomic.os_reason(e)
        if reason is None:
            raise
        full = reason[1] in atomic.FULL
        todo = "free space and rerun" if full else "check that the folder is writable, free space and rerun"
        raise CheckpointError(f"{path}: the checkpoint could not be written ({reason[0]}); the previous one, if any, "
                              f"is unchanged; {todo}") from e
    return path


def read_calibration(path: str | Path) -> dict | None:
    """The checkpoint's ``calibration.json`` as plain JSON data (None when it has none); its parts are checked
    by whoever rebuilds the calibrators (:mod:`mrc.eval.calibrate`'s ``from_dict``)."""
    file = Path(path) / CALIBRATION_FILE
    if not file.is_file():
        return None
    if file.stat().st_size > _MAX_CALIBRATION_BYTES:
        raise CheckpointError(f"{file}: over {_MAX_CALIBRATION_BYTES} bytes; a calibration file is a few numbers, "
                              "copy the checkpoint again")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{file}: not JSON ({str(e)[:120]}); copy the checkpoint again") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{file}: not a JSON object; copy the checkpoint again")
    return data


def _missing(path: Path) -> CheckpointError:
    old = atomic.old_dir(path)
    if not path.exists() and (old / "mrc.yaml").is_file():
        return CheckpointError(f"{path}: missing, but {old} holds the previous checkpoint (a save was interrupted); "
                               f"rename it to {path.name} or train again")
    return CheckpointError(f"{path}: not a checkpoint directory (no mrc.yaml); give the checkpoint/ folder of a run "
                           "dir")


def _check_ranges(raw: dict, file: Path) -> None:
    """Refuse window and decoding numbers outside :data:`mrc.model.limits.RANGES` (and window geometries the
    features cannot cut)."""
    data, decode = raw.get("data", {}), raw.get("decode") or {}
    max_len, query = data["max_len"], data["max_query_len"]
    checks = [("data.max_len", max_len, None), ("data.max_query_len", query, max_len - 4),
              ("data.doc_stride", data["doc_stride"], Geometry.of(data).budget - 1)]
    checks += [(f"decode.{k}", decode[k], None) for k in ("n_best", "max_answer_len")
               if decode.get(k) is not None]
    for key, value, hi in checks:
        why = out_of_range(key, value, hi=hi)
        if why:
            raise CheckpointError(f"{file}: {key}={value!r} {why}; the file was edited, restore the value the run "
                                  "wrote (or save the checkpoint again)")
    threshold = decode.get("null_threshold")
    if isinstance(threshold, float) and not math.isfinite(threshold):
        raise CheckpointError(f"{file}: decode.null_threshold={threshold!r} must be a finite number, null or tune; "
                              "the file was edited, restore its value")


def _migrated(raw: dict, file: Path) -> dict:
    """``raw`` (without its ``format`` key) brought from its format to :data:`FORMAT` by :data:`MIGRATIONS`."""
    raw = dict(raw)
    fmt = raw.pop("format", 1)
    why = unreadable_version(fmt, FORMAT)
    if why:
        raise CheckpointError(f"{file}: format {fmt!r} ({why})")
    for f in range(fmt, FORMAT):
        raw = MIGRATIONS[f](raw)
    return raw


def read_config(path: Path) -> DictConfig:
    """``mrc.yaml`` as data, checked key by key against what :func:`save` writes."""
    file = path / "mrc.yaml"
    if not file.is_file():
        raise _missing(path)
    try:
        raw = load_plain(file)
    except PlainYamlError as e:  # syntax, size, aliases, ${...}: the message never quotes a refused value
        raise CheckpointError(f"{file}: {e}; a checkpoint's mrc.yaml is plain data written by the run, restore it "
                              "or copy the checkpoint again") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("head"), dict):
        raise CheckpointError(f"{file}: no 'head' section; copy the checkpoint again")
    raw = _migrated(raw, file)
    for key in sorted(set(raw) - {*_BUILT, *_SECTIONS}):
        raise CheckpointError(f"{file}: unknown key {key!r}; a checkpoint's mrc.yaml holds only format, head, neck, "
                              "finetune, model, data and decode")
    for section in ("neck", "finetune"):
        if section not in raw:
            raise CheckpointError(f"{file}: no {section!r} section (format {FORMAT} names it); copy the checkpoint "
                                  "again")
        if not isinstance(raw[section], dict):
            raise CheckpointError(f"{file}: {section} must be a mapping")
    for section, allowed in _SECTIONS.items():
        values = raw.get(section) or {}
        if not isinstance(values, dict):
            raise CheckpointError(f"{file}: {section} must be a mapping")
        for key, value in values.items():
            if key not in allowed:
                raise CheckpointError(f"{file}: unknown key {section}.{key}; the file was edited or is not from "
                                      "this project")
            # bool is an int in Python: a flag must be a bool, a number must not be one
            if not isinstance(value, allowed[key]) or isinstance(value, bool) != (allowed[key] == (bool,)):
                raise CheckpointError(f"{file}: {section}.{key}={value!r} is not a valid value for this key; "
                                      "the file was edited or is not from this project")
    for key in ("max_len", "max_query_len", "doc_stride"):
        if key not in (raw.get("data") or {}):
            raise CheckpointError(f"{file}: data.{key} is missing; copy the checkpoint again")
    _check_ranges(raw, file)
    return OmegaConf.create(raw)


def build_from_config(section: str, values: dict, file: Path, **given):
    """The head or neck a checkpoint's ``section`` names, built from its allow-list only (no code is run);
    ``given``: the arguments the loader supplies (``hidden_size``, ...)."""
    classes, supplied = _BUILT[section]
    values = dict(values)
    target, name = values.pop("_target_", None), values.pop("name", None)
    targets = {f"{cls.__module__}.{cls.__qualname__}": cls for cls in classes.values()}
    cls = targets.get(target) if target is not None else classes.get(name)
    if cls is None:
        known = ", ".join(sorted(classes))
        named = f"{section}._target_ {target!r}" if target is not None else f"{section}.name {name!r}"
        raise CheckpointError(f"{file}: {named} is not one of this project's {section}s ({known}); loading a "
                              "checkpoint never runs code it names, so it is refused")
    params = set(inspect.signature(cls).parameters) - supplied
    for key, value in values.items():
        if key not in params:
            raise CheckpointError(f"{file}: {section}.{key} is not an option of {cls.__name__} "
                                  f"({', '.join(sorted(params))}); refused")
        if not isinstance(value, _SCALARS):  # a nested object (e.g. another _target_) is never built
            raise CheckpointError(f"{file}: {section}.{key} must be a plain value, got a {type(value).__name__}; "
                                  "refused")
    try:
        return cls(**{k: v for k, v in given.items() if k in supplied}, **values)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{file}: {section}: {e}") from None


def _encoder(path: Path):
    for sub in ("encoder", "tokenizer"):
        if not (path / sub).is_dir():
            raise CheckpointError(f"{path / sub}: folder missing from the checkpoint; copy the whole checkpoint/ "
                                  "folder of the run")
    _verify_parts(path)
    try:
        return from_checkpoint(path)
    except Exception as e:  # truncated weights, broken config.json / tokenizer files
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{path / 'encoder'} or {path / 'tokenizer'}: cannot be loaded ({first}); the "
                              "checkpoint is incomplete or damaged, copy it again") from None


_UNVERIFIED: set[Path] = set()  # checkpoints without a manifest already warned about (once each)


def _verify_parts(path: Path) -> None:
    """Every file matches ``manifest.json`` (a checkpoint from before manifests: a warning, once)."""
    try:
        verified = verify_manifest(path)
    except ManifestError as e:
        raise CheckpointError(str(e)) from None
    if not verified and path.resolve() not in _UNVERIFIED:
        _UNVERIFIED.add(path.resolve())
        log.warning("%s has no manifest.json (written before checkpoints had one): its files cannot be checked to "
                    "come from one save; save it again to add one", path)


def _span_weights(span: Path, expected: set[str]) -> dict[str, torch.Tensor]:
    """``span.safetensors``, holding exactly the keys ``expected`` (the model's span state) and finite values."""
    try:
        weights = load_file(str(span))
    except Exception as e:  # missing, truncated, not safetensors
        raise CheckpointError(f"{span}: cannot be read ({str(e).strip() or type(e).__name__}); the checkpoint is "
                              "incomplete or damaged, copy it again") from None
    unknown = sorted(set(weights) - expected)
    if unknown:  # e.g. an encoder.* key would silently replace the encoder's weights
        raise CheckpointError(f"{span} does not match the head/model in {span.parent / 'mrc.yaml'}: it holds "
                              f"{len(unknown)} tensor(s) outside the model's span state, e.g. {unknown[0]!r}; one of "
                              "the two files was edited or belongs to another checkpoint, copy it again")
    return weights


def _check_finite(model: SpanModel, path: Path) -> None:
    """Refuse NaN / infinite weights (every answer would be ""): a diverged run or a damaged file."""
    span = set(model.span_state())
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            where = "span.safetensors" if name in span else "encoder"
            raise CheckpointError(f"{path / where}: tensor {name!r} holds NaN or infinite values; the run diverged "
                                  "or the file is damaged, use another checkpoint")


def load(path: str | Path, device: str = "cpu"):
    """Rebuild (model, tokenizer, cfg) from a directory written by :func:`save`."""
    path = Path(path)
    cfg = read_config(path)
    file, span = path / "mrc.yaml", path / "span.safetensors"
    enc = _encoder(path)
    limit = max_positions(enc.model.config)
    if limit is not None and cfg.data.max_len > limit:
        raise CheckpointError(f"{file}: data.max_len={cfg.data.max_len} exceeds the encoder's {limit} positions "
                              f"({path / 'encoder' / 'config.json'}); the file was edited, restore its value")
    neck_cfg, tune_cfg = OmegaConf.to_container(cfg.neck), OmegaConf.to_container(cfg.finetune)
    mode = build_from_config("finetune", tune_cfg, file)
    model = span_model(enc, lambda **sizes: build_from_config("neck", neck_cfg, file, **sizes),
                       lambda **sizes: build_from_config("head", OmegaConf.to_container(cfg.head), file, **sizes),
                       cfg.get("model", {}), finetune=mode.restore)  # adapters: re-attached before their weights
    weights = _span_weights(span, set(model.span_state()))
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as e:  # size mismatch: the head section does not describe these weights
        detail = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e).splitlines()[0])
        raise CheckpointError(f"{span} does not fit the head/model in {file} ({detail}); mrc.yaml was edited or "
                              "belongs to another checkpoint") from None
    if unexpected or any(not k.startswith("encoder.") for k in missing):
        raise CheckpointError(f"{span} does not match the head/model in {file} (missing "
                              f"{[k for k in missing if not k.startswith('encoder.')]}, unexpected {unexpected}); "
                              "mrc.yaml was edited or belongs to another checkpoint")
    _check_finite(model, path)
    model = model.to(device).eval()
    return model, enc.tokenizer, cfg

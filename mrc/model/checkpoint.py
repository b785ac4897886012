"""Best-checkpoint format: ``encoder/`` (HF, safetensors), ``tokenizer/``, ``span.safetensors`` (head, neck and
match embedding), ``mrc.yaml``.

Loading never runs code named in the checkpoint (HuggingFace's rule: no code unless the user asks for
it with ``trust_remote_code``, which we never pass). Weights load without pickle (safetensors); the
config is plain YAML read as data: the head and the neck are built directly from the allow-lists
:data:`heads.HEADS` and :data:`mrc.model.necks.NECKS` (by option name, or by one of those classes'
``_target_`` paths) with scalar keyword arguments only, never through Hydra ``instantiate``. Anything else in ``mrc.yaml`` is refused with a
:class:`CheckpointError` naming the file and the key.
"""
from __future__ import annotations

import inspect
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file

from heads import HEADS
from mrc.model.encoder import from_checkpoint
from mrc.model.finetune import FINETUNES, plain_encoder
from mrc.model.necks import NECKS
from mrc.model.span_model import SpanModel, max_positions

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


class CheckpointError(ValueError):
    """A checkpoint directory that cannot or may not be loaded (the message names the file and key)."""

    user_facing = True


def save(path: str | Path, model: SpanModel, tokenizer, cfg: DictConfig, null_threshold="config") -> Path:
    """Write the model, tokenizer and the config needed to rebuild the head and windows
    (``null_threshold``: the value to store when it was tuned during the run)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    plain_encoder(model.encoder).save_pretrained(path / "encoder", safe_serialization=True)  # LoRA: merged
    tokenizer.save_pretrained(path / "tokenizer")
    state = {k: v.detach().contiguous().cpu() for k, v in model.span_state().items()}
    save_file(state, str(path / "span.safetensors"))
    keep = {"head": OmegaConf.to_container(cfg.head, resolve=True),
            "neck": OmegaConf.to_container(cfg.neck, resolve=True) if cfg.get("neck") else {"name": "none"},
            "finetune": (OmegaConf.to_container(cfg.finetune, resolve=True) if cfg.get("finetune")
                         else {"name": "full"}),
            "model": OmegaConf.to_container(cfg.model, resolve=True),
            "data": {k: cfg.data[k] for k in ("max_len", "max_query_len", "doc_stride")},
            "decode": OmegaConf.to_container(cfg.decode, resolve=True)}
    if null_threshold != "config":
        keep["decode"]["null_threshold"] = null_threshold
    OmegaConf.save(OmegaConf.create(keep), path / "mrc.yaml")
    return path


def read_config(path: Path) -> DictConfig:
    """``mrc.yaml`` as data, checked key by key against what :func:`save` writes."""
    file = path / "mrc.yaml"
    if not file.is_file():
        raise CheckpointError(f"{path}: not a checkpoint directory (no mrc.yaml); give the checkpoint/ folder "
                              "of a run dir")
    try:
        raw = OmegaConf.to_container(OmegaConf.load(file), resolve=False)
    except Exception as e:  # YAML syntax, or not a mapping
        raise CheckpointError(f"{file}: not readable as YAML ({str(e).splitlines()[0]}); copy the checkpoint "
                              "again") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("head"), dict):
        raise CheckpointError(f"{file}: no 'head' section; copy the checkpoint again")
    for key in sorted(set(raw) - {*_BUILT, *_SECTIONS}):
        raise CheckpointError(f"{file}: unknown key {key!r}; a checkpoint's mrc.yaml holds only head, neck, "
                              "finetune, model, data and decode")
    for section in ("neck", "finetune"):
        if not isinstance(raw.get(section, {}), dict):
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
        if key not in raw.get("data", {}):
            raise CheckpointError(f"{file}: data.{key} is missing; copy the checkpoint again")
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


def head_from_config(head: dict, hidden_size: int, file: Path):
    """The head named by a checkpoint's ``head`` section, built from the allow-list only (no code is run)."""
    return build_from_config("head", head, file, hidden_size=hidden_size)


def _encoder(path: Path):
    for sub in ("encoder", "tokenizer"):
        if not (path / sub).is_dir():
            raise CheckpointError(f"{path / sub}: folder missing from the checkpoint; copy the whole checkpoint/ "
                                  "folder of the run")
    try:
        return from_checkpoint(path)
    except Exception as e:  # truncated weights, broken config.json / tokenizer files
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{path / 'encoder'} or {path / 'tokenizer'}: cannot be loaded ({first}); the "
                              "checkpoint is incomplete or damaged, copy it again") from None


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
    layers = getattr(enc.model.config, "num_hidden_layers", 0)
    neck_cfg = OmegaConf.to_container(cfg.neck) if cfg.get("neck") else {"name": "none"}  # none: written before necks
    neck = build_from_config("neck", neck_cfg, file,
                             hidden_size=enc.hidden_size, num_layers=layers)
    head = head_from_config(OmegaConf.to_container(cfg.head), neck.out_size, file)
    model = SpanModel(enc.model, head, neck=neck, **cfg.get("model", {}))
    tune_cfg = OmegaConf.to_container(cfg.finetune) if cfg.get("finetune") else {"name": "full"}
    build_from_config("finetune", tune_cfg, file).restore(model)  # adapters: re-attached before their weights
    try:
        weights = load_file(str(span))
    except Exception as e:  # missing, truncated, not safetensors
        raise CheckpointError(f"{span}: cannot be read ({str(e).strip() or type(e).__name__}); the checkpoint is "
                              "incomplete or damaged, copy it again") from None
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
    model = model.to(device).eval()
    return model, enc.tokenizer, cfg

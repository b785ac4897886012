"""Best-checkpoint format: ``encoder/`` (HF, safetensors), ``tokenizer/``, ``span.safetensors`` (head and
match embedding), ``mrc.yaml``.

Everything loads without pickle: HF ``from_pretrained`` reads safetensors and the head weights go
through ``safetensors.torch``; the config is plain YAML.
"""
from __future__ import annotations

from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file

from mrc.model.encoder import from_checkpoint
from mrc.model.span_model import SpanModel


def save(path: str | Path, model: SpanModel, tokenizer, cfg: DictConfig, null_threshold="config") -> Path:
    """Write the model, tokenizer and the config needed to rebuild the head and windows
    (``null_threshold``: the value to store when it was tuned during the run)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.encoder.save_pretrained(path / "encoder", safe_serialization=True)
    tokenizer.save_pretrained(path / "tokenizer")
    state = {k: v.detach().contiguous().cpu() for k, v in model.span_state().items()}
    save_file(state, str(path / "span.safetensors"))
    keep = {"head": OmegaConf.to_container(cfg.head, resolve=True),
            "model": OmegaConf.to_container(cfg.model, resolve=True),
            "data": {k: cfg.data[k] for k in ("max_len", "max_query_len", "doc_stride")},
            "decode": OmegaConf.to_container(cfg.decode, resolve=True)}
    if null_threshold != "config":
        keep["decode"]["null_threshold"] = null_threshold
    OmegaConf.save(OmegaConf.create(keep), path / "mrc.yaml")
    return path


def load(path: str | Path, device: str = "cpu"):
    """Rebuild (model, tokenizer, cfg) from a directory written by :func:`save`."""
    path = Path(path)
    if not (path / "mrc.yaml").is_file():
        raise FileNotFoundError(f"{path}: not a checkpoint directory (no mrc.yaml)")
    cfg = OmegaConf.load(path / "mrc.yaml")
    enc = from_checkpoint(path)
    head = instantiate(cfg.head, hidden_size=enc.hidden_size)
    model = SpanModel(enc.model, head, **cfg.get("model", {}))
    missing, unexpected = model.load_state_dict(load_file(str(path / "span.safetensors")), strict=False)
    if unexpected or any(not k.startswith("encoder.") for k in missing):
        raise ValueError(f"{path}: span.safetensors does not match the model (missing {missing}, "
                         f"unexpected {unexpected})")
    model = model.to(device).eval()
    return model, enc.tokenizer, cfg

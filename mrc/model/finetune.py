"""How much of the encoder trains (``conf/finetune/``, Hydra ``_target_``): ``full``, ``frozen``,
``adapters`` (Houlsby et al., 2019) or ``lora`` (Hu et al., 2021, through the ``peft`` library).

Every mode is an object with ``apply(model)`` (at the start of a run: freeze, add the new weights) and
``restore(model)`` (when a checkpoint is loaded, before its weights: rebuild what the saved weights need).
The head, the neck and the match embedding always train. What a checkpoint holds per mode:

- ``full`` / ``frozen``: the encoder in ``encoder/`` as usual.
- ``adapters``: the encoder in ``encoder/`` (only its LayerNorms trained); the adapters live on the span model
  (``model.adapters``, attached to the encoder by forward hooks), so they are saved beside it, in
  ``span.safetensors`` with the head; ``restore`` re-attaches them before those weights load.
- ``lora``: the LoRA update is merged into the encoder's weights (``W + alpha / r · B A``) before saving,
  so ``encoder/`` is a plain HF encoder and loading needs neither ``peft`` nor a ``restore`` step.

``FINETUNES`` names every mode; a checkpoint may only name one of these (``mrc.model.checkpoint``).
"""
from __future__ import annotations

import copy
import logging

import torch
from torch import nn

log = logging.getLogger(__name__)


class Full:
    """Every encoder weight trains (the default)."""

    def apply(self, model) -> None:
        """Nothing to change."""

    def restore(self, model) -> None:
        """Nothing to rebuild."""


class Frozen(Full):
    """The encoder is fixed; the head, neck and match embedding train. With ``encoder_dropout=False`` the
    encoder also runs in eval mode while the rest trains: no dropout, so it is a deterministic feature
    extractor, and its forward pass is faster (experiments/finetune/README.md)."""

    encoder_dropout = True  # the class default, also for subclasses that do not take the option

    def __init__(self, encoder_dropout: bool = True):
        self.encoder_dropout = bool(encoder_dropout)

    def apply(self, model) -> None:
        """No gradient (so no optimizer state) for any encoder weight; without encoder dropout, a hook that
        puts the encoder in eval mode before each of its forward passes (``model.train()`` would undo a
        one-off ``eval()``)."""
        model.encoder.requires_grad_(False)
        if not self.encoder_dropout:
            model.encoder.register_forward_pre_hook(_to_eval)


def _to_eval(module: nn.Module, _inputs) -> None:
    """Forward pre-hook: the module and everything in it in eval mode."""
    if module.training:
        module.eval()


class Bottleneck(nn.Module):
    """``x + up(gelu(down(x)))``; ``up`` starts at zero, so a new adapter is the identity."""

    def __init__(self, hidden_size: int, size: int):
        super().__init__()
        self.down, self.up = nn.Linear(hidden_size, size), nn.Linear(size, hidden_size)
        nn.init.normal_(self.down.weight, std=1e-2)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., H) -> (..., H)."""
        return x + self.up(nn.functional.gelu(self.down(x)))


def adapter_sites(encoder: nn.Module) -> list[nn.Module]:
    """Each layer's attention-output and FFN-output projections (BERT-family ``*.output.dense``), in order."""
    return [m for n, m in encoder.named_modules() if n.endswith("output.dense") and isinstance(m, nn.Linear)]


class Adapters(Frozen):
    """Houlsby bottleneck adapters of width ``size`` after every attention-output and FFN-output
    projection (before the residual add and LayerNorm); the rest of the encoder is frozen except its
    LayerNorms, which train as in Houlsby et al. (2019) (at ``optim.encoder_lr``, the adapters at
    ``optim.head_lr``)."""

    def __init__(self, size: int = 64):
        if size < 1:
            raise ValueError(f"finetune.size must be >= 1, got {size}")
        self.size = size

    def apply(self, model) -> None:
        """Freeze the encoder but its LayerNorms, then attach new adapters."""
        super().apply(model)
        for module in model.encoder.modules():
            if isinstance(module, nn.LayerNorm):
                module.requires_grad_(True)
        self.restore(model)

    def restore(self, model) -> None:
        """Attach ``model.adapters``, one per site, by forward hooks on the encoder's projections."""
        if hasattr(model, "adapters"):
            raise ValueError("finetune=adapters: this model already has adapters attached")
        sites = adapter_sites(model.encoder)
        if not sites:
            raise ValueError("finetune=adapters: the encoder has no attention/FFN output projections "
                             "(modules named *.output.dense); use finetune=lora or frozen")
        model.adapters = nn.ModuleList(Bottleneck(site.out_features, self.size) for site in sites)
        for site, adapter in zip(sites, model.adapters):
            site.register_forward_hook(lambda _m, _inp, out, a=adapter: a(out))


class Lora(Full):
    """LoRA of rank ``rank`` (scale ``alpha / rank``) on the encoder's ``target_modules`` (comma-separated
    module names, e.g. ``query,value``), through ``peft``; the encoder's own weights are frozen."""

    def __init__(self, rank: int = 8, alpha: float = 16, dropout: float = 0.0, target_modules: str = "query,value"):
        if rank < 1:
            raise ValueError(f"finetune.rank must be >= 1, got {rank}")
        self.rank, self.alpha, self.dropout = rank, alpha, dropout
        self.targets = [t.strip() for t in str(target_modules).split(",") if t.strip()]

    def apply(self, model) -> None:
        """Wrap the encoder in a ``peft`` LoRA model."""
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout,
                            target_modules=self.targets, bias="none")
        try:
            model.encoder = get_peft_model(model.encoder, config)
        except ValueError as e:  # no module matched target_modules
            raise ValueError(f"finetune.target_modules={','.join(self.targets)}: {str(e).splitlines()[0]}") from None

    def restore(self, model) -> None:
        """Nothing: a saved LoRA encoder is already merged."""


def plain_encoder(encoder: nn.Module) -> nn.Module:
    """The encoder to save: a LoRA (``peft``) encoder merged into a copy of its base weights, else itself."""
    if not type(encoder).__module__.startswith("peft"):
        return encoder
    return copy.deepcopy(encoder).merge_and_unload()


def count_parameters(model: nn.Module) -> dict[str, int]:
    """``trainable`` and ``total`` parameter counts."""
    params = list(model.parameters())
    return {"trainable": sum(p.numel() for p in params if p.requires_grad), "total": sum(p.numel() for p in params)}


# name (the conf/finetune option) -> class; the class path is the same mode's Hydra ``_target_``.
FINETUNES = {"full": Full, "frozen": Frozen, "adapters": Adapters, "lora": Lora}

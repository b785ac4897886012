"""Training recipes on top of the plain loop (issue 49), each off by default:

- ``optim.layer_decay``: layer-wise learning-rate decay (:func:`layer_scales`, used by
  :func:`mrc.train.loop.build_optimizer`): the top encoder layer trains at ``optim.encoder_lr``, each layer
  below at ``layer_decay`` times the one above, the embeddings lowest; head, neck and new weights keep theirs.
- ``trainer.ema``: an exponential moving average of the trainable weights (:class:`WeightAverage`), updated
  after every optimizer step; evaluation and the saved checkpoint use it, resumable states carry it.
- ``trainer.adversarial``: ``fgm`` (Miyato et al., 2017) or ``pgd`` (Madry et al., 2018) perturbations of the
  word embeddings' output (:class:`Adversary`): the adversarial loss's gradients are added to the clean ones.
- ``trainer.rdrop``: R-Drop (Liang et al., 2021), a second dropout pass and ``alpha`` times the symmetric KL
  between the two passes' distributions (:func:`mrc.model.distill.symmetric_kl`, used by
  :meth:`mrc.model.span_model.SpanModel.loss`).
"""
from __future__ import annotations

import contextlib
import logging
import math
import re
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.optim.swa_utils import get_ema_multi_avg_fn

from mrc.train.inputs import ConfigError

log = logging.getLogger(__name__)
ADVERSARIAL = ("none", "fgm", "pgd")
_LAYER = re.compile(r"\.layers?\.(\d+)\.")  # BERT-family ``encoder.layer.<i>.`` (``layers.<i>.`` elsewhere)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def layer_decay(optim) -> float:
    """``optim.layer_decay`` (1.0 when absent), refused outside (0, 1]."""
    value = optim.get("layer_decay", 1.0)
    value = 1.0 if value is None else value
    if not _number(value) or not 0.0 < value <= 1.0:
        raise ConfigError(f"optim.layer_decay={value!r}: must be a number in (0, 1] (1: no layer-wise decay)")
    return float(value)


def ema_decay(trainer) -> float | None:
    """``trainer.ema`` as a decay in (0, 1), or None when off (null or 0)."""
    value = trainer.get("ema")
    if value is None or (_number(value) and value == 0):
        return None
    if not _number(value) or not 0.0 < value < 1.0:
        raise ConfigError(f"trainer.ema={value!r}: must be null or 0 (off) or a decay in (0, 1), e.g. 0.999")
    return float(value)


def adversarial(trainer) -> tuple[str, float, int]:
    """(method, eps, steps) of ``trainer.adversarial`` / ``adversarial_eps`` / ``adversarial_steps``."""
    method = str(trainer.get("adversarial") or "none").strip().lower()
    eps, steps = trainer.get("adversarial_eps", 1.0), trainer.get("adversarial_steps", 3)
    if method not in ADVERSARIAL:
        raise ConfigError(f"trainer.adversarial={trainer.get('adversarial')!r}: must be one of {', '.join(ADVERSARIAL)}")
    if method != "none" and (not _number(eps) or eps <= 0):
        raise ConfigError(f"trainer.adversarial_eps={eps!r}: must be a number > 0 (the perturbation's L2 norm "
                          "per window)")
    if method == "pgd" and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise ConfigError(f"trainer.adversarial_steps={steps!r}: must be an integer >= 1 (PGD ascent steps)")
    return method, float(eps), int(steps)


def rdrop_alpha(trainer) -> float:
    """``trainer.rdrop`` (0: off), refused when negative or not a number."""
    value = trainer.get("rdrop", 0.0)
    value = 0.0 if value is None else value
    if not _number(value) or value < 0:
        raise ConfigError(f"trainer.rdrop={value!r}: must be a number >= 0 (0: off; R-Drop's alpha, e.g. 1.0)")
    return float(value)


def check(cfg) -> dict:
    """Refuse a recipe value that cannot work (one :class:`ConfigError` line); return the recipes that will
    run, for ``metrics.json`` (``train.recipes``; empty when none)."""
    decay, ema, rdrop = layer_decay(cfg.optim), ema_decay(cfg.trainer), rdrop_alpha(cfg.trainer)
    method, eps, steps = adversarial(cfg.trainer)
    ran: dict = {}
    if decay < 1.0:
        ran["layer_decay"] = decay
    if ema is not None:
        ran["ema"] = ema
    if method != "none":
        ran["adversarial"] = {"method": method, "eps": eps, **({"steps": steps} if method == "pgd" else {})}
    if rdrop > 0:
        ran["rdrop"] = rdrop
    return ran


def layer_of(name: str) -> int | None:
    """Transformer layer index in an encoder parameter's name; -1 for the embeddings; None for anything else."""
    found = _LAYER.search(name)
    if found:
        return int(found.group(1))
    return -1 if "embeddings." in name else None


def layer_scales(names: list[str], decay: float, depth: int) -> dict[str, tuple[str, float]]:
    """Encoder parameter name -> (group tag, learning-rate factor): layer ``i`` of ``depth`` gets
    ``decay ** (depth - 1 - i)``, the embeddings ``decay ** depth``, anything else (pooler, ...) 1."""
    out = {}
    for name in names:
        layer = layer_of(name)
        if layer is None:
            out[name] = ("", 1.0)
        else:
            tag = "embeddings" if layer < 0 else f"layer{layer}"
            out[name] = (f".{tag}", decay ** (depth - 1 - layer))
    return out


def encoder_depth(model: nn.Module) -> int:
    """Transformer layers of ``model.encoder``, from its parameter names (frozen ones included)."""
    layers = [layer_of(n) for n, _ in model.encoder.named_parameters()]
    return max((i for i in layers if i is not None), default=-1) + 1


class WeightAverage:
    """EMA of a model's trainable weights (``torch.optim.swa_utils.get_ema_multi_avg_fn``'s update), kept
    beside the model rather than in an ``AveragedModel`` (which would deep-copy the frozen encoder and a
    distillation teacher). The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so a
    short run's average is not held near the initial weights."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.names, self.params = [n for n, _ in named], [p for _, p in named]
        self.shadow = [p.detach().clone() for p in self.params]

    def update(self) -> None:
        """One EMA step toward the current weights (after an optimizer step)."""
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        get_ema_multi_avg_fn(decay)(self.shadow, [p.detach() for p in self.params], self.updates)
        self.updates += 1

    @contextlib.contextmanager
    def applied(self):
        """The averaged weights in the model while the block runs; the training weights restored exactly after."""
        backup = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            torch._foreach_copy_([p.data for p in self.params], self.shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in self.params], backup)

    def state_dict(self) -> dict:
        """Plain tensors and an int (resumable states load with ``weights_only``)."""
        return {"updates": self.updates, "shadow": dict(zip(self.names, self.shadow))}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` gave; the trainable weights must have the same names."""
        shadow = state["shadow"]
        if sorted(shadow) != sorted(self.names):
            raise ValueError(f"EMA state holds {len(shadow)} tensors, the model trains {len(self.names)} others")
        with torch.no_grad():
            for name, s in zip(self.names, self.shadow):
                s.copy_(shadow[name])
        self.updates = int(state["updates"])


class Adversary:
    """FGM / PGD on the output of the encoder's word-embedding module, through a forward hook that lives only
    while a pass runs (the weights are never touched, so nothing has to be restored but the hook).

    FGM: ``r = eps · g / ‖g‖`` per window, ``g`` the clean loss's gradient at the embeddings' output; one
    adversarial pass at ``x + r`` adds its gradients. PGD: ``steps`` ascent steps of ``eps / steps`` along the
    normalised gradient, each projected back into the ball ``‖r‖ ≤ eps``; the gradients of the intermediate
    passes only steer ``r`` (``torch.autograd.grad``), the last pass's are added."""

    def __init__(self, model: nn.Module, method: str, eps: float, steps: int = 1):
        self.module = model.encoder.get_input_embeddings()
        self.method, self.eps, self.steps = method, eps, steps if method == "pgd" else 1
        self.outputs: list[torch.Tensor] = []

    @contextlib.contextmanager
    def _hook(self, delta: torch.Tensor | None, keep: bool):
        """While the block runs: add ``delta`` to every output of the module (None: nothing) and, with ``keep``,
        collect the outputs so their gradient can be read."""
        self.outputs = []

        def hook(_module, _inputs, out):
            if delta is not None:
                out = out + delta.to(out.dtype)
            if keep:
                if not out.requires_grad:  # a frozen embedding table: the gradient still reaches its output
                    out = out.detach().requires_grad_()
                elif not out.is_leaf:
                    out.retain_grad()
                self.outputs.append(out)
            return out

        handle = self.module.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    def watching(self):
        """Around the clean forward + backward: remember the embeddings' output for its gradient."""
        return self._hook(None, keep=True)

    def _step(self, grad: torch.Tensor | None, delta: torch.Tensor | None, size: float) -> torch.Tensor | None:
        """``delta + size · g / ‖g‖`` per window, projected into the eps ball (None: no gradient reached it)."""
        if grad is None:
            return delta
        g = grad.float()
        step = size * g / g.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]
        delta = step if delta is None else delta + step
        norm = delta.flatten(1).norm(dim=1)[:, None, None]
        return delta * (self.eps / norm.clamp_min(self.eps))  # ‖delta‖ <= eps

    def _clean_grad(self) -> torch.Tensor | None:
        grads = [o.grad for o in self.outputs if o.grad is not None]
        self.outputs = []
        return sum(grads) if grads else None

    def attack(self, forward: Callable[[], torch.Tensor], backward: Callable[[torch.Tensor], None], *,
               quiet: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
               last: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext) -> None:
        """After the clean backward (inside :meth:`watching`): the adversarial pass(es). ``forward()`` returns
        the loss of the batch, ``backward(loss)`` accumulates its gradients; PGD's intermediate passes run inside
        ``quiet()``, the last pass inside ``last()`` (under DDP: no all-reduce, and the all-reduce at an
        optimizer-step boundary)."""
        grad, size = self._clean_grad(), self.eps / self.steps
        delta = self._step(grad, None, size)
        for _ in range(self.steps - 1):
            with quiet(), self._hook(delta, keep=True):
                loss = forward()
                outs, self.outputs = self.outputs, []
                grads = torch.autograd.grad(loss, outs, allow_unused=True) if outs else ()
            grads = [g for g in grads if g is not None]
            delta = self._step(sum(grads) if grads else None, delta, size)
        if delta is None:  # the loss does not reach the embeddings: nothing to perturb
            return
        with last(), self._hook(delta, keep=False):
            backward(forward())


@dataclass
class Recipes:
    """The per-step recipes of one run: the EMA (None: off) and the adversary (None: off)."""

    ema: WeightAverage | None = None
    adversary: Adversary | None = None

    @classmethod
    def build(cls, model: nn.Module, cfg) -> "Recipes":
        """Check the options, set R-Drop's alpha on the model, and log the recipes that run in one line."""
        ran = check(cfg)
        model.rdrop = ran.get("rdrop", 0.0)
        method, eps, steps = adversarial(cfg.trainer)
        out = cls(WeightAverage(model, ran["ema"]) if "ema" in ran else None,
                  Adversary(model, method, eps, steps) if method != "none" else None)
        if ran:
            log.info("training recipes: %s", describe(ran))
        return out

    def evaluation_weights(self) -> contextlib.AbstractContextManager:
        """The weights evaluation and checkpoints use: the EMA's when on."""
        return self.ema.applied() if self.ema is not None else contextlib.nullcontext()


def describe(ran: dict) -> str:
    """One log line's worth for :func:`check`'s result."""
    parts = []
    if "layer_decay" in ran:
        parts.append(f"optim.layer_decay={ran['layer_decay']:g} (the top encoder layer at encoder_lr, each one below "
                     "times that, the embeddings lowest)")
    if "ema" in ran:
        parts.append(f"trainer.ema={ran['ema']:g} (evaluation and the saved checkpoint use the exponential moving "
                     "average of the trainable weights, not the last step's)")
    if "adversarial" in ran:
        adv = ran["adversarial"]
        steps = f", {adv['steps']} steps" if "steps" in adv else ""
        parts.append(f"trainer.adversarial={adv['method']} (eps {adv['eps']:g}{steps}, on the word embeddings)")
    if "rdrop" in ran:
        parts.append(f"trainer.rdrop={ran['rdrop']:g} (two dropout passes, symmetric KL)")
    return "; ".join(parts)

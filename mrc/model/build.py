"""The one place a span model is assembled: encoder -> neck -> head -> :class:`SpanModel`, then the fine-tuning
mode.

Two callers give the parts in their own way and share everything else: a training run builds the neck, head
and fine-tuning mode from its Hydra config (:func:`mrc.train.pipeline.run`), a checkpoint from its allow-lists
only, never running code the file names (:func:`mrc.model.checkpoint.load`). The sizes that tie the parts
together (the encoder's hidden size and depth into the neck, the neck's output size into the head) are wired
here once.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mrc.model.span_model import SpanModel


def span_model(encoder, make_neck: Callable[..., Any], make_head: Callable[..., Any],
               options: Mapping | None = None, finetune: Callable[[SpanModel], Any] | None = None) -> SpanModel:
    """A :class:`SpanModel` over ``encoder`` (:class:`mrc.model.encoder.Encoder`: ``.model``, ``.hidden_size``).

    ``make_neck(hidden_size=, num_layers=)`` and ``make_head(hidden_size=)`` build the two parts (the head sees
    the neck's output size); ``options``: the ``model`` section (``match_feature``); ``finetune``: applied to
    the assembled model (freezing, adapters, LoRA: a mode's ``apply`` for training, its ``restore`` before a
    checkpoint's weights load)."""
    layers = getattr(encoder.model.config, "num_hidden_layers", 0)
    neck = make_neck(hidden_size=encoder.hidden_size, num_layers=layers)
    head = make_head(hidden_size=neck.out_size)
    model = SpanModel(encoder.model, head, neck=neck, **dict(options or {}))
    if finetune is not None:
        finetune(model)
    return model

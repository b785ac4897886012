"""Span heads behind one contract (``heads.base.SpanHead``): softmax start/end, GlobalPointer and
Efficient GlobalPointer. ``HEADS`` names every head this project ships; a checkpoint may only name
one of these (``mrc.model.checkpoint``), so loading a checkpoint never runs code the file names.

Imports nothing from ``mrc``.
"""
from heads.globalpointer import EfficientGlobalPointer, GlobalPointer
from heads.softmax import SoftmaxHead

# name (the conf/head option) -> class; the class path is the same head's Hydra ``_target_``.
HEADS = {"softmax": SoftmaxHead, "globalpointer": GlobalPointer, "efficient_globalpointer": EfficientGlobalPointer}

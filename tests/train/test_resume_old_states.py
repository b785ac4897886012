"""A resumable state written before issue 17's options existed still resumes with their defaults, and not
with another value."""
import json
from pathlib import Path

import pytest

from mrc.train.distributed import Dist
from mrc.train.resume import ResumeError, check_compatible, config_items
from tests.train.test_e2e import DEMO, compose_cfg

NEW = ("neck.", "finetune.", "distill.", "head.span_target", "head.span_temperature", "head.span_smoothing",
       "head.span_max_len")


def old_state(cfg):
    items = {k: v for k, v in config_items(cfg).items() if not k.startswith(NEW)}
    return {"version": 1, "world_size": 1, "config": json.dumps(items)}  # written before these options


def test_a_state_from_before_the_new_options_resumes_with_their_defaults(tmp_path):
    cfg = compose_cfg(DEMO + ["head=globalpointer"], tmp_path)
    check_compatible(old_state(cfg), cfg, Dist(), Path("state.pt"))
    for override, key in (("neck=bigru", "neck._target_"), ("finetune=frozen", "finetune._target_"),
                          ("head.span_target=f1_soft", "head.span_target"),
                          ("head.span_smoothing=0.3", "head.span_smoothing")):
        changed = compose_cfg(DEMO + ["head=globalpointer", override], tmp_path)
        with pytest.raises(ResumeError, match=key.replace(".", r"\.")):
            check_compatible(old_state(cfg), changed, Dist(), Path("state.pt"))


def test_an_old_state_takes_span_max_len_from_its_own_max_answer_len(tmp_path):
    cfg = compose_cfg(DEMO + ["head=globalpointer", "decode.max_answer_len=30"], tmp_path)
    assert cfg.head.span_max_len == 30
    check_compatible(old_state(cfg), cfg, Dist(), Path("state.pt"))
    longer = compose_cfg(DEMO + ["head=globalpointer", "decode.max_answer_len=30", "head.span_max_len=40"], tmp_path)
    with pytest.raises(ResumeError, match=r"head\.span_max_len"):
        check_compatible(old_state(cfg), longer, Dist(), Path("state.pt"))

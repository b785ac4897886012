"""Checkpoint formats: mrc.yaml carries its format, and an older one is brought up to date by one migration per
format, tested on a committed format-1 file (tests/fixtures/formats/checkpoint_v1_mrc.yaml)."""
import shutil
from pathlib import Path

import pytest
import yaml

from mrc.model import checkpoint
from mrc.model.checkpoint import FORMAT, MIGRATIONS, CheckpointError
from mrc.model.manifest import write_manifest
from tests.conftest import copy_checkpoint

FORMATS = Path(__file__).resolve().parents[1] / "fixtures" / "formats"


def test_every_format_has_a_migration_to_the_next():
    assert sorted(MIGRATIONS) == list(range(1, FORMAT))


def test_a_format_1_mrc_yaml_reads_as_no_neck_and_full_finetuning(tmp_path):
    shutil.copy(FORMATS / "checkpoint_v1_mrc.yaml", tmp_path / "mrc.yaml")
    cfg = checkpoint.read_config(tmp_path)
    assert cfg.neck == {"name": "none"} and cfg.finetune == {"name": "full"} and "format" not in cfg
    assert cfg.head._target_ == "heads.globalpointer.EfficientGlobalPointer" and cfg.data.doc_stride == 64


def test_a_saved_checkpoint_is_the_current_format_and_a_format_1_copy_loads_the_same_model(tiny_checkpoint,
                                                                                            tmp_path):
    saved = yaml.safe_load((tiny_checkpoint / "mrc.yaml").read_text())
    assert saved["format"] == FORMAT and {"neck", "finetune"} <= set(saved)
    old = copy_checkpoint(tiny_checkpoint, tmp_path)
    v1 = {k: v for k, v in saved.items() if k not in ("format", "neck", "finetune")}
    (old / "mrc.yaml").write_text(yaml.safe_dump(v1))
    write_manifest(old)
    model, _, cfg = checkpoint.load(old)
    reference = checkpoint.load(tiny_checkpoint)[0]
    assert cfg.neck == {"name": "none"} and type(model.neck).__name__ == type(reference.neck).__name__
    assert all((a == b).all() for a, b in zip(model.state_dict().values(), reference.state_dict().values()))


@pytest.mark.parametrize("fmt,why", [(FORMAT + 1, "a newer version of this project wrote it"),
                                     (0, "not a format of this project"), ("2", "not a format of this project"),
                                     (True, "not a format of this project")])
def test_a_format_this_code_cannot_read_is_refused_with_one_line(tmp_path, fmt, why):
    raw = yaml.safe_load((FORMATS / "checkpoint_v1_mrc.yaml").read_text())
    (tmp_path / "mrc.yaml").write_text(yaml.safe_dump({"format": fmt, **raw}))
    with pytest.raises(CheckpointError, match=rf"mrc\.yaml: format .*\({why}.*reads versions 1 to {FORMAT}\)"):
        checkpoint.read_config(tmp_path)

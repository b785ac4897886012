"""Loading a checkpoint never runs code named in it, and a damaged checkpoint fails with one message
naming the file (issue 16, items 1 and 5)."""
import pytest
import yaml

from mrc.model import checkpoint
from mrc.model.checkpoint import CheckpointError
from tests.conftest import copy_checkpoint


def edit_yaml(ckpt, change):
    cfg = yaml.safe_load((ckpt / "mrc.yaml").read_text())
    change(cfg)
    (ckpt / "mrc.yaml").write_text(yaml.safe_dump(cfg))


def test_checkpoint_loads(tiny_checkpoint):
    model, tokenizer, cfg = checkpoint.load(tiny_checkpoint)
    assert type(model.head).__name__ == "SoftmaxHead" and cfg.data.max_len == 64


def test_a_nested_target_in_the_head_is_refused_and_never_called(tiny_checkpoint, tmp_path):
    ckpt = copy_checkpoint(tiny_checkpoint, tmp_path)
    victim = tmp_path / "written_by_the_checkpoint"
    edit_yaml(ckpt, lambda c: c["head"].update(dropout={"_target_": "shutil.copyfile", "src": str(ckpt / "mrc.yaml"),
                                                        "dst": str(victim)}))
    with pytest.raises(CheckpointError, match=r"mrc\.yaml: head\.dropout must be a plain value"):
        checkpoint.load(ckpt)
    assert not victim.exists()


@pytest.mark.parametrize("target", ["os.system", "shutil.copyfile", "heads.base.SpanHead", "torch.nn.Linear"])
def test_a_head_target_outside_the_allow_list_is_refused(tiny_checkpoint, tmp_path, target):
    ckpt = copy_checkpoint(tiny_checkpoint, tmp_path)
    edit_yaml(ckpt, lambda c: c["head"].update(_target_=target))
    with pytest.raises(CheckpointError, match=rf"mrc\.yaml: head\._target_ '{target}' is not one of this project's"):
        checkpoint.load(ckpt)


def test_a_head_by_name_and_unknown_options_or_sections(tiny_checkpoint, tmp_path):
    ckpt = copy_checkpoint(tiny_checkpoint, tmp_path)
    edit_yaml(ckpt, lambda c: c.update(head={"name": "softmax", "dropout": 0.0}))
    assert type(checkpoint.load(ckpt)[0].head).__name__ == "SoftmaxHead"
    edit_yaml(ckpt, lambda c: c["head"].update(_recursive_=True))
    with pytest.raises(CheckpointError, match=r"head\._recursive_ is not an option of SoftmaxHead"):
        checkpoint.load(ckpt)
    edit_yaml(ckpt, lambda c: (c["head"].pop("_recursive_"), c.update(hooks={"_target_": "os.system"})))
    with pytest.raises(CheckpointError, match=r"mrc\.yaml: unknown key 'hooks'"):
        checkpoint.load(ckpt)


def truncate(path):
    path.write_bytes(path.read_bytes()[:100])


@pytest.mark.parametrize("damage,message", [
    (lambda c: truncate(c / "span.safetensors"), r"span\.safetensors: cannot be read"),
    (lambda c: truncate(c / "encoder" / "model.safetensors"), r"encoder or .*tokenizer: cannot be loaded"),
    (lambda c: __import__("shutil").rmtree(c / "tokenizer"), r"tokenizer: folder missing from the checkpoint"),
    (lambda c: __import__("shutil").rmtree(c / "encoder"), r"encoder: folder missing from the checkpoint"),
    (lambda c: edit_yaml(c, lambda y: y.update(head={"_target_": "heads.globalpointer.GlobalPointer"})),
     r"span\.safetensors does not (fit|match) the head/model in .*mrc\.yaml"),
    (lambda c: edit_yaml(c, lambda y: y["data"].update(max_len=1024)),
     r"mrc\.yaml: data\.max_len=1024 exceeds the encoder's 128 positions"),
    (lambda c: edit_yaml(c, lambda y: y["model"].update(match_feature=True)),
     r"span\.safetensors does not match the head/model"),
    (lambda c: (c / "mrc.yaml").write_text("head: [unclosed"), r"mrc\.yaml: not readable as YAML"),
])
def test_a_damaged_checkpoint_names_the_file(tiny_checkpoint, tmp_path, damage, message):
    ckpt = copy_checkpoint(tiny_checkpoint, tmp_path)
    damage(ckpt)
    with pytest.raises(CheckpointError, match=message) as err:
        checkpoint.load(ckpt)
    assert str(ckpt) in str(err.value) and "\n" not in str(err.value)

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


def unsealed(path):
    """Damage ``path`` in a checkpoint without a manifest (as written before manifests), so the loader's own
    checks meet it."""
    (path.parent / "manifest.json").unlink(missing_ok=True)
    (path.parent.parent / "manifest.json").unlink(missing_ok=True)
    truncate(path)


@pytest.mark.parametrize("damage,message", [
    (lambda c: unsealed(c / "span.safetensors"), r"span\.safetensors: cannot be read"),
    (lambda c: unsealed(c / "encoder" / "model.safetensors"), r"encoder or .*tokenizer: cannot be loaded"),
    (lambda c: truncate(c / "span.safetensors"), r"span\.safetensors: the checkpoint's parts disagree"),
    (lambda c: truncate(c / "encoder" / "model.safetensors"),
     r"encoder/model\.safetensors: the checkpoint's parts disagree"),
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


# --- hardening issue items 1, 2, 7 and 8: mrc.yaml as plain data, atomic saves with a manifest, ranges, weights


def test_an_interpolation_in_mrc_yaml_is_refused_and_never_resolved(tiny_checkpoint, tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from mrc.model.quantize import tokenizer_and_config
    from mrc.train.inputs import ConfigError
    from mrc.train.teacher import attach_teacher

    secret = "s3cr3t-token-value"
    monkeypatch.setenv("SECRET_TOKEN", secret)
    ckpt = copy_checkpoint(tiny_checkpoint, tmp_path)
    text = (ckpt / "mrc.yaml").read_text().replace("null_threshold: null", "null_threshold: ${oc.env:SECRET_TOKEN}")
    assert "${oc.env:SECRET_TOKEN}" in text
    (ckpt / "mrc.yaml").write_text(text)
    for read in (checkpoint.load, checkpoint.read_config, tokenizer_and_config):
        with pytest.raises(CheckpointError, match=r"mrc\.yaml: decode\.null_threshold holds an OmegaConf "
                                                  r"interpolation") as err:
            read(ckpt)
        assert secret not in str(err.value) and "\n" not in str(err.value)
    teacher = OmegaConf.create({"teacher": str(ckpt), "alpha": 0.5, "temperature": 1.0})
    with pytest.raises(ConfigError, match=r"distill\.teacher: .*decode\.null_threshold holds an OmegaConf") as err:
        attach_teacher(teacher, None, None, 64, "cpu")  # refused before the student is looked at
    assert secret not in str(err.value)


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(9))


@pytest.mark.parametrize("text,message", [
    (BOMB, r"line 1: YAML anchors and aliases \(& and \*\) are not allowed"),
    ("head: {name: softmax}\nneck: &n {name: none}\nfinetune: *n\n", r"line 2: YAML anchors and aliases"),
    ("head: !!python/object/apply:os.system [echo hi]\n", r"line 1: explicit YAML tags"),
    ("head: {name: softmax}\npad: '" + "x" * (2 << 20) + "'\n", r"2,097,\d+ bytes, over the 1,048,576-byte limit"),
    ("head: " + "[" * 200 + "]" * 200 + "\n", r"line 1: nested deeper than 16 levels"),
    ("head: {name: softmax}\n? [a, b]\n: 1\n", r"not plain YAML data|not readable as YAML"),
])
def test_mrc_yaml_that_is_not_plain_data_is_refused_fast(tiny_checkpoint, tmp_path, text, message):
    import time

    assert len(BOMB) < 1024
    ckpt = copy_checkpoint(tiny_checkpoint, tmp_path)
    (ckpt / "mrc.yaml").write_text(text)
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match=rf"mrc\.yaml: {message}") as err:
        checkpoint.read_config(ckpt)
    assert time.perf_counter() - t0 < 1.0 and "\n" not in str(err.value)


@pytest.mark.parametrize("change,message", [
    (lambda y: y["decode"].update(n_best=0), r"decode\.n_best=0 must be an integer in 1\.\.1000"),
    (lambda y: y["decode"].update(n_best=10 ** 12), r"decode\.n_best=1000000000000 must be an integer in 1\.\.1000"),
    (lambda y: y["decode"].update(max_answer_len=0), r"decode\.max_answer_len=0 must be an integer in 1\.\.8192"),
    (lambda y: y["decode"].update(max_answer_len=10 ** 6), r"decode\.max_answer_len=1000000 must be"),
    (lambda y: y["data"].update(max_len=8), r"data\.max_len=8 must be an integer in 16\.\.8192"),
    (lambda y: y["data"].update(max_len=100000), r"data\.max_len=100000 must be an integer in 16\.\.8192"),
    (lambda y: y["data"].update(max_query_len=0), r"data\.max_query_len=0 must be an integer in 1\.\.60"),
    (lambda y: y["data"].update(max_query_len=64), r"data\.max_query_len=64 must be an integer in 1\.\.60"),
    (lambda y: y["data"].update(doc_stride=-1), r"data\.doc_stride=-1 must be an integer in 0\.\.44"),
    (lambda y: y["data"].update(doc_stride=45), r"data\.doc_stride=45 must be an integer in 0\.\.44"),
    (lambda y: y["decode"].update(null_threshold=float("nan")), r"decode\.null_threshold=nan must be a finite"),
])
def test_numbers_out_of_range_in_mrc_yaml_are_refused(tiny_checkpoint, tmp_path, change, message):
    ckpt = copy_checkpoint(tiny_checkpoint, tmp_path)
    edit_yaml(ckpt, change)
    with pytest.raises(CheckpointError, match=rf"mrc\.yaml: {message}") as err:
        checkpoint.load(ckpt)
    assert "restore" in str(err.value) and "\n" not in str(err.value)
    edit_yaml(ckpt, lambda y: (y["data"].update(max_len=16, max_query_len=12, doc_stride=0),
                               y["decode"].update(n_best=1000, max_answer_len=None, null_threshold=-2.5)))
    assert checkpoint.read_config(ckpt).decode.n_best == 1000  # the bounds themselves are allowed


def perturbed(ckpt, scale=0.5, seed=1):
    """(model, tokenizer, cfg) of ``ckpt`` with every weight moved, so that two saves differ everywhere."""
    import torch

    model, tokenizer, cfg = checkpoint.load(ckpt)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model, tokenizer, cfg


def same_weights(a, b):
    import torch

    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def leftovers(ckpt):
    return sorted(p.name for p in ckpt.parent.iterdir() if p.name.startswith(f".{ckpt.name}."))


def test_a_crash_mid_save_leaves_the_previous_checkpoint_whole(tiny_checkpoint, tmp_path, monkeypatch):
    ckpt = copy_checkpoint(tiny_checkpoint, tmp_path)
    before = checkpoint.load(ckpt)[0]
    model, tokenizer, cfg = perturbed(ckpt)
    written = []

    def killed(state, file):  # the encoder and tokenizer are written, the span weights are not
        written.extend(p.name for p in __import__("pathlib").Path(file).parent.iterdir())
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_file", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(ckpt, model, tokenizer, cfg)
    assert {"encoder", "tokenizer"} <= set(written) and leftovers(ckpt) == []
    assert same_weights(checkpoint.load(ckpt)[0], before)
    monkeypatch.undo()
    checkpoint.save(ckpt, model, tokenizer, cfg)  # the save that completes replaces it whole
    assert same_weights(checkpoint.load(ckpt)[0], model) and leftovers(ckpt) == []


def test_a_save_killed_between_its_renames_or_in_another_process_is_recoverable(tiny_checkpoint, tmp_path):
    import os
    import subprocess
    import sys

    ckpt = copy_checkpoint(tiny_checkpoint, tmp_path)
    model, tokenizer, cfg = perturbed(ckpt)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = ckpt.parent / f".ckpt.tmp-{int(dead.stdout)}"  # a save killed mid-write (its process is gone)
    (stale / "encoder").mkdir(parents=True)
    os.rename(ckpt, ckpt.parent / ".ckpt.old")  # a save killed between its two renames
    with pytest.raises(CheckpointError, match=r"ckpt: missing, but .*\.ckpt\.old holds the previous checkpoint "
                                              r"\(a save was interrupted\); rename it to ckpt"):
        checkpoint.load(ckpt)
    checkpoint.save(ckpt, model, tokenizer, cfg)
    assert same_weights(checkpoint.load(ckpt)[0], model) and leftovers(ckpt) == []


@pytest.mark.parametrize("error", [
    OSError(28, "No space left on device"),
    __import__("safetensors").SafetensorError("Error while serializing: I/O error: No space left on device "
                                              "(os error 28)"),
])
def test_a_full_disk_during_a_save_is_one_line_and_leaves_no_temp(tiny_checkpoint, tmp_path, monkeypatch, capsys,
                                                                  error):
    from mrc.errors import exit_on_user_error

    ckpt = copy_checkpoint(tiny_checkpoint, tmp_path)
    before = checkpoint.load(ckpt)[0]
    model, tokenizer, cfg = perturbed(ckpt)

    def full(state, file):
        raise error

    monkeypatch.setattr(checkpoint, "save_file", full)
    with pytest.raises(SystemExit) as code:
        exit_on_user_error(lambda: checkpoint.save(ckpt, model, tokenizer, cfg))
    err = capsys.readouterr().err.replace("\r", "\n")  # HF's progress bars write there too
    assert code.value.code == 2 and "Traceback" not in err
    assert [ln for ln in err.splitlines() if "error" in ln] == [
        f"error: {ckpt}: the checkpoint could not be written (No space left on device); the previous one, if any, "
        "is unchanged; free space and rerun"]
    assert leftovers(ckpt) == [] and same_weights(checkpoint.load(ckpt)[0], before)


def test_another_error_during_a_save_keeps_its_traceback(tiny_checkpoint, tmp_path, monkeypatch):
    ckpt = copy_checkpoint(tiny_checkpoint, tmp_path)
    monkeypatch.setattr(checkpoint, "save_file", lambda state, file: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        checkpoint.save(ckpt, *perturbed(ckpt))
    assert leftovers(ckpt) == []


def flip_byte(path, at=-1):
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_parts_that_disagree_with_the_manifest_are_refused(tiny_checkpoint, tmp_path):
    import json
    import shutil

    ckpt = copy_checkpoint(tiny_checkpoint, tmp_path)
    manifest = json.loads((ckpt / "manifest.json").read_text())["files"]
    assert {"span.safetensors", "encoder/model.safetensors", "tokenizer/tokenizer.json"} <= set(manifest)
    assert "mrc.yaml" not in manifest  # the settings users edit are checked key by key instead
    other = checkpoint.save(tmp_path / "other", *perturbed(ckpt))
    cases = [
        (lambda: flip_byte(ckpt / "span.safetensors"), "span.safetensors", "its size or sha256 differs"),
        (lambda: shutil.copy(other / "encoder" / "model.safetensors", ckpt / "encoder" / "model.safetensors"),
         "encoder/model.safetensors", "its size or sha256 differs"),
        (lambda: (ckpt / "tokenizer" / "tokenizer.json").unlink(), "tokenizer/tokenizer.json",
         "manifest.json lists this file but it is missing"),
        (lambda: shutil.copy(other / "span.safetensors", ckpt / "encoder" / "pytorch_model.bin"),
         "encoder/pytorch_model.bin", "this file is not in manifest.json"),
    ]
    for damage, name, why in cases:
        shutil.rmtree(ckpt)
        copy_checkpoint(tiny_checkpoint, tmp_path)
        damage()
        with pytest.raises(CheckpointError, match=rf"{ckpt / name}: the checkpoint's parts disagree: {why}") as err:
            checkpoint.load(ckpt)
        assert "save it again" in str(err.value) or "save the checkpoint again" in str(err.value)
        assert "\n" not in str(err.value)
    shutil.rmtree(ckpt)
    copy_checkpoint(tiny_checkpoint, tmp_path)
    (ckpt / "model.onnx").write_bytes(b"graph")  # beside the loaded folders: never read, left alone
    (ckpt / "encoder" / ".DS_Store").write_bytes(b"")
    assert checkpoint.load(ckpt)[0] is not None
    (ckpt / "manifest.json").write_text(json.dumps({"format": 1, "files": {"../../etc/passwd": {"sha256": "0",
                                                                                               "size": 1}}}))
    with pytest.raises(CheckpointError, match=r"manifest\.json: not readable .*outside the checkpoint"):
        checkpoint.load(ckpt)


def test_a_checkpoint_without_a_manifest_loads_with_one_warning(tiny_checkpoint, tmp_path, caplog):
    ckpt = copy_checkpoint(tiny_checkpoint, tmp_path)
    (ckpt / "manifest.json").unlink()  # written before checkpoints had one
    with caplog.at_level("WARNING", logger="mrc.model.checkpoint"):
        first = checkpoint.load(ckpt)[0]
        checkpoint.load(ckpt)
    assert same_weights(first, checkpoint.load(tiny_checkpoint)[0])
    assert [r.message.count("has no manifest.json") for r in caplog.records] == [1]


def resealed(ckpt, weights):
    """Write ``weights`` as span.safetensors and a manifest that agrees (so only the weights check can refuse)."""
    from safetensors.torch import save_file

    from mrc.model.manifest import write_manifest

    save_file(weights, str(ckpt / "span.safetensors"))
    write_manifest(ckpt)


def test_span_weights_outside_the_span_state_or_not_finite_are_refused(tiny_checkpoint, tmp_path):
    import torch
    from safetensors.torch import load_file

    ckpt = copy_checkpoint(tiny_checkpoint, tmp_path)
    weights = load_file(str(ckpt / "span.safetensors"))
    key = "encoder.embeddings.word_embeddings.weight"
    encoder = load_file(str(ckpt / "encoder" / "model.safetensors"))
    word = next(v for k, v in encoder.items() if k.endswith("word_embeddings.weight"))
    resealed(ckpt, {**weights, key: torch.zeros_like(word)})  # would silently zero the encoder's embeddings
    with pytest.raises(CheckpointError, match=rf"span\.safetensors does not match the head/model in .*mrc\.yaml: it "
                                              rf"holds 1 tensor\(s\) outside the model's span state, e\.g\. '{key}'"):
        checkpoint.load(ckpt)
    name = sorted(weights)[0]
    for bad in (float("nan"), float("inf")):
        broken = dict(weights)
        broken[name] = broken[name].clone()
        broken[name].view(-1)[0] = bad
        resealed(ckpt, broken)
        with pytest.raises(CheckpointError, match=rf"span\.safetensors: tensor '{name}' holds NaN or infinite values"):
            checkpoint.load(ckpt)
    resealed(ckpt, weights)
    assert same_weights(checkpoint.load(ckpt)[0], checkpoint.load(tiny_checkpoint)[0])


def test_run_level_options_are_not_written_into_the_checkpoint(tiny_checkpoint, tmp_path):
    from omegaconf import OmegaConf

    model, tokenizer, cfg = checkpoint.load(tiny_checkpoint)
    run_cfg = OmegaConf.merge(cfg, {"decode": {"abstention_pool": ["in_domain", "checklist"]},
                                    "data": {"in_domain": "demo"}})
    path = checkpoint.save(tmp_path / "checkpoint", model, tokenizer, run_cfg)
    saved = yaml.safe_load((path / "mrc.yaml").read_text())
    assert "abstention_pool" not in saved["decode"] and set(saved["data"]) == {"max_len", "max_query_len", "doc_stride"}
    assert checkpoint.load(path)[2].decode.n_best == 5

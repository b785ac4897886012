"""Issue 16 ("Hardening"), the run items: a refused resume keeps the run's record (2), crashes become
messages (5), limits are checked at start (8), user mistakes are one line (9), offline fails fast (10),
logs (11) and docs (12). The data items are in tests/data/test_input_validation.py."""
import json
import re
import socket
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from mrc.data.squad import DataError, load_squad
from tests.conftest import ROOT
from tests.train.test_e2e import DEMO, compose_cfg
from tests.data.test_input_validation import qa, squad, write  # the shared hand-made SQuAD records


# ---------------------------------------------------------------- 2. a refused resume keeps the record

@pytest.mark.slow
def test_a_refused_resume_leaves_the_run_record_untouched(tmp_path):
    from mrc.train.resume import VERSION, atomic_save, config_items

    run_dir = tmp_path / "run"
    old = compose_cfg(DEMO + ["head=softmax"], run_dir)
    atomic_save({"version": VERSION, "world_size": 1,
                 "config": json.dumps(config_items(old), sort_keys=True)}, run_dir / "resume" / "state.pt")
    (run_dir / ".hydra").mkdir()
    record = {"config.yaml": "finished run's config\n", ".hydra/overrides.yaml": "- finished\n",
              ".hydra/config.yaml": "x\n", "metrics.json": "{}"}
    for rel, text in record.items():
        (run_dir / rel).write_text(text)
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), *DEMO, "head=softmax", "optim.head_lr=0.01",
                           f"hydra.run.dir={run_dir}"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and "optim.head_lr" in proc.stderr
    assert {rel: (run_dir / rel).read_text() for rel in record} == record
    assert sorted(p.name for p in run_dir.iterdir()) == sorted([".hydra", "config.yaml", "metrics.json", "resume",
                                                                "run.log"])


# ---------------------------------------------------------------- 5. crashes become messages

def test_an_eval_split_with_no_usable_question_is_an_error(tmp_path):
    from mrc.train.inputs import _eval_split

    ref = write(tmp_path / "dev.json", squad({"id": "a", "question": " ", "answers": []}))
    with pytest.raises(DataError, match=r"data\.eval\.in_domain \(.*dev\.json\): no usable question among its 1 "
                                        r"records \(skipped \{'missing_question': 1\}\)"):
        _eval_split(OmegaConf.create({"data": {"limit_eval": None}}), "in_domain", {}, ref, None)


def test_a_truncated_resume_state_names_the_file(tmp_path):
    from mrc.train.distributed import Dist
    from mrc.train.resume import ResumeError, preflight

    state = tmp_path / "resume" / "state.pt"
    state.parent.mkdir()
    state.write_bytes(b"PK\x03\x04 truncated")
    cfg = OmegaConf.create({"trainer": {"resume": "auto"}})
    with pytest.raises(ResumeError, match=r"resume/state\.pt: cannot be read as a resumable state .*trainer\.resume"
                                          r"=false"):
        preflight(cfg, tmp_path, Dist())


@pytest.mark.parametrize("args,message", [
    (["--question", "问？", "--context", ""], "--context is empty: give the passage to read"),
    (["--question", " ", "--context", "文"], "--question is empty: give the question to ask"),
    (["--question", "问？"], "--question and --context go together"),
])
def test_predict_single_question_usage(tiny_checkpoint, capsys, args, message):
    from mrc.eval.predict import main

    with pytest.raises(SystemExit) as e:
        main([str(tiny_checkpoint), *args])
    assert e.value.code == 2 and message in capsys.readouterr().err


# ---------------------------------------------------------------- 8. limits checked at start

def test_max_len_over_the_position_table_is_refused_before_anything_runs(tmp_path):
    from transformers import BertConfig, RobertaConfig

    from mrc.train.inputs import ConfigError
    from mrc.train.pipeline import check_geometry, run

    cfg = compose_cfg(DEMO + ["data.max_len=1024", "encoder.max_position=512"], tmp_path)
    with pytest.raises(ConfigError, match=r"data\.max_len=1024 exceeds the 512 positions of encoder\.max_position"):
        run(cfg, tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.yaml"]  # no data prepared or read
    ok = compose_cfg(DEMO + ["data.max_len=512"], tmp_path)
    check_geometry(ok)
    with pytest.raises(ConfigError, match=r"exceeds the 510 positions of the encoder"):
        check_geometry(ok, RobertaConfig(max_position_embeddings=512, pad_token_id=1))
    check_geometry(ok, BertConfig(max_position_embeddings=512))
    with pytest.raises(ConfigError, match=r"data\.max_len / data\.max_query_len / data\.doc_stride: doc_stride"):
        check_geometry(compose_cfg(DEMO + ["data.doc_stride=100"], tmp_path))


# ---------------------------------------------------------------- 9. one line per user mistake

@pytest.mark.slow
def test_a_missing_data_file_is_one_line_naming_the_option(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), "encoder=tiny", "logger=none", "data.prepare=null",
                           f"data.root={tmp_path / 'data'}", f"hydra.run.dir={tmp_path / 'run'}"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: data.train[0]: ") and "dureader_robust/train.json not found" in line
    assert "data.root=DIR (or $MRC_DATA)" in line
    assert line in (tmp_path / "run" / "run.log").read_text()


def test_user_errors_inside_hydra_instantiate_are_unwrapped_to_one_line(monkeypatch, capsys):
    from hydra.errors import InstantiationException

    from mrc.errors import exit_on_user_error

    def fail():
        try:
            raise FileNotFoundError("encoder x: not built yet. Build it with\n  python -m mrc.pretrain\nor point it")
        except FileNotFoundError as e:
            raise InstantiationException(f"Error in call to target:\n{e!r}") from e

    with pytest.raises(SystemExit) as e:
        exit_on_user_error(fail)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err == "error: encoder x: not built yet. Build it with python -m mrc.pretrain or point it\n"
    monkeypatch.setenv("MRC_DEBUG", "1")
    with pytest.raises(InstantiationException):
        exit_on_user_error(fail)
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        exit_on_user_error(lambda: 1 / 0)


# ---------------------------------------------------------------- 10. offline: fail fast

def test_an_unreachable_hub_loads_from_the_cache_only_without_retrying(monkeypatch):
    import time

    from mrc.model import encoder, hub

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connections are refused
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    seen = {}

    def fake_from_pretrained(name, **kw):
        seen.update(kw)
        raise OSError(f"{name} is not in the cache")

    monkeypatch.setattr(encoder.AutoTokenizer, "from_pretrained", fake_from_pretrained)
    t0 = time.perf_counter()
    with pytest.raises(hub.HubError, match=r"(?s)could not load encoder 'hfl/chinese-roberta-wwm-ext'.*Offline\? Use "
                                           r"encoder=tiny"):
        encoder.pretrained("hfl/chinese-roberta-wwm-ext")
    assert seen["local_files_only"] is True and time.perf_counter() - t0 < 10
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert hub.hub_or_cache("org/model", {"local_files_only": False}) == {"local_files_only": False}


# ---------------------------------------------------------------- 11. logs

def test_bars_only_on_a_terminal_and_counts_named_for_what_they_count(tmp_path, monkeypatch):
    from transformers.utils import logging as hf_logging

    from mrc.train.pipeline import quiet_library_bars

    hf_logging.enable_progress_bar()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    quiet_library_bars(True)  # progress asked for, but the log is not a terminal
    assert not hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    path = write(tmp_path / "d.json", squad({"id": "m", "question": "q？", "answers": [
        {"text": "北京", "answer_start": 3}, {"text": "首都", "answer_start": 0}]}, qa("n", "首都", 1)))
    stats = load_squad(path, training=False)[1].as_dict()
    assert stats["records"] == 2 and stats["answers_relocated"] == 3 and "relocated" not in stats


def test_built_splits_are_located_so_relocations_are_logged_once(tmp_path, caplog):
    from mrc.train.inputs import load_data

    cfg = compose_cfg(DEMO, tmp_path)
    cfg.data.prepare = None
    data = tmp_path / "data" / "demo"
    data.mkdir(parents=True)
    dev = squad(qa("d1", "北京", -1), qa("d2", "首都", -1))
    write(data / "dev.json", dev)
    for name in ("generalization", "checklist"):
        write(data / f"{name}.json", squad(qa(f"{name}1")))
    write(data / "train.json", squad(qa("t1")))
    caplog.set_level("INFO")
    load_data(cfg, tmp_path)
    relocated = [r.getMessage() for r in caplog.records if "re-located" in r.getMessage()]
    assert len(relocated) == 1 and "dev.json" in relocated[0]


# ---------------------------------------------------------------- 12. docs and the quick option

def test_the_docs_extra_split_examples_compose(tmp_path):
    runs = (ROOT / "docs" / "runs.md").read_text(encoding="utf-8")
    examples = re.findall(r"`'(\+?data\.eval\.[a-z_]+=[^']+)'`", runs)
    assert examples
    for example in examples:
        compose_cfg(["data=dureader_robust", example], tmp_path)


def test_eval_splits_narrows_the_evaluation(tmp_path):
    from mrc.train.inputs import ConfigError, eval_specs

    cfg = compose_cfg(["data=dureader_robust", "data.eval_splits=[in_domain]"], tmp_path)
    assert list(eval_specs(cfg)) == ["in_domain"]
    with pytest.raises(ConfigError, match=r"data\.eval_splits=\['nope'\]: \['nope'\] not in data\.eval"):
        eval_specs(compose_cfg(["data=dureader_robust", "data.eval_splits=[nope]"], tmp_path))


def test_the_outputs_table_lists_every_file_a_run_writes():
    outputs = (ROOT / "docs" / "outputs.md").read_text(encoding="utf-8")
    table = outputs[outputs.index("# Outputs"):outputs.index("## Reading `metrics.json`")]
    for item in ("`metrics.json`", "`run.log`", "`data/`", "`config.yaml`", "`checkpoint/`", "`splits/"):
        assert item in table, item
    trust = (ROOT / "docs" / "trust-and-safety.md").read_text(encoding="utf-8")
    assert trust.startswith("# Trust and safety") and "MRC_DEBUG=1" in trust

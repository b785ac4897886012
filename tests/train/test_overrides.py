"""Command-line mistakes are one ``error:`` line with exit 2, checked before Hydra runs (mrc/train/overrides.py)."""
import subprocess
import sys
from pathlib import Path

import pytest

from mrc.train.overrides import OverrideError, check_overrides

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"


@pytest.mark.parametrize("args,expected", [
    (["head=globalpointr"], "head=globalpointr: no such head option; choose one of efficient_globalpointer, "
                            "globalpointer, softmax"),
    (["-m", "head=softmax,globalpointr"], "head=globalpointr: no such head option"),
    (["trainer.epocs=2"], "trainer.epocs: no such option (did you mean trainer.epochs?)"),
    (["trainr.epochs=2"], "(did you mean trainer.epochs?)"),
    (["data.max_len=abc"], "data.max_len=abc: expects an integer (default"),
    (["experiment=demo", "data.max_len=abc"], "data.max_len=abc: expects an integer (default 128)"),
    (["trainer.save_checkpoint=3"], "trainer.save_checkpoint=3: expects true or false"),
    (["optim.encoder_lr=fast"], "optim.encoder_lr=fast: expects a number"),
    (["experiment=demo", "decode.null_threshold=tuned"], "decode.null_threshold=tuned: expects a number"),
    (["head=[x"], "cannot read the override"),
])
def test_mistakes_are_one_line(args, expected):
    with pytest.raises(OverrideError) as e:
        check_overrides(args, CONF)
    assert expected in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("args", [
    [], ["head=globalpointer", "encoder=e5_small", "seed=3"], ["-m", "head=softmax,globalpointer", "seed=1,2"],
    ["experiment=cpu_small", "trainer.cpu_bf16=true"], ["decode.null_threshold=0.5"], ["decode.null_threshold=tune"],
    ["experiment=demo", "decode.null_threshold=tune"], ["+extra.key=1"], ["data.limit_train=null"],
    ["trainer.epochs=0.5"], ["hydra.run.dir=/tmp/x"],
    ["--cfg", "job", "trainer.epocs=2"],  # Hydra's own flags: left to Hydra
])
def test_valid_overrides_pass(args):
    check_overrides(args, CONF)


def test_run_py_exits_2_with_one_line_before_anything_runs(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "run.py"), "head=globalpointr", f"hydra.run.dir={tmp_path}/r"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["error: head=globalpointr: no such head option; choose one of "
                                               "efficient_globalpointer, globalpointer, softmax"]
    assert not (tmp_path / "r").exists()

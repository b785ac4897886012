"""Resume-state formats: every version this code reads is brought to the current one by one migration per
version, tested on committed states' recorded configurations (tests/fixtures/formats/), and an option added
without a migration is caught here."""
import json
from pathlib import Path

import pytest

from mrc.train.distributed import Dist
from mrc.train.resume import (MIGRATIONS, V1_ADDED, VERSION, ResumeError, check_compatible, config_items,
                              migrated_config)
from tests.train.test_e2e import DEMO, compose_cfg

FORMATS = Path(__file__).resolve().parents[1] / "fixtures" / "formats"
# what a version-1 run of the demo (head=globalpointer) had to set to match the behaviour from before its options
V1_BEHAVIOUR = ["optim.fused=false", "trainer.cpu_bf16=false", "trainer.cpu_bf16_via=autocast", "data.eval_splits=null"]


def recorded(version: int) -> dict:
    return json.loads((FORMATS / f"resume_v{version}_config.json").read_text(encoding="utf-8"))


def state(config: dict, version: int) -> dict:
    return {"version": version, "world_size": 1, "config": json.dumps(config)}


def here(config: dict, cfg) -> dict:
    """The recorded config with the data root of this machine (the only path a state holds)."""
    return {**config, "data.root": config_items(cfg)["data.root"]}


def test_every_version_has_a_migration_to_the_next():
    assert sorted(MIGRATIONS) == list(range(1, VERSION))


@pytest.mark.slow
def test_a_version_1_state_resumes_with_the_old_behaviour_and_refuses_another(tmp_path):
    cfg = compose_cfg(DEMO + ["head=globalpointer", *V1_BEHAVIOUR], tmp_path)
    old = here(recorded(1), cfg)
    config, filled = migrated_config(state(old, 1), Path("state.pt"))
    assert {k: config[k] for k in V1_ADDED} == V1_ADDED and config["head.span_max_len"] == old["decode.max_answer_len"]
    assert filled == set(config) - set(old)
    check_compatible(state(old, 1), cfg, Dist(), Path("state.pt"))
    for override, key in (("trainer.ema=0.9", "trainer.ema"), ("optim.fused=true", "optim.fused"),
                          ("neck=bigru", "neck._target_"), ("head.span_max_len=7", "head.span_max_len")):
        changed = compose_cfg(DEMO + ["head=globalpointer", *V1_BEHAVIOUR, override], tmp_path)
        with pytest.raises(ResumeError, match=key.replace(".", r"\.")):
            check_compatible(state(old, 1), changed, Dist(), Path("state.pt"))


def test_a_current_state_records_every_option_so_nothing_is_filled(tmp_path):
    cfg = compose_cfg(DEMO + ["head=globalpointer"], tmp_path)
    now = config_items(cfg)
    config, filled = migrated_config(state(now, VERSION), Path("state.pt"))
    assert filled == set() and config == now
    # the committed state of this version: still readable, and without it a migration would be needed
    assert migrated_config(state(recorded(VERSION), VERSION), Path("state.pt"))[1] == set()


def test_an_option_added_since_the_committed_state_needs_a_migration(tmp_path):
    """A key of today's config that the latest committed state lacks must be filled by a migration: otherwise
    every state written before the option existed is refused (bump VERSION, add the migration and a fixture)."""
    now = config_items(compose_cfg(DEMO + ["head=globalpointer"], tmp_path))
    latest = recorded(VERSION)
    missing = sorted(set(now) - set(latest))
    assert not missing, (f"options {missing} are new since resume state version {VERSION}: bump VERSION in "
                         "mrc/train/resume.py, add a migration that fills them with the old behaviour's value, "
                         f"and commit tests/fixtures/formats/resume_v{VERSION + 1}_config.json")


@pytest.mark.parametrize("version", [0, VERSION + 1, "2", True, None])
def test_an_unknown_version_is_refused_with_one_line(version):
    with pytest.raises(ResumeError, match=r"state version .*this code reads versions 1 to"):
        migrated_config(state({}, version), Path("state.pt"))

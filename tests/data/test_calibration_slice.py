"""data.calibration_share: a stable hash share of the training questions held out as the split ``calibration``,
built from the training files only, never holding an evaluation question, usable as ``decode.tune_on``."""
import json

import pytest
from omegaconf import OmegaConf

from mrc.data.subsets import in_eval_part
from mrc.train.inputs import CALIBRATION, ConfigError, load_data
from tests.data.test_negatives import paragraph, squad, write


def ids_of(path):
    return [qa["id"] for a in json.loads(path.read_text(encoding="utf-8"))["data"] for p in a["paragraphs"]
            for qa in p["qas"]]


def cfg_for(root, train=("train.json",), eval_=None, decode=None, **data):
    return OmegaConf.create({
        "data": {"root": str(root), "train": list(train), "eval": eval_ or {"in_domain": "dev.json"},
                 "eval_splits": None, "in_domain": "in_domain", "prepare": None, "limit_train": None,
                 "limit_eval": None, **data},
        "decode": decode or {"null_threshold": None, "tune_on": "checklist"}})


@pytest.fixture()
def root(tmp_path):
    root = tmp_path / "data"
    write(root / "train.json", squad([paragraph(i) for i in range(100)]))          # 200 questions
    write(root / "dev.json", squad([paragraph(i) for i in range(1000, 1010)], title="dev"))
    return root


@pytest.mark.parametrize("share", [0.1, 0.25, 0.5])
def test_the_slice_is_the_hash_share_disjoint_from_training_and_stable(root, tmp_path, share):
    all_ids = ids_of(root / "train.json")
    expected = {q for q in all_ids if in_eval_part(q, share, CALIBRATION)}
    assert 0.5 * share * 200 < len(expected) < 1.5 * share * 200
    _, train, stats, splits = load_data(cfg_for(root, calibration_share=share), tmp_path / "run")
    cal = splits[CALIBRATION]
    assert {e.id for e in cal.examples} == {g.id for g in cal.gold} == expected
    assert {e.id for e in train} == set(all_ids) - expected
    assert stats[0]["calibration_held_out"] == len(expected) and cal.stats["build"]["held_out"] == len(expected)
    assert cal.path == tmp_path / "run" / "splits" / "calibration.json"
    assert not any(g.is_impossible for g in cal.gold)
    _, again, _, splits2 = load_data(cfg_for(root, calibration_share=share), tmp_path / "run2")
    assert [e.id for e in again] == [e.id for e in train]
    assert [e.id for e in splits2[CALIBRATION].examples] == [e.id for e in cal.examples]


def test_a_larger_share_holds_out_a_superset_and_zero_holds_out_nothing(root, tmp_path):
    _, _, _, small = load_data(cfg_for(root, calibration_share=0.1), tmp_path / "a")
    _, _, _, large = load_data(cfg_for(root, calibration_share=0.3), tmp_path / "b")
    assert {e.id for e in small[CALIBRATION].examples} < {e.id for e in large[CALIBRATION].examples}
    _, train, stats, splits = load_data(cfg_for(root, calibration_share=0.0), tmp_path / "c")
    assert CALIBRATION not in splits and len(train) == 200 and "calibration_held_out" not in stats[0]


def test_never_built_from_an_eval_file_and_never_holding_an_eval_question(root, tmp_path):
    held = [i for i in range(100) if in_eval_part(f"q{i}a", 0.5, CALIBRATION)]
    shared_id, shared_text = held[0], held[1]
    # The eval file repeats one held-out question under its own id, another one under a new id, and has a
    # question of its own whose id would hash into the slice.
    own = next(f"d{i}" for i in range(100) if in_eval_part(f"d{i}", 0.5, CALIBRATION))
    dev_paras = [paragraph(shared_id), paragraph(shared_text), paragraph(2000)]
    dev_paras[1]["qas"] = [{**dev_paras[1]["qas"][0], "id": "renamed"}]
    dev_paras[2]["qas"] = [{**dev_paras[2]["qas"][0], "id": own}]
    write(root / "dev.json", squad(dev_paras, title="dev"))
    cfg = cfg_for(root, calibration_share=0.5, check_overlap=False)
    _, train, _, splits = load_data(cfg, tmp_path / "run")
    cal = splits[CALIBRATION]
    cal_ids = {g.id for g in cal.gold}
    dev_ids = {g.id for g in splits["in_domain"].gold}
    dev_pairs = {(e.question, e.context) for e in splits["in_domain"].examples}
    assert not cal_ids & dev_ids and f"q{shared_id}a" not in cal_ids and f"q{shared_text}a" not in cal_ids
    assert not any((e.question, e.context) in dev_pairs for e in cal.examples)
    assert cal.stats["build"]["dropped_eval_questions"] == 2
    train_file = json.loads((root / "train.json").read_text(encoding="utf-8"))
    train_contexts = {p["context"] for p in train_file["data"][0]["paragraphs"]}
    assert cal_ids <= set(ids_of(root / "train.json")) and all(e.context in train_contexts for e in cal.examples)
    assert not cal_ids & {e.id for e in train}


def test_the_slice_gets_negatives_of_its_own_when_negatives_are_on(root, tmp_path):
    negatives = {"share": 0.5, "kinds": ["other_paragraph", "answer_removed"], "seed": 0, "calibration": True}
    _, train, stats, splits = load_data(cfg_for(root, calibration_share=0.2, negatives=negatives), tmp_path / "r")
    cal = splits[CALIBRATION]
    held = [e for e in cal.examples if not e.is_impossible]
    cal_negs = [g for g in cal.gold if g.is_impossible]
    assert len(cal_negs) == round(0.5 * len(held)) == cal.stats["build"]["negatives"]
    assert all(g.id.split("#")[0] in {e.id for e in held} and g.qtype in negatives["kinds"] for g in cal_negs)
    assert "scored_unanswerable" not in cal.stats  # flagged is_impossible, as the SQuAD loader expects
    # training negatives come from the training questions left after the hold-out, never from the slice
    train_negs = [e for e in train if e.is_impossible]
    assert len(train_negs) == stats[0]["negatives"]["added"] == round(0.5 * (200 - len(held)))
    assert not {e.id.split("#")[0] for e in train_negs} & {e.id for e in held}
    held_contexts = {e.context for e in held}
    assert all(e.context in held_contexts for e in cal.examples if e.id.endswith("#neg-para"))
    off = {**negatives, "calibration": False}
    _, _, _, plain = load_data(cfg_for(root, calibration_share=0.2, negatives=off), tmp_path / "s")
    assert not any(g.is_impossible for g in plain[CALIBRATION].gold)


@pytest.mark.parametrize("data,match", [
    ({"calibration_share": 0.6}, r"data\.calibration_share=0\.6: must be a number in \[0, 0\.5\]"),
    ({"calibration_share": -0.1}, r"data\.calibration_share=-0\.1: must be a number in \[0, 0\.5\]"),
    ({"calibration_share": 0.1, "in_domain": "calibration"}, r"data\.in_domain=calibration: .* must not pick"),
    ({"calibration_share": 0.1, "eval": {"in_domain": "dev.json", "calibration": "dev.json"}},
     r"data\.eval\.calibration: the name is taken"),
])
def test_bad_calibration_options_are_one_line_config_errors(root, tmp_path, data, match):
    cfg = cfg_for(root, **data)
    with pytest.raises(ConfigError, match=match) as err:
        load_data(cfg, tmp_path / "run")
    assert "\n" not in str(err.value)


def test_tune_on_calibration_needs_the_slice_and_is_checked_before_training(root, tmp_path):
    tune = {"null_threshold": "tune", "tune_on": "calibration"}
    with pytest.raises(ConfigError, match=r"decode\.tune_on='calibration' .*\(set data\.calibration_share"):
        load_data(cfg_for(root, decode=tune), tmp_path / "run")
    _, _, _, splits = load_data(cfg_for(root, decode=tune, calibration_share=0.1), tmp_path / "run")
    assert CALIBRATION in splits


@pytest.mark.parametrize("decode, match", [
    ({"tune_for": "recall"}, r"decode\.tune_for='recall': must be one of f1, answerable_loss"),
    ({"tune_for": "answerable_loss", "answerable_loss": -1}, r"decode\.answerable_loss=-1: must be a number"),
    ({"tune_for": "answerable_loss", "answerable_loss": "1%"}, r"decode\.answerable_loss='1%': must be a number"),
])
def test_bad_tune_for_options_are_one_line_config_errors(root, tmp_path, decode, match):
    with pytest.raises(ConfigError, match=match) as err:
        load_data(cfg_for(root, decode={"null_threshold": "tune", "tune_on": "calibration", **decode},
                          calibration_share=0.1), tmp_path / "run")
    assert "\n" not in str(err.value)


def test_retune_nulls_for_answerable_loss_records_what_it_aimed_at():
    from mrc.eval.metric import GoldQuestion
    from mrc.eval.scoring import retune_nulls
    from mrc.eval.split import Split

    def nbest(null, best):
        return {"null_score": null, "candidates": [{"text": "甲", "score": best}]}

    gold = [GoldQuestion("c1", ("甲",), False), GoldQuestion("c2", ("甲",), False), GoldQuestion("c3", (), True)]
    results = {"calibration": {"nbest": {"c1": nbest(0.0, 1.0), "c2": nbest(2.0, 0.0), "c3": nbest(1.0, 0.0)},
                               "summary": {}}}
    splits = {"calibration": Split("calibration", None, [], gold, {})}
    retune_nulls(results, splits, "calibration", "answerable_loss", 50.0)  # c2 (diff 2) may go, c1 may not
    summary = results["calibration"]["summary"]
    assert summary["null_threshold"] == -1.0 and summary["null_threshold_tuned_for"] == "answerable_loss"
    assert results["calibration"]["predictions"] == {"c1": "甲", "c2": "", "c3": ""}


def test_retune_nulls_applies_the_threshold_tuned_on_calibration_to_every_split():
    """Reads mrc.eval.scoring.retune_nulls: tuned on ``tune_on`` only, applied to (and recorded in) every split."""
    from mrc.eval.metric import GoldQuestion
    from mrc.eval.scoring import retune_nulls
    from mrc.eval.split import Split

    def nbest(null, best):
        return {"null_score": null, "candidates": [{"text": "甲", "score": best}]}

    # calibration: the unanswerable question has null - best = 1.0, the answerable one -1.0: any t in [-1, 1)
    # is best; in_domain alone would want t >= 2 (its unanswerable one has diff 2.0)
    gold = {"calibration": [GoldQuestion("c1", ("甲",), False), GoldQuestion("c2", (), True)],
            "in_domain": [GoldQuestion("d1", (), True), GoldQuestion("d2", ("甲",), False)]}
    results = {"calibration": {"nbest": {"c1": nbest(0.0, 1.0), "c2": nbest(1.0, 0.0)}, "summary": {}},
               "in_domain": {"nbest": {"d1": nbest(2.0, 0.0), "d2": nbest(1.5, 0.0)}, "summary": {}}}
    splits = {n: Split(n, None, [], g, {}) for n, g in gold.items()}
    retune_nulls(results, splits, "calibration")
    t = results["calibration"]["summary"]["null_threshold"]
    assert -1.0 <= t < 1.0
    assert results["in_domain"]["summary"]["null_threshold"] == t
    assert results["in_domain"]["summary"]["null_threshold_tuned_on"] == "calibration"
    assert results["in_domain"]["predictions"] == {"d1": "", "d2": ""}  # calibration's t, not in_domain's oracle


@pytest.mark.slow
def test_a_tiny_run_tunes_on_calibration_and_records_the_counts(tmp_path):
    from mrc.train.pipeline import run
    from tests.train.test_e2e import DEMO, compose_cfg

    cfg = compose_cfg(DEMO + ["data.calibration_share=0.2", "data.negatives.share=0.3", "decode.null_threshold=tune",
                              "decode.tune_on=calibration", "data.eval_splits=[in_domain,checklist]"], tmp_path)
    run(cfg, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["in_domain"] == "in_domain" and set(metrics["splits"]) == {"in_domain", "checklist", CALIBRATION}
    tuned = {s["null_threshold_tuned_on"] for s in metrics["splits"].values()}
    assert tuned == {CALIBRATION} and len({s["null_threshold"] for s in metrics["splits"].values()}) == 1
    train = metrics["data"]["train"][0]
    assert train["calibration_held_out"] > 0 and train["negatives"]["added"] > 0
    assert metrics["data"]["eval"][CALIBRATION]["build"]["negatives"] > 0
    assert metrics["splits"][CALIBRATION]["NoAns"]["TOTAL"] == metrics["data"]["eval"][CALIBRATION]["build"]["negatives"]

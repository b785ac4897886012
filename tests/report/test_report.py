"""mrc.report: ablation report over hand-made job directories (no training)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from mrc.report import build as report
from mrc.report import jobs as report_jobs
from mrc.report.records import read_scores
from mrc.report import plots as report_plots
from mrc.report import stats as report_stats

HEADS = {"softmax": "heads.softmax.SoftmaxHead", "globalpointer": "heads.globalpointer.GlobalPointer"}
SEEDS = (1, 2, 3)
QIDS = [f"q{i}" for i in range(10)]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GP = "experiment=sweep_cpu, head=globalpointer"
SOFTMAX = "experiment=sweep_cpu, head=softmax"


def per_question_f1(head: str, seed: int) -> np.ndarray:
    """Known per-question F1 in [0, 1]: GlobalPointer is better on most questions."""
    rng = np.random.default_rng(100 * seed + len(head))
    base = np.linspace(0.2, 0.9, len(QIDS))
    shift = 0.08 if head == "globalpointer" else 0.0
    return np.clip(base + shift + rng.normal(0, 0.05, len(QIDS)), 0, 1)


def em_value(head: str, seed: int) -> float:
    return 80.0 + seed + (5.0 if head == "globalpointer" else 0.0)


def over_stability_f1(head: str, seed: int) -> float:
    return 60.0 + 2 * seed + (3.0 if head == "globalpointer" else 0.0)


def write_job(path: Path, overrides: list[str] | None, config: dict | None = None,
              metrics: dict | str | None = None, scores: dict[str, dict] | None = None) -> Path:
    """A job directory as the framework writes it (only the files the report reads)."""
    path.mkdir(parents=True)
    if overrides is not None:
        (path / ".hydra").mkdir()
        (path / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if config is not None:
        (path / "config.yaml").write_text(yaml.safe_dump(config))
    if metrics is not None:
        (path / "metrics.json").write_text(metrics if isinstance(metrics, str) else json.dumps(metrics))
    for split, per_q in (scores or {}).items():
        (path / "scores").mkdir(exist_ok=True)
        (path / "scores" / f"{split}.json").write_text(json.dumps(per_q))
    return path


def finished_job(root: Path, name: str, head: str, seed: int, extra_split: bool = False,
                 stride: int = 64, overrides: tuple[str, ...] = ()) -> Path:
    f1 = per_question_f1(head, seed)
    splits = {"in_domain": {"F1": 100 * f1.mean(), "EM": em_value(head, seed), "TOTAL": 10, "SKIP": 0,
                            "seconds": 1.0, "examples_per_s": 10.0 * seed},
              "over_stability": {"F1": over_stability_f1(head, seed), "EM": 50.0, "distractor_capture": 12.0}}
    if extra_split:
        splits["checklist"] = {"F1": 42.0, "EM": 40.0}
    metrics = {"in_domain": "in_domain", "best_epoch": 1, "splits": splits,
               "train": {"examples": 100, "examples_per_s": 150.0 + seed, "seconds": 2.0,
                         "trainable_params": 1_000_000 * seed},
               "eval_seconds": 1.0, "peak_rss_mb": 900.0 + seed}
    scores = {"in_domain": {q: {"f1": float(v), "em": float(v == 1.0)} for q, v in zip(QIDS, f1)}}
    config = {"seed": seed, "data": {"doc_stride": stride}, "head": {"_target_": HEADS.get(head, head)}}
    return write_job(root / name, ["experiment=sweep_cpu", *overrides, f"head={head}", f"seed={seed}",
                                   "hydra.verbose=false"], config, metrics, scores)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """Two heads × three seeds, one unfinished job, one corrupt metrics.json, one extra split."""
    root = tmp_path_factory.mktemp("multirun")
    i = 0
    for head in HEADS:
        for seed in SEEDS:
            finished_job(root, str(i), head, seed, extra_split=(head == "globalpointer" and seed == 3))
            i += 1
    write_job(root / "6", ["experiment=sweep_cpu", "head=softmax", "seed=4"], {"seed": 4})
    write_job(root / "7", ["experiment=sweep_cpu", "head=globalpointer", "seed=5"], {"seed": 5}, metrics="{not json")
    return root


@pytest.fixture(scope="module")
def built(sweep: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    assert report.main([str(sweep), "--out", str(out)]) == 0
    return out


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def seed_averaged(head: str) -> np.ndarray:
    return np.mean([per_question_f1(head, s) for s in SEEDS], axis=0)


def test_report_csv_means_and_sample_std_match_numpy(built: Path):
    rows = {r["label"]: r for r in read_csv(built / "report.csv")}
    assert set(rows) == {GP, SOFTMAX}
    for head, label in (("globalpointer", GP), ("softmax", SOFTMAX)):
        row = rows[label]
        f1 = [100 * per_question_f1(head, s).mean() for s in SEEDS]
        em = [em_value(head, s) for s in SEEDS]
        assert row["head"] == head and row["n"] == "3" and row["seeds"] == "1 2 3"
        assert float(row["in_domain/f1_mean"]) == pytest.approx(np.mean(f1))
        assert float(row["in_domain/f1_std"]) == pytest.approx(np.std(f1, ddof=1))
        assert float(row["in_domain/em_mean"]) == pytest.approx(np.mean(em))
        assert float(row["in_domain/em_std"]) == pytest.approx(np.std(em, ddof=1))
        assert float(row["train_examples_per_s"]) == pytest.approx(152.0)
        assert float(row["eval_examples_per_s"]) == pytest.approx(20.0)
        assert float(row["peak_rss_mb"]) == pytest.approx(902.0)
        assert float(row["trainable_params"]) == pytest.approx(2_000_000)
    # the split only one GlobalPointer seed has: a mean without std there, blank for softmax
    assert float(rows[GP]["checklist/f1_mean"]) == 42.0 and rows[GP]["checklist/f1_std"] == ""
    assert rows[SOFTMAX]["checklist/f1_mean"] == ""
    # constant overrides and hydra.* are not columns; the seed is not part of the label
    header = (built / "report.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["head", "label", "n", "seeds"]


def test_markdown_table_shows_mean_std_and_missing_split(built: Path):
    md = (built / "report.md").read_text(encoding="utf-8")
    f1 = [100 * per_question_f1("softmax", s).mean() for s in SEEDS]
    assert f"{np.mean(f1):.2f} ± {np.std(f1, ddof=1):.2f}" in md
    gp_row = next(line for line in md.splitlines() if line.startswith("| globalpointer | 3 |"))
    assert "| 42.00 |" in gp_row  # one seed: mean alone
    sm_row = next(line for line in md.splitlines() if line.startswith("| softmax | 3 |"))
    assert "| – |" in sm_row
    assert "| trainable params |" in md and "| 2,000,000 |" in gp_row  # the mean over seeds 1-3


def test_first_line_is_the_command(sweep: Path, tmp_path: Path):
    out = tmp_path / "r"
    assert report.main([str(sweep), "--out", str(out), "--bootstrap", "50"]) == 0
    first = (out / "report.md").read_text(encoding="utf-8").splitlines()[0]
    assert f"python -m mrc.report {sweep} --out {out} --bootstrap 50" in first


def test_wilcoxon_and_delta_match_scipy_on_seed_averaged_differences(built: Path):
    (row,) = read_csv(built / "significance.csv")
    assert (row["split"], row["a"], row["b"]) == ("in_domain", GP, SOFTMAX)
    diffs = seed_averaged("globalpointer") - seed_averaged("softmax")
    assert int(row["n_questions"]) == len(QIDS)
    assert float(row["delta_f1"]) == pytest.approx(100 * diffs.mean())
    assert float(row["p_wilcoxon"]) == pytest.approx(stats.wilcoxon(diffs).pvalue)
    assert float(row["share_a_better"]) == pytest.approx(np.mean(diffs > 0))
    assert float(row["ci_low"]) <= float(row["delta_f1"]) <= float(row["ci_high"])
    assert 0.0 <= float(row["p_bootstrap"]) <= 1.0


def test_significance_is_deterministic_under_the_seed(sweep: Path, tmp_path: Path):
    texts = []
    for name in ("a", "b"):
        assert report.main([str(sweep), "--out", str(tmp_path / name), "--seed", "7", "--bootstrap", "300"]) == 0
        texts.append((tmp_path / name / "significance.csv").read_text())
    assert texts[0] == texts[1]


def test_paired_bootstrap_properties():
    diffs = np.random.default_rng(3).normal(0.0, 1.0, 40)
    first = report_stats.paired_bootstrap(diffs, 500, seed=1)
    assert first == report_stats.paired_bootstrap(diffs, 500, seed=1)
    assert 0.0 <= first.p_value <= 1.0 and first.ci_low < diffs.mean() < first.ci_high
    large = report_stats.paired_bootstrap(np.full(30, 0.5) + np.linspace(0, 0.1, 30), 2000, seed=0)
    assert large.p_value < 0.01 and large.ci_low > 0
    assert report_stats.paired_bootstrap(np.zeros(10), 100).p_value == 1.0


def test_wilcoxon_all_zero_differences_is_one():
    assert report_stats.wilcoxon_p([0.0, 0.0, 0.0]) == 1.0
    diffs = [0.1, -0.2, 0.3, 0.4, 0.5, 0.0]
    assert report_stats.wilcoxon_p(diffs) == pytest.approx(stats.wilcoxon(diffs).pvalue)


def test_holm_hand_example():
    assert report_stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert report_stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    adjusted = report_stats.holm([0.02, float("nan")])
    assert adjusted[0] == pytest.approx(0.02) and np.isnan(adjusted[1])


def test_seed_averaging_uses_the_seeds_that_scored_each_question():
    avg = report_stats.seed_averaged([{"a": 1.0, "b": 0.0}, {"a": 0.5}])
    assert avg == {"a": 0.75, "b": 0.0}
    assert list(report_stats.paired_differences(avg, {"a": 0.25, "c": 1.0})) == [0.5]


def test_failed_and_corrupt_jobs_are_listed_with_reason(built: Path, sweep: Path):
    md = (built / "report.md").read_text(encoding="utf-8")
    section = md.split("## Failed or unfinished jobs", 1)[1].split("##", 1)[0]
    failed = next(line for line in section.splitlines() if f"{sweep / '6'}`" in line)
    assert "head=softmax" in failed and "seed=4" in failed and "no metrics.json" in failed
    corrupt = next(line for line in section.splitlines() if f"{sweep / '7'}`" in line)
    assert "corrupt metrics.json" in corrupt
    assert "2 failed or unfinished" in md


def test_robustness_drop_table(built: Path):
    md = (built / "report.md").read_text(encoding="utf-8")
    section = md.split("## Robustness drop", 1)[1].split("##", 1)[0]
    drops = [over_stability_f1("softmax", s) - 100 * per_question_f1("softmax", s).mean() for s in SEEDS]
    assert f"{np.mean(drops):.2f} ± {np.std(drops, ddof=1):.2f}" in section
    assert "checklist" in section.splitlines()[4]  # header row lists every non-in-domain split


def test_pngs_written_and_linked(built: Path):
    md = (built / "report.md").read_text(encoding="utf-8")
    for name in ("f1_vs_stride.png", "robustness_drop.png", "throughput.png"):
        assert (built / name).read_bytes()[:8] == PNG_MAGIC
        assert f"]({name})" in md


def test_splits_option_restricts_columns(sweep: Path, tmp_path: Path):
    assert report.main([str(sweep), "--out", str(tmp_path), "--splits", "in_domain", "--bootstrap", "50"]) == 0
    header = (tmp_path / "report.csv").read_text().splitlines()[0]
    assert "in_domain/f1_mean" in header and "over_stability" not in header and "checklist" not in header
    assert "No split besides the in-domain one" in (tmp_path / "report.md").read_text(encoding="utf-8")


def test_baseline_restricts_comparisons(tmp_path: Path):
    root = tmp_path / "sweep"
    for i, head in enumerate(("softmax", "globalpointer", "efficient_globalpointer")):
        finished_job(root, str(i), head, seed=1)
    assert report.main([str(root), "--out", str(tmp_path / "all"), "--bootstrap", "50"]) == 0
    assert len(read_csv(tmp_path / "all" / "significance.csv")) == 3
    assert report.main([str(root), "--out", str(tmp_path / "base"), "--bootstrap", "50",
                        "--baseline", SOFTMAX]) == 0
    rows = read_csv(tmp_path / "base" / "significance.csv")
    assert len(rows) == 2 and {r["b"] for r in rows} == {SOFTMAX}
    assert {r["a"] for r in rows} == {GP, "experiment=sweep_cpu, head=efficient_globalpointer"}
    expected = report_stats.holm([float(r["p_wilcoxon"]) for r in rows])
    assert [float(r["p_wilcoxon_holm"]) for r in rows] == pytest.approx(expected)


@pytest.mark.slow
def test_across_compares_configurations_differing_in_one_key(tmp_path: Path, capsys):
    root = tmp_path / "sweep"
    for i, (enc, head) in enumerate([(e, h) for e in ("tiny", "tiny_zh", "minilm_zh") for h in ("softmax", "globalpointer")]):
        finished_job(root, str(i), head, seed=1, overrides=(f"encoder={enc}",))
    finished_job(root, "lex", "lexical", seed=1)  # no encoder override: differs in two keys from every other
    assert report.main([str(root), "--out", str(tmp_path / "a"), "--bootstrap", "50", "--across", "encoder"]) == 0
    pairs = {(r["a"], r["b"]) for r in read_csv(tmp_path / "a" / "significance.csv")}
    assert len(pairs) == 6  # 3 encoder pairs per head, never across heads
    for a, b in pairs:
        assert a.split("head=")[1] == b.split("head=")[1] and a.split("encoder=")[1] != b.split("encoder=")[1]
    assert report.main([str(root), "--out", str(tmp_path / "b"), "--bootstrap", "50", "--across", "encoder",
                        "--baseline", "head=lexical"]) == 0
    rows = read_csv(tmp_path / "b" / "significance.csv")
    assert len(rows) == 6 + 6 and sum(r["b"].endswith("head=lexical") for r in rows) == 6
    assert report.main([str(root), "--out", str(tmp_path / "c"), "--across", "optim"]) == 2
    assert "--across optim" in capsys.readouterr().err


def test_unknown_baseline_is_an_error(sweep: Path, tmp_path: Path, capsys):
    assert report.main([str(sweep), "--out", str(tmp_path), "--baseline", "head=nope"]) == 2
    assert "head=nope" in capsys.readouterr().err


def test_empty_dir_exits_2_without_report(tmp_path: Path, capsys):
    assert report.main([str(tmp_path)]) == 2
    assert "no finished jobs" in capsys.readouterr().err
    assert not (tmp_path / "report").exists()


def test_only_failed_jobs_exits_2(tmp_path: Path):
    write_job(tmp_path / "0", ["head=softmax"], {"seed": 1})
    assert report.main([str(tmp_path)]) == 2


def test_missing_dir_is_named(tmp_path: Path, capsys):
    missing = tmp_path / "nope"
    assert report.main([str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err


def test_plain_run_dir_without_hydra_is_a_defaults_job(tmp_path: Path, capsys):
    finished = finished_job(tmp_path, "run", "softmax", seed=2)
    (finished / ".hydra" / "overrides.yaml").unlink()
    (finished / ".hydra").rmdir()
    assert report.main([str(finished), "--bootstrap", "20"]) == 0
    (row,) = read_csv(finished / "report" / "report.csv")
    assert row["label"] == "(defaults)" and row["seeds"] == "2"  # seed from config.yaml
    assert "1 finished, 0 failed" in capsys.readouterr().out


def test_stride_and_head_fall_back_to_config(tmp_path: Path):
    job = report_jobs.load_job(finished_job(tmp_path, "0", "globalpointer", seed=1, stride=96), "0")
    config = report_jobs.Configuration("x", {}, [job])
    assert report_plots.doc_stride(config) == 96 and report_plots.head_name(config) == "GlobalPointer"
    config = report_jobs.Configuration("x", {"data.doc_stride": "32", "head": "softmax"}, [job])
    assert report_plots.doc_stride(config) == 32 and report_plots.head_name(config) == "softmax"


def test_identity_drops_seed_hydra_and_paths(tmp_path: Path):
    path = write_job(tmp_path / "j", ["seed=3", "hydra.run.dir=x", "paths.output_dir=y", "logger=none",
                                      "trainer.progress=false", "+data.doc_stride=64"])
    job = report_jobs.load_job(path, "j")
    assert job.identity == {"data.doc_stride": "64"} and job.seed == 3 and not job.finished


def test_plots_without_the_needed_information_are_skipped_with_a_reason(tmp_path: Path):
    job = finished_job(tmp_path, "0", "softmax", seed=1)
    metrics = json.loads((job / "metrics.json").read_text())
    del metrics["splits"]["over_stability"]
    (job / "metrics.json").write_text(json.dumps(metrics))
    (job / "config.yaml").write_text(yaml.safe_dump({"seed": 1}))  # no data.doc_stride anywhere
    assert report.main([str(tmp_path), "--bootstrap", "20"]) == 0
    md = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert "skipped `f1_vs_stride.png`: no finished job has both data.doc_stride" in md
    assert "skipped `robustness_drop.png`: no split besides the in-domain one" in md
    assert (tmp_path / "report" / "throughput.png").read_bytes()[:8] == PNG_MAGIC
    assert not (tmp_path / "report" / "f1_vs_stride.png").exists()


def test_repeated_seeds_are_noted(tmp_path: Path):
    finished_job(tmp_path, "0", "softmax", seed=1)
    finished_job(tmp_path, "1", "softmax", seed=1)
    assert report.main([str(tmp_path), "--bootstrap", "20"]) == 0
    md = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert "seed(s) 1 occur in more than one finished job" in md


def test_keep_records_lets_a_later_report_pair_with_deleted_runs(sweep: Path, tmp_path: Path):
    import shutil
    copy = tmp_path / "multirun"
    shutil.copytree(sweep, copy)
    first = tmp_path / "first"
    assert report.main([str(copy), "--out", str(first), "--keep-records", "--bootstrap", "50"]) == 0
    records = sorted(p.name for p in (first / "runs").iterdir())
    assert records == [str(i) for i in range(6)]  # the six finished jobs; the unfinished and corrupt ones are not kept
    assert sorted(p.name for p in (first / "runs" / "0").rglob("*") if p.is_file()) == [
        "config.yaml", "in_domain.tsv", "metrics.json", "overrides.yaml"]  # no dataset-shaped JSON in a record
    lines = (first / "runs" / "0" / "scores" / "in_domain.tsv").read_text().splitlines()
    assert lines[0] == "question\tf1\tem" and len(lines) == len(QIDS) + 1
    kept = [line.split("\t")[0] for line in lines[1:]]
    assert not set(kept) & set(QIDS)  # keyed by digests: no dataset ids committed
    assert all(k.startswith("sha256:") and len(k) == len("sha256:") + 16 for k in kept)
    assert read_scores(first / "runs" / "0" / "scores" / "in_domain.tsv") == read_scores(
        copy / "0" / "scores" / "in_domain.json")  # the same F1 per question, exactly
    shutil.rmtree(copy)  # the run directories are gone; the records alone rebuild the same comparison
    again = tmp_path / "again"
    assert report.main([str(first / "runs"), "--out", str(again), "--bootstrap", "50"]) == 0
    assert (again / "significance.csv").read_text() == (first / "significance.csv").read_text()
    assert (again / "report.csv").read_text() == (first / "report.csv").read_text()
    assert "records of 6 runs written to `runs/`" in (first / "report.md").read_text(encoding="utf-8")


def test_keep_records_into_its_own_runs_dir_and_clashing_names(tmp_path: Path):
    a = finished_job(tmp_path / "sweep_a", "0", "softmax", 1)
    b = finished_job(tmp_path / "sweep_b", "0", "globalpointer", 1)
    out = tmp_path / "out"
    assert report.main([str(a.parent), str(b.parent), "--out", str(out), "--keep-records", "--bootstrap", "20"]) == 0
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["sweep_a__0", "sweep_b__0"]
    before = (out / "runs" / "sweep_a__0" / "metrics.json").read_text()
    # rebuilding from its own records leaves them in place (no copy onto itself)
    assert report.main([str(out / "runs"), "--out", str(out), "--keep-records", "--bootstrap", "20"]) == 0
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["sweep_a__0", "sweep_b__0"]
    assert (out / "runs" / "sweep_a__0" / "metrics.json").read_text() == before


@pytest.mark.slow
def test_a_record_kept_again_by_another_report_keeps_its_scores(tmp_path: Path):
    a = finished_job(tmp_path / "sweep", "0", "softmax", 1)
    finished_job(tmp_path / "sweep", "1", "globalpointer", 1)
    first = tmp_path / "first"
    assert report.main([str(a.parent), "--out", str(first), "--keep-records", "--bootstrap", "20"]) == 0
    # a second report takes one of the first report's records as an input and keeps it in its own runs/
    second = tmp_path / "second"
    assert report.main([str(first / "runs"), "--out", str(second), "--keep-records", "--bootstrap", "20"]) == 0
    for name in ("0", "1"):
        kept = second / "runs" / name / "scores" / "in_domain.tsv"
        assert kept.read_bytes() == (first / "runs" / name / "scores" / "in_domain.tsv").read_bytes()
    md = (second / "report.md").read_text(encoding="utf-8")
    assert "no scores/" not in md
    assert (second / "significance.csv").read_text() == (first / "significance.csv").read_text()
    # and a third report built from the second one's records alone pairs the same way
    third = tmp_path / "third"
    assert report.main([str(second / "runs"), "--out", str(third), "--bootstrap", "20"]) == 0
    assert (third / "significance.csv").read_text() == (first / "significance.csv").read_text()


def test_a_malformed_record_scores_file_is_left_out_with_a_note(tmp_path: Path):
    a = finished_job(tmp_path / "sweep", "0", "softmax", 1)
    finished_job(tmp_path / "sweep", "1", "globalpointer", 1)
    out = tmp_path / "out"
    assert report.main([str(a.parent), "--out", str(out), "--keep-records", "--bootstrap", "20"]) == 0
    tsv = out / "runs" / "0" / "scores" / "in_domain.tsv"
    tsv.write_text(tsv.read_text().replace("\t", " ", 3))  # the header's two tabs and the first row's first
    again = tmp_path / "again"
    assert report.main([str(out / "runs"), "--out", str(again), "--bootstrap", "20"]) == 0
    md = (again / "report.md").read_text(encoding="utf-8")
    assert "unreadable scores/in_domain.tsv (ValueError" in md
    bad = tmp_path / "bad.tsv"
    bad.write_text("question\tf1\tem\nabc\n")
    with pytest.raises(ValueError, match="line 2 has 1 tab-separated fields"):
        read_scores(bad)


# ---------------------------------------------------------------- per-question scores: validated and paired honestly

def scores_job(root: Path, name: str, head: str, seed: int, per_q: dict) -> Path:
    """A finished job whose in-domain per-question scores are ``per_q`` ({id: f1})."""
    job = finished_job(root, name, head, seed)
    scores = {q: {"f1": f1, "em": float(f1 == 1.0)} for q, f1 in per_q.items()}
    (job / "scores" / "in_domain.json").write_text(json.dumps(scores))  # json writes NaN as NaN
    return job


@pytest.mark.parametrize("row,message", [
    ("q2\tnan\t0.0", "line 3: F1 nan is not a number in [0, 1]"),
    ("q2\t50\t1.0", "line 3: F1 50 is not a number in [0, 1]"),
    ("q2\t-0.5\t0.0", "line 3: F1 -0.5 is not a number in [0, 1]"),
    ("q2\tinf\t0.0", "line 3: F1 inf is not a number in [0, 1]"),
    ("q2\t0.5\t2.0", "line 3: EM 2.0 is not a number in [0, 1]"),
    ("q2\thalf\t0.0", "line 3: F1 half is not a number"),
])
def test_record_scores_outside_zero_one_are_refused_naming_line_and_value(tmp_path: Path, row: str, message: str):
    tsv = tmp_path / "in_domain.tsv"
    tsv.write_text(f"question\tf1\tem\nq1\t0.5\t0.0\n{row}\n")
    with pytest.raises(ValueError) as e:
        read_scores(tsv)
    assert str(e.value) == message


@pytest.mark.parametrize("value,message", [(float("nan"), "F1 nan"), (50.0, "F1 50.0"), (None, "F1 None")])
def test_run_scores_outside_zero_one_are_refused_naming_the_question(tmp_path: Path, value, message: str):
    path = tmp_path / "in_domain.json"
    path.write_text(json.dumps({"q1": {"f1": 0.5, "em": 0.0}, "q2": {"f1": value, "em": 0.0}}))
    with pytest.raises(ValueError, match=rf"question 'q2': {message} is not a number"):
        read_scores(path)


def test_one_nan_score_no_longer_makes_identical_runs_significantly_different(tmp_path: Path):
    """Two configurations with the same per-question F1 in each seed; one seed file of B has one NaN."""
    same = {q: 0.1 * i for i, q in enumerate(QIDS)}
    scores_job(tmp_path / "sweep", "0", "softmax", 1, same)
    scores_job(tmp_path / "sweep", "1", "softmax", 2, same)
    scores_job(tmp_path / "sweep", "2", "globalpointer", 1, same)
    scores_job(tmp_path / "sweep", "3", "globalpointer", 2, {**same, "q3": float("nan")})
    out = tmp_path / "out"
    assert report.main([str(tmp_path / "sweep"), "--out", str(out), "--bootstrap", "200"]) == 0
    (row,) = read_csv(out / "significance.csv")
    assert float(row["delta_f1"]) == 0 and float(row["p_bootstrap"]) == 1 and float(row["p_wilcoxon"]) == 1
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "3: unreadable scores/in_domain.json (ValueError: question 'q3': F1 nan is not a number in [0, 1])" in md


def test_a_record_with_an_out_of_range_score_is_not_kept(tmp_path: Path):
    scores_job(tmp_path / "sweep", "0", "softmax", 1, {q: 0.5 for q in QIDS})
    scores_job(tmp_path / "sweep", "1", "globalpointer", 1, {**{q: 0.5 for q in QIDS}, "q1": 50.0})
    out = tmp_path / "out"
    assert report.main([str(tmp_path / "sweep"), "--out", str(out), "--keep-records", "--bootstrap", "20"]) == 0
    assert not (out / "runs" / "1" / "scores" / "in_domain.tsv").exists()
    assert "question 'q1': F1 50.0 is not a number in [0, 1]); not kept" in (out / "report.md").read_text()


def test_partly_overlapping_questions_are_paired_on_the_shared_ones_with_a_note(tmp_path: Path):
    a = {f"q{i}": 0.5 for i in range(0, 10)}
    b = {f"q{i}": 0.4 for i in range(3, 12)}  # q0-q2 only in A, q10-q11 only in B
    scores_job(tmp_path / "sweep", "0", "softmax", 1, a)
    scores_job(tmp_path / "sweep", "1", "globalpointer", 1, b)
    out = tmp_path / "out"
    assert report.main([str(tmp_path / "sweep"), "--out", str(out), "--bootstrap", "50"]) == 0
    (row,) = read_csv(out / "significance.csv")
    assert (row["a"], row["n_questions"], row["unpaired_a"], row["unpaired_b"]) == (GP, "7", "2", "3")
    assert float(row["delta_f1"]) == pytest.approx(-10.0)
    md = (out / "report.md").read_text(encoding="utf-8")
    assert ("- in_domain, `head=globalpointer` vs `head=softmax`: paired on 7 shared questions; 2 of "
            "`head=globalpointer`'s and 3 of `head=softmax`'s had no partner") in md


def test_fully_paired_comparisons_carry_no_note(built: Path):
    (row,) = read_csv(built / "significance.csv")
    assert (row["unpaired_a"], row["unpaired_b"]) == ("0", "0")
    assert "had no partner" not in (built / "report.md").read_text(encoding="utf-8")

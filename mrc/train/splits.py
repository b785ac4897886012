"""The evaluation split registry: ``data.eval`` entries are files or builders applied to a source file.

Entry forms (paths relative to the data root)::

    in_domain: dureader_robust/dev.json                       # a file
    checklist: {path: dureader_checklist/dev.json, optional: true}
    over_stability:                                           # a builder applied to a source file
      source: dureader_robust/dev.json
      builder: {_target_: mrc.robustness.over_stability.build_over_stability, _partial_: true, seed: 0}
    over_sensitivity:
      source: dureader_robust/dev.json
      builder: {...}
      consistency_with: in_domain                            # also report prediction consistency

Built splits are written to ``<run dir>/splits/<name>.json`` (inspect or share them) with their counts.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import OmegaConf

from mrc.data.squad import clean_squad, read_json
from mrc.robustness.over_stability import distractor_capture

log = logging.getLogger(__name__)


def split_specs(eval_cfg) -> dict[str, dict]:
    """Normalise ``data.eval`` (or ``data.train``) entries to dicts with ``optional`` set."""
    out = {}
    for name, spec in (eval_cfg or {}).items():
        spec = {"path": spec} if isinstance(spec, str) else OmegaConf.to_container(spec, resolve=False)
        if ("path" in spec) == ("source" in spec and "builder" in spec):
            raise ValueError(f"data.eval.{name}: give either 'path' or both 'source' and 'builder'")
        out[name] = {"optional": False, **spec}
    return out


def input_paths(specs: dict[str, dict]) -> list[str]:
    """Files the splits read (for data preparers such as downloads)."""
    return [s.get("path") or s["source"] for s in specs.values()]


def materialise(name: str, spec: dict, root: Path, run_dir: Path,
                label: str | None = None) -> tuple[Path | None, dict | None]:
    """Path of the split's SQuAD file (building it if needed) and the builder's counts; None if skipped.

    ``label``: the option that names the file in messages (``data.eval.<name>``, ``data.train[i]``).
    A builder reads the source through the loader's validation (:func:`mrc.data.squad.clean_squad`), so
    bad records are skipped and counted alike and every built file has located ``answer_start`` values.
    """
    label = label or f"data.eval.{name}"
    src = root / (spec.get("path") or spec["source"])
    if not src.is_file():
        if spec["optional"]:
            log.warning("%s: %s not found; skipped", label, src)
            return None, None
        raise FileNotFoundError(f"{label}: {src} not found; point data.root=DIR (or $MRC_DATA) at the folder "
                                f"that holds {spec.get('path') or spec['source']}, or fix {label}")
    if "builder" not in spec:
        return src, None
    builders = spec["builder"] if isinstance(spec["builder"], list) else [spec["builder"]]
    built, _ = clean_squad(read_json(src), src)
    counts = {}
    for i, b in enumerate(builders):  # a list of builders is applied in order, e.g. subset then rewrite
        built, c = instantiate(OmegaConf.create(b))(built)
        counts = c if len(builders) == 1 else {**counts, f"step{i}": c}
    out = write_built(run_dir, name, built)
    log.info("data split %s: built from %s -> %s %s", name, src, out, counts)
    return out, counts


def write_built(run_dir: Path, name: str, squad: dict) -> Path:
    """Write a built split to ``<run dir>/splits/<name>.json`` and return the path."""
    out = run_dir / "splits" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")  # atomic: DDP ranks may build the same file
    tmp.write_text(json.dumps(squad, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, out)
    return out


def robustness_metrics(name: str, spec: dict, path: Path, predictions: dict[str, dict[str, str]],
                       scores: dict[str, dict] | None = None, gold: list | None = None) -> dict:
    """Consistency with another split's predictions and/or distractor capture, where they apply; with
    per-question ``scores`` of both splits and this split's ``gold`` (typed by rewrite rule), also the
    paired before/after comparison per rule (``paired_by_type``)."""
    out = {}
    other = spec.get("consistency_with")
    if other:
        from mrc.robustness.over_sensitivity import consistency, paired_by_type

        if other not in predictions:
            raise ValueError(f"data.eval.{name}.consistency_with={other!r} is not an evaluated split")
        out["consistency"] = consistency(predictions[other], predictions[name])
        types = {q.id: q.qtype for q in gold or [] if q.qtype is not None}
        if scores and types and other in scores and name in scores:
            out["paired_by_type"] = paired_by_type(types, scores[other], scores[name], predictions[other],
                                                   predictions[name])
    if "builder" in spec:
        built = read_json(path)
        if any("distractor" in q for a in built["data"] for p in a["paragraphs"] for q in p["qas"]):
            out["distractor_capture"] = distractor_capture(built, predictions[name])
    return out

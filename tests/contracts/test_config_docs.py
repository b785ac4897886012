"""Every config option is documented, and every documented option exists.

The option tables are `docs/configuration.md`'s "Every option, with its default" (fine-tuning, `conf/`) and
`experiments/pretrain/README.md`'s (pretraining, `conf/pretrain/`). A row's first cell names keys in
backticks: `a.b` in full, then siblings by their last part (`a.b` / `c` means `a.b` and `a.c`).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
SKIP = ("hydra", "paths")  # Hydra's own settings and run-dir paths are not options of the project
GROUPS = ("data", "encoder", "neck", "head", "finetune", "optim", "trainer", "logger")


def documented_keys(markdown: str) -> set[str]:
    """Keys named in the first cell of the rows of every table whose header starts with `key` or `option`."""
    keys: set[str] = set()
    in_table = False
    for line in markdown.splitlines():
        if not line.startswith("|"):
            in_table = False
            continue
        first = line.split("|")[1].strip()
        if first in ("key", "option"):
            in_table = True
            continue
        if not in_table:
            continue
        prefix = ""
        for name in re.findall(r"`([^`]+)`", first):
            if "." in name:
                prefix = name.rsplit(".", 1)[0]
                keys.add(name)
            else:
                keys.add(f"{prefix}.{name}" if prefix else name)
    return keys


def leaf_keys(node: dict, prefix: str = "") -> set[str]:
    """Dotted keys of the leaves of a plain config dict (``_target_`` left out)."""
    out: set[str] = set()
    for key, value in node.items():
        if key in ("_target_", "_partial_") or (not prefix and key in SKIP):
            continue
        if isinstance(value, dict) and value:
            out |= leaf_keys(value, f"{prefix}{key}.")
        else:
            out.add(f"{prefix}{key}")
    return out


def composed_keys(conf_dir: Path, override_sets: list[list[str]]) -> set[str]:
    """Leaf keys of ``config.yaml`` composed under each override set (not resolved: no run dir needed)."""
    keys: set[str] = set()
    with initialize_config_dir(str(conf_dir), version_base="1.3"):
        for overrides in override_sets:
            keys |= leaf_keys(OmegaConf.to_container(compose("config", overrides=overrides), resolve=False))
    return keys


def covered(key: str, documented: set[str]) -> bool:
    """Documented itself, or under a documented mapping whose entries the user names (e.g. ``data.eval.<split>``)."""
    return key in documented or any(key.startswith(d + ".") for d in documented)


def fine_tuning_overrides() -> list[list[str]]:
    sets = [[f"{g}={p.stem}"] for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]
    return sets + [[f"experiment={p.stem}"] for p in sorted((CONF / "experiment").glob("*.yaml"))]


def pretrain_overrides() -> list[list[str]]:
    return [[]] + [[f"recipe={p.stem}"] for p in sorted((CONF / "pretrain" / "recipe").glob("*.yaml"))]


CASES = {
    "fine-tuning": (CONF, fine_tuning_overrides, ROOT / "docs" / "configuration.md"),
    "pretraining": (CONF / "pretrain", pretrain_overrides, ROOT / "experiments" / "pretrain" / "README.md"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_option_is_documented_and_every_documented_option_exists(case):
    conf_dir, overrides, doc = CASES[case]
    keys = composed_keys(conf_dir, overrides())
    documented = documented_keys(doc.read_text(encoding="utf-8"))
    assert len(keys) > 30 and len(documented) > 30
    undocumented = sorted(k for k in keys if not covered(k, documented))
    assert not undocumented, f"options missing from the table in {doc.relative_to(ROOT)}: {undocumented}"
    stale = sorted(d for d in documented if "." in d and not any(k == d or k.startswith(d + ".") for k in keys))
    assert not stale, f"{doc.relative_to(ROOT)} documents options that no config has: {stale}"


def test_the_table_parser_reads_sibling_shorthand_and_only_option_tables():
    md = "\n".join(["| file | meaning |", "|---|---|", "| `metrics.json` | not an option |", "",
                    "| key | default | meaning |", "|---|---|---|",
                    "| `optim.encoder_lr` / `head_lr` | 1 / 2 | x |", "| `seed` | 1 | y |",
                    "| `trainer.bf16` (CUDA) | true | uses `other.key` in the meaning |"])
    assert documented_keys(md) == {"optim.encoder_lr", "optim.head_lr", "seed", "trainer.bf16"}
    assert leaf_keys({"a": {"b": 1, "_target_": "x", "c": {}}, "hydra": {"run": 1}}) == {"a.b", "a.c"}
    assert covered("data.eval.in_domain", {"data.eval"}) and not covered("data.evaluation", {"data.eval"})


def test_every_docs_page_is_in_the_site_nav_and_linked_from_the_readme():
    """The README links each page of docs/ (so they work on a code host), and mkdocs.yml's nav lists each."""
    import yaml

    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]
    assert sorted(file for entry in nav for file in entry.values()) == pages
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert [p for p in pages if p != "index.md" and f"](docs/{p})" not in readme] == []

"""The bench's ratios (ours against the faster peer row, and against the bare forward) and its markdown table."""
from __future__ import annotations


def ratios(result: dict) -> dict:
    """Each ratio for the like-for-like pair (our softmax head vs the faster peer row), and per head."""
    ours, peer = result["ours"], result["peer"]
    best_train = max(r["examples_per_s"] for r in peer["train"].values())
    best_eval = max(r["examples_per_s"] for r in peer["eval"].values())
    by_head = {
        "train_vs_hf": {h: ours[h]["train"]["examples_per_s"] / best_train for h in ours},
        "eval_vs_hf": {h: ours[h]["eval"]["examples_per_s"] / best_eval for h in ours},
        "eval_vs_forward": {h: ours[h]["eval"]["seconds"] / result["forward"]["seconds"] for h in ours},
        "decode_share": {h: ours[h]["decode"]["decode_share"] for h in ours},
    }
    main = "softmax" if "softmax" in ours else next(iter(ours))
    out = {k: v[main] for k, v in by_head.items()}
    if "ours_null_window_keep" in result:
        out["train_vs_hf_null_window_keep"] = result["ours_null_window_keep"]["train"]["examples_per_s"] / best_train
    out.update(head=main, decode_share_max=max(by_head["decode_share"].values()), by_head=by_head)
    return out


def table(result: dict) -> str:
    r, ours, peer = result["ratios"], result["ours"], result["peer"]
    lines = ["| side | train ex/s | eval ex/s | eval F1 | decode/forward | peak RSS MiB |", "|---|---|---|---|---|---|"]
    for h, o in ours.items():
        lines.append(f"| ours {h} | {o['train']['examples_per_s']:.1f} | {o['eval']['examples_per_s']:.1f} | "
                     f"{o['eval']['F1']:.2f} | {100 * o['decode']['decode_share']:.1f} % | "
                     f"{max(o['train']['peak_rss_mb'], o['eval']['peak_rss_mb']):.0f} |")
    for k in ("default", "tuned"):
        t, e = peer["train"][k], peer["eval"][k]
        lines.append(f"| HF {k} | {t['examples_per_s']:.1f} | {e['examples_per_s']:.1f} | {e['F1']:.2f} | – | "
                     f"{max(t['peak_rss_mb'], e['peak_rss_mb']):.0f} |")
    extra = result.get("ours_null_window_keep")
    if extra:
        lines.append(f"| ours softmax, null_window_keep={extra['null_window_keep']} | "
                     f"{extra['train']['examples_per_s']:.1f} | – | {extra['F1']:.2f} | – | "
                     f"{extra['train']['peak_rss_mb']:.0f} |")
    fw = result["forward"]
    lines.append(f"| bare encoder forward | – | {fw['examples_per_s']:.1f} | – | – | – |")
    lines += ["", "| ratio | " + " | ".join(ours) + " | target |", "|---|" + "---|" * (len(ours) + 1)]
    targets = {"train_vs_hf": "≥ 1.3", "eval_vs_hf": "≥ 1.5", "eval_vs_forward": "≤ 1.15", "decode_share": "≤ 0.05"}
    for k, target in targets.items():
        lines.append(f"| {k} | " + " | ".join(f"{r['by_head'][k][h]:.3f}" for h in ours) + f" | {target} |")
    if "train_vs_hf_null_window_keep" in r:
        lines.append(f"\ntrain_vs_hf of softmax with null_window_keep={extra['null_window_keep']}: "
                     f"{r['train_vs_hf_null_window_keep']:.3f}")
    return "\n".join(lines)

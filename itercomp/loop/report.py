"""The run's report, rebuilt from the stages' `done.json` files: report.json, scores.png, grids/<aspect>.png.

Everything here reads what the stages wrote, so a resumed run's report is the same as an uninterrupted one's,
and a run stopped half-way still has a report of its finished rounds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from itercomp.io import atomic_open, read_jsonl, write_json
from itercomp.loop.layout import STAGES, RunLayout, read_done
from itercomp.world.vocab import ASPECTS, REWARD_ASPECTS

SHORT = {
    "attribute_binding": "attribute",
    "spatial_relationship": "spatial",
    "non_spatial_relationship": "non-spatial",
    "complex": "complex",
}


def eval_image_name(prompt_id: str, seed: int) -> str:
    """`<prompt_id>_s<seed>.png`: the naming `itercomp world score` matches to its prompt."""
    return f"{prompt_id}_s{seed}.png"


def round_entry(layout: RunLayout, k: int) -> dict | None:
    """One round's numbers from its stages (None if not even its evaluation is finished)."""
    stages = ("eval",) if k == 0 else STAGES
    done = {name: read_done(layout.stage(k, name)) for name in stages}
    evaluation = done.get("eval")
    if evaluation is None and k == 0:
        return None
    entry = {
        "round": k,
        "complete": all(v is not None for v in done.values()),
        "model": evaluation["summary"]["model"] if evaluation else None,
        "test": evaluation["summary"]["per_aspect"] if evaluation else None,
        "learned_rewards": evaluation["summary"].get("learned_rewards") if evaluation else None,
        "evaluator": evaluation["summary"].get("evaluator") if evaluation else None,
        "timings": {name: v["seconds"] for name, v in done.items() if v is not None},
    }
    if k > 0:
        summaries = {name: (v or {}).get("summary") for name, v in done.items()}
        entry.update(
            gallery=summaries["gallery"],
            rankings=summaries["rankings"],
            rewards=summaries["rewards"],
            finetune=summaries["model"],
            expand=summaries["expand"],
        )
    return entry


def build_report(layout: RunLayout, rounds: int) -> dict:
    entries = [e for e in (round_entry(layout, k) for k in range(rounds + 1)) if e is not None]
    evaluated = [e for e in entries if e["test"] is not None]
    per_aspect = {}
    for aspect in ASPECTS:
        series = {
            "rounds": [e["round"] for e in evaluated],
            "accuracy": [e["test"][aspect]["accuracy"] for e in evaluated if aspect in e["test"]],
            "mean_score": [e["test"][aspect]["mean_score"] for e in evaluated if aspect in e["test"]],
        }
        if aspect in REWARD_ASPECTS:
            series["reward_pair_accuracy"] = [
                ((e.get("rewards") or {}).get(aspect) or {}).get("pair_accuracy") for e in evaluated
            ]
            series["learned_reward"] = [(e.get("learned_rewards") or {}).get(aspect) for e in evaluated]
        per_aspect[aspect] = series
    complete = len(entries) == rounds + 1 and all(e["complete"] for e in entries)
    evaluators = [e["evaluator"] for e in evaluated if e.get("evaluator")]
    has_accuracy = all(v is not None for s in per_aspect.values() for v in s["accuracy"])
    measure = "accuracy" if has_accuracy else "mean_score"
    gain = None
    if len(evaluated) > 1 and evaluated[0]["round"] == 0:
        last = evaluated[-1]["round"]
        rows = [read_jsonl(layout.stage(k, "eval") / "rows.jsonl") for k in (0, last)]
        gain = {"from_round": 0, "to_round": last, **paired_gain(*rows, measure)}
    return {
        "evaluator": evaluators[-1] if evaluators else {"type": "shapes"},
        "measure": measure,
        "gain": gain,
        "run": str(layout.root),
        "rounds_planned": rounds,
        "rounds_complete": sum(e["complete"] for e in entries if e["round"] > 0),
        "complete": complete,
        "per_aspect": per_aspect,
        "rounds": entries,
        "pictures": {"scores": str(layout.plot), "grids": str(layout.grids)},
    }


def paired_gain(before: list[dict], after: list[dict], measure: str) -> dict:
    """The change from `before` to `after` (two rounds' evaluation rows of the same test prompts and seeds), per
    aspect with its standard error, paired per (prompt, seed): {aspect: {"gain", "se", "n"}}; and under "mean of 3"
    the mean over the three reward aspects, whose prompts are disjoint, so its SE is sqrt(sum of SE^2) / 3."""
    key = "correct" if measure == "accuracy" else "score"
    then = {(r["prompt_id"], r["seed"]): float(r[key]) for r in before}
    per_aspect: dict[str, list[float]] = {}
    for row in after:
        pair = (row["prompt_id"], row["seed"])
        if pair in then:
            per_aspect.setdefault(row["aspect"], []).append(float(row[key]) - then[pair])
    gains = {}
    for aspect in ASPECTS:
        d = np.asarray(per_aspect.get(aspect, []))
        if len(d):
            se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
            gains[aspect] = {"gain": float(d.mean()), "se": se, "n": len(d)}
    if all(a in gains for a in REWARD_ASPECTS):
        three = [gains[a] for a in REWARD_ASPECTS]
        gains["mean of 3"] = {
            "gain": sum(g["gain"] for g in three) / 3,
            "se": float(np.sqrt(sum(g["se"] ** 2 for g in three)) / 3),
            "n": sum(g["n"] for g in three),
        }
    return gains


def plot_scores(report: dict, path: Path) -> None:
    """Oracle accuracy and mean soft score on the test split, per round and aspect; and, where recorded, the
    reward models' mean score on the same images (the rewards beside the oracle: reward hacking shows as a rising
    third panel over flat or falling first two)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = "oracle" if report["evaluator"].get("type") == "shapes" else report["evaluator"].get("type")
    panels = [("mean_score", f"mean {name} score")]
    if report["measure"] == "accuracy":
        panels.insert(0, ("accuracy", f"{name} accuracy"))
    if any(v is not None for s in report["per_aspect"].values() for v in s.get("learned_reward", [])):
        panels.append(("learned_reward", "mean score by the round's reward models"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    axes = axes[0]
    for ax, (metric, label) in zip(axes, panels):
        for aspect, series in report["per_aspect"].items():
            points = [(k, v) for k, v in zip(series["rounds"], series.get(metric, [])) if v is not None]
            if points:
                ax.plot(*zip(*points), marker="o", label=SHORT[aspect])
        ax.set_xlabel("round (0 = base model)")
        ax.set_ylabel(label)
        ax.set_title(f"{label}, test split")
        if metric == "accuracy":
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        rounds = [e["round"] for e in report["rounds"] if e["test"] is not None]
        if rounds:
            ax.set_xticks(rounds)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def write_grids(layout: RunLayout, report: dict, n_prompts: int, seed: int) -> list[Path]:
    """grids/<aspect>.png: rows are the first `n_prompts` test prompts of the aspect, columns the rounds."""
    from itercomp.grid import make_grid

    rounds = [e["round"] for e in report["rounds"] if e["test"] is not None]
    if not rounds or n_prompts == 0:
        return []
    rows = {k: read_jsonl(layout.stage(k, "eval") / "rows.jsonl") for k in rounds}
    verdicts = {k: {(r["prompt_id"], r["seed"]): r for r in rows[k]} for k in rounds}
    written = []
    for aspect in ASPECTS:
        prompts = [r for r in rows[rounds[0]] if r["aspect"] == aspect and r["seed"] == seed][:n_prompts]
        if not prompts:
            continue
        images, captions = [], []
        for row in prompts:
            for column, k in enumerate(rounds):
                verdict = verdicts[k].get((row["prompt_id"], seed), {})
                path = layout.stage(k, "eval") / "images" / eval_image_name(row["prompt_id"], seed)
                images.append(np.asarray(Image.open(path).convert("RGB")))
                mark = {True: "correct ", False: "wrong ", None: ""}[verdict.get("correct")]
                caption = f"r{k} {mark}{verdict.get('score', float('nan')):.2f}"
                captions.append(f"{caption}: {row['prompt']}" if column == 0 else caption)
        grid = make_grid(
            images, captions, columns=len(rounds), caption_lines=6,
            title=f"{SHORT[aspect]}: rounds {rounds[0]}..{rounds[-1]}, seed {seed}",
        )  # fmt: skip
        path = layout.grids / f"{aspect}.png"
        with atomic_open(path, "wb") as f:
            grid.save(f, format="PNG")
        written.append(path)
    return written


def write_report(layout: RunLayout, rounds: int, grid_prompts: int, grid_seed: int) -> dict:
    report = build_report(layout, rounds)
    if any(e["test"] is not None for e in report["rounds"]):
        plot_scores(report, layout.plot)
        report["pictures"]["grid_files"] = [str(p) for p in write_grids(layout, report, grid_prompts, grid_seed)]
    write_json(layout.report, report)
    return report


def table_title(report: dict) -> str:
    """What `format_table` shows, e.g. "oracle accuracy" or "t2i_compbench mean score"."""
    name = "oracle" if report["evaluator"].get("type") == "shapes" else report["evaluator"].get("type")
    return f"{name} {'accuracy' if report['measure'] == 'accuracy' else 'mean score'}"


def format_table(report: dict) -> str:
    """Round x aspect evaluator accuracy (or mean score, for evaluators without verdicts) on the test prompts and
    the mean of the three reward aspects (IterComp's measure; complex is shown but not in the mean); under it,
    where recorded, the mean score the round's reward models give the same images (what fine-tuning climbs)."""
    measure = report["measure"]
    header = f"{'round':<6}" + "".join(f"{SHORT[a]:>13}" for a in ASPECTS) + f"{'mean of 3':>11}"
    lines = [header]
    for entry in report["rounds"]:
        if entry["test"] is None:
            continue
        values = [entry["test"].get(a, {}).get(measure) for a in ASPECTS]
        cells = "".join(f"{v:>13.3f}" if v is not None else f"{'-':>13}" for v in values)
        three = [entry["test"][a][measure] for a in REWARD_ASPECTS if a in entry["test"]]
        mean = sum(three) / len(three) if three else float("nan")
        lines.append(f"{entry['round']:<6}{cells}{mean:>11.3f}")
    gain = report.get("gain")
    if gain:
        shown = [(SHORT.get(a, a), gain[a]) for a in (*ASPECTS, "mean of 3") if a in gain]
        lines.append(
            f"gain, round {gain['to_round']} - round {gain['from_round']} (paired per test prompt and seed, "
            "+- one standard error):"
        )
        lines.append("  " + ", ".join(f"{name} {g['gain']:+.3f} +- {g['se']:.3f}" for name, g in shown))
    learned = [e for e in report["rounds"] if e["test"] is not None and e.get("learned_rewards")]
    if learned:
        lines.append("reward models' mean score on the same images:")
        for entry in learned:
            cells = "".join(
                f"{entry['learned_rewards'][a]:>+13.3f}" if a in entry["learned_rewards"] else f"{'-':>13}"
                for a in ASPECTS
            )
            lines.append(f"{entry['round']:<6}{cells}")
    return "\n".join(lines)

"""`itercomp iterate --dry-run`: what a run would do, checked offline and printed, without running anything.

Everything `prepare` checks before a run starts is checked here too (the gallery, the prompt files, the fine-tuning,
reward and evaluator settings); no weights are loaded and the run folder is not touched.
"""

from __future__ import annotations

from itercomp.loop.run import Run, feedback_config, sampling_settings
from itercomp.world.vocab import ASPECTS, REWARD_ASPECTS

REWARD_KEYS = ("backbone", "backbone_path", "image_size", "freeze_ratio", "learning_rate", "epochs", "batch_rankings",
               "gradient_accumulation_steps")  # fmt: skip
FINETUNE_KEYS = ("grad_mode", "max_steps", "batch_size", "gradient_accumulation_steps", "learning_rate", "use_lora",
                 "lora_rank", "mixed_precision", "num_inference_steps", "guidance_scale", "resolution")  # fmt: skip


def member_entry(member, base_name: str) -> dict:
    entry = {"name": member.name, "type": member.type}
    model = getattr(member.config, "model", None)
    if model is not None:
        entry["model"] = model
    if member.name == base_name:
        entry["fine_tuned"] = True
    return entry


def round_images(run: Run, k: int, prompts: int) -> dict:
    """Images round k's gallery renders: every member `images_per_prompt` seeds, the current model more."""
    config = run.config
    members = len(run.gallery.members) + (k - 1)
    extra = max(config.current_model_seeds, config.images_per_prompt) - config.images_per_prompt
    return {"members": members, "images": prompts * (members * config.images_per_prompt + extra)}


def build_plan(run: Run) -> dict:
    """The run's plan as data: stages, prompts per round, models and the evaluator."""
    config, pools = run.config, run.prompts
    feedback = feedback_config(config, run.feedback_config_cls, sampling_settings(run), output_dir="<round>/model")
    rounds = []
    for k in range(1, config.rounds + 1):
        new = pools.round_prompts(k, run.per_split)
        tasks = len(new) * (len(REWARD_ASPECTS) if config.task_aspects == "all" else 1)
        rounds.append(
            {
                "round": k,
                "new_prompts": {a: sum(p["aspect"] == a for p in new) for a in REWARD_ASPECTS},
                "gallery": round_images(run, k, len(new)),
                "ranking_tasks": tasks,
                "rankings": tasks * config.overlap,
            }
        )
    available = {a: {s: len(rows) for s, rows in splits.items()} for a, splits in pools.ranking.items()}
    return {
        "output_dir": config.output_dir,
        "rounds": config.rounds,
        "stages": ["eval (round 0)", "gallery", "rankings", "rewards", "model", "eval", "expand"],
        "gallery": {
            "name": run.gallery.name,
            "source": run.gallery.source,
            "members": [member_entry(m, run.base.name) for m in run.gallery.members],
        },
        "prompts": {
            "source": pools.source,
            "ranking_available": available,
            "finetune": len(pools.finetune),
            "test": {a: sum(aspect == a for aspect, _ in pools.test) for a in ASPECTS},
            "dropped_test_prompts": pools.dropped,
        },
        "per_round": rounds,
        "annotators": {"mode": config.annotators, "overlap": config.overlap, "task_aspects": config.task_aspects},
        "rewards": {
            "init": config.reward_init,
            **{k: config.rewards[k] for k in REWARD_KEYS if config.rewards.get(k) is not None},
        },
        "finetune": {
            "reward": config.reward,
            "recipe": config.finetune_recipe,
            **{k: getattr(feedback, k) for k in FINETUNE_KEYS if hasattr(feedback, k)},
        },
        "evaluation": {
            "evaluator": run.evaluator_spec,
            "test_prompts": len(pools.test),
            "seeds": list(config.eval_seeds),
            "images_per_round": len(pools.test) * len(config.eval_seeds),
        },
    }


def format_plan(plan: dict) -> str:
    """The plan as the lines `--dry-run` prints."""
    lines = [f"plan of {plan['output_dir']}: {plan['rounds']} round(s), nothing run"]
    lines.append(f"  stages      {' -> '.join(plan['stages'])}")
    gallery = plan["gallery"]
    lines.append(f"  gallery     {gallery['name']} ({gallery['source']})")
    for m in gallery["members"]:
        mark = "  <- fine-tuned" if m.get("fine_tuned") else ""
        lines.append(f"                {m['name']:<18} {m['type']:<14} {m.get('model', '')}{mark}")
    prompts = plan["prompts"]
    ranking = ", ".join(f"{a} {s['train']}+{s['val']}" for a, s in prompts["ranking_available"].items())
    lines.append(f"  prompts     {prompts['source']}: ranking (train+val) {ranking}")
    lines.append(f"              fine-tuning {prompts['finetune']}; test " + ", ".join(
        f"{a} {n}" for a, n in prompts["test"].items() if n) + f"; {prompts['dropped_test_prompts']} test prompt(s) "
        "dropped from the training pools")  # fmt: skip
    for r in plan["per_round"]:
        new = ", ".join(f"{a} {n}" for a, n in r["new_prompts"].items())
        lines.append(
            f"  round {r['round']:<5} {new} new prompts; {r['gallery']['images']} images from "
            f"{r['gallery']['members']} members; {r['ranking_tasks']} tasks, {r['rankings']} rankings"
        )
    annotators = plan["annotators"]
    lines.append(f"  rankings    {annotators['mode']} annotators, overlap {annotators['overlap']}, "
                 f"aspects: {annotators['task_aspects']}")  # fmt: skip
    lines.append("  rewards     " + ", ".join(f"{k} {v}" for k, v in plan["rewards"].items()))
    lines.append("  fine-tune   " + ", ".join(f"{k} {v}" for k, v in plan["finetune"].items()))
    evaluation = plan["evaluation"]
    lines.append(f"  evaluation  {evaluation['evaluator']}: {evaluation['test_prompts']} test prompts x "
                 f"{len(evaluation['seeds'])} seed(s) per round")  # fmt: skip
    return "\n".join(lines)

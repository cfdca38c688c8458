"""`itercomp iterate`: IterComp's loop, one function per stage and one loop over rounds.

    round 0   eval      the base model before any fine-tuning (the reference every round is compared with)
    round k   gallery   render round k's new prompts with the gallery (the starting members plus the fine-tuned
                        models of rounds 1..k-1)
              rankings  annotators rank each prompt's images per aspect (simulated by default; humans through
                        the annotation app); round k's training rankings = round k-1's grown rankings + these
              rewards   refine the three reward models (from round k-1's) on those rankings
              model     reward-feedback fine-tuning of round k-1's model with the new reward models
              eval      the fine-tuned model on the test split with the oracle (same prompts and seeds every round)
              expand    the fine-tuned model renders every ranked prompt; its images are inserted into each
                        ranking with the new reward models (itercomp.loop.insertion) -> round k+1's data

Each stage writes into its own folder (itercomp.loop.layout) and finishes with `done.json`; a resumed run skips
finished stages, and an unfinished one continues from its own outputs. The report and pictures are rebuilt from
the stages' outputs after every round.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from gallery import Gallery, MemberSpec, load_gallery, render_gallery
from gallery.base import Context
from gallery.diffusers_generator import DiffusersConfig
from itercomp.config import to_dict
from itercomp.errors import ItercompError
from itercomp.io import read_json, read_jsonl, replace_dir, write_text
from itercomp.loop.config import (
    RESUMABLE,
    SHIPPED,
    IterateConfig,
    changed_fields,
    feedback_config,
    section_config,
    shipped_rewards,
)
from itercomp.loop.evaluation import annotator_score_fn, check_evaluator, evaluate_model
from itercomp.loop.expansion import expand
from itercomp.loop.layout import STAGES, RunLayout, mark_done, read_done
from itercomp.loop.processes import SingleProcess, on_main, process_state
from itercomp.loop.prompts import PromptPools, file_pools, shapes_pools
from itercomp.loop.report import format_table, write_report
from itercomp.rankings import read_rankings, write_rankings
from itercomp.records import MANIFEST, REWARD_MODEL_PREFIX
from itercomp.world.vocab import REWARD_ASPECTS


@dataclass
class Run:
    """What every stage needs: the settings, where things go, the gallery, and the fine-tuning function."""

    config: IterateConfig
    layout: RunLayout
    gallery: Gallery  # the starting members (config.members of the configured gallery)
    base: MemberSpec  # the member that is fine-tuned
    finetune_fn: Callable
    feedback_config_cls: type
    log: Callable[[str], None]
    prompts: PromptPools
    state: object = field(default_factory=SingleProcess)  # the processes (itercomp.loop.processes)
    _evaluators: dict = field(default_factory=dict)

    @property
    def evaluator_spec(self) -> dict:
        """The evaluator's type and options as configured."""
        return dict(self.config.evaluator)

    def evaluator(self, k: int):
        """The evaluator of round k's images, built once; a `rewards` evaluator without a `path` scores with the
        reward models after round k (the starting ones for round 0)."""
        from itercomp.loop.evaluation import load_evaluator

        spec = self.evaluator_spec
        if spec.get("type") == "rewards" and not spec.get("path"):
            spec["path"] = str(self.reward_models(k))
        key = repr(sorted(spec.items()))
        if key not in self._evaluators:
            self._evaluators[key] = load_evaluator(spec)
        return self._evaluators[key]

    @property
    def per_split(self) -> dict[str, int]:
        """New ranking prompts per aspect and split each round."""
        return {"train": self.config.prompts_per_aspect, "val": self.config.val_prompts_per_aspect}

    def member(self, k: int) -> MemberSpec:
        """The model of round k: the base member (k = 0) or round k's fine-tuned pipeline as a gallery member."""
        if k == 0:
            return self.base
        name = f"{self.base.name}_r{k}"
        return replace(
            self.base,
            name=name,
            config=replace(self.base.config, model=str(self.layout.pipeline(k).resolve())),
            description=f"{self.base.name} after {k} round(s) of reward-feedback fine-tuning",
            context=Context(name, str(self.layout.config), None),
        )

    def gallery_at(self, k: int) -> Gallery:
        """Round k's gallery: the starting members plus every fine-tuned model of the rounds before it."""
        members = [*self.gallery.members, *(self.member(j) for j in range(1, k))]
        return Gallery(f"{self.gallery.name}+r{k - 1}", members, self.gallery.description, self.gallery.source)

    def load_pipeline(self, k: int, device=None):
        generator = self.member(k).build()
        reason = generator.unavailable()
        if reason:
            raise ItercompError(f"cannot load the round-{k} model {generator.name!r}: {reason}")
        generator.load(device)
        return generator.pipe

    def reward_models(self, k: int) -> Path | None:
        """The reward models after round k (k = 0: the configured starting models, None for new ones)."""
        if k > 0:
            return self.layout.stage(k, "rewards")
        init = self.config.reward_init
        if init is None:
            return None
        path = shipped_rewards() if init == SHIPPED else Path(init)
        missing = [a for a in REWARD_ASPECTS if not (path / a / "config.json").is_file()]
        if missing:
            raise ItercompError(
                f"reward_init {init!r}: no reward model for {', '.join(missing)} under {path}; give a folder with "
                "<aspect>/config.json subfolders, 'shipped', or null to train new ones"
            )
        return path

    def db(self, k: int) -> str:
        """Round k's annotation store. Human mode shares one across rounds so annotators' logins carry over."""
        if self.config.annotation_db:
            return self.config.annotation_db
        if self.config.annotators == "human":
            return str(self.layout.shared_db)
        return str(self.layout.stage(k, "rankings") / "annotations.sqlite")

    @property
    def resume_command(self) -> str:
        return f"itercomp iterate --output-dir {self.layout.root} --resume"


# ---- stages ---------------------------------------------------------------------------------------------------


def render_round_gallery(run: Run, k: int) -> dict:
    """Every member renders round k's prompts with `images_per_prompt` seeds; the current model (the base in
    round 1, round k-1's fine-tuned model after) renders `current_model_seeds`, so each ranking holds several
    seeds of the model being fine-tuned: the same-model pairs that reward feedback has to get right."""
    config = run.config
    prompts = run.prompts.round_prompts(k, run.per_split)
    gallery = run.gallery_at(k)
    folder = run.layout.stage(k, "gallery")
    current = run.member(k - 1).name
    extra = max(config.current_model_seeds, config.images_per_prompt)
    if extra > config.images_per_prompt:  # first, so the full gallery's call writes run.json and the grids
        render_gallery(
            gallery, prompts, folder, members=[current], images_per_prompt=extra, seed=config.seed,
            grids=False, accelerator=run.state, log=run.log,
        )  # fmt: skip
    summary = render_gallery(
        gallery, prompts, folder, images_per_prompt=config.images_per_prompt,
        seed=config.seed, skip_unavailable=config.skip_unavailable, accelerator=run.state, log=run.log,
    )  # fmt: skip
    images = read_jsonl(folder / MANIFEST)
    return {
        "prompts": len(prompts),
        "members": [m["name"] for m in summary["members"]],
        "skipped_members": summary["skipped_members"],
        "images": len(images),
        "images_per_second": summary["images_per_second"],
        "same_model": {
            "member": current,
            "seeds": extra,
            "images": sum(r["generator"] == current for r in images),
            "pairs_per_ranking": extra * (extra - 1) // 2,
        },
    }


def collect_rankings(run: Run, k: int) -> dict:
    """The annotation store, its annotators (simulated or people) and the export: on the main process."""
    return on_main(run.state, lambda: store_rankings(run, k))


def store_rankings(run: Run, k: int) -> dict:
    from annotation_app.interchange import export
    from annotation_app.simulate import SimulationConfig, simulate
    from annotation_app.store import Store
    from annotation_app.tasks import tasks_from_gallery
    from itercomp.loop.human import needed, serve_in_background, wait_for_rankings, waiting_message

    config, folder = run.config, run.layout.stage(k, "rankings")
    db = run.db(k)
    store = Store(db)
    try:
        added, present = store.add_tasks(tasks_from_gallery(run.layout.stage(k, "gallery"), config.task_aspects), k)
        run.log(f"{added + present} ranking tasks in round {k} of {db} ({added} new)")

        def progress() -> dict:
            return store.progress(None, overlap=config.overlap, round=k)

        if config.annotators == "simulated":  # ranking by the evaluator's score (the oracle in the shapes world)
            simulate(
                store,
                SimulationConfig(
                    annotators=config.simulated_annotators, temperature=config.temperature, overlap=config.overlap,
                    seed=config.seed + 1000 * k, round=k,
                ),
                score_fn=annotator_score_fn(run.evaluator(k - 1)),
            )  # fmt: skip
        else:
            need = needed(progress(), config.target_rankings)
            stop = None
            if config.human_wait_minutes > 0 and config.human_serve and progress()["towards_target"] < need:
                stop = serve_in_background(
                    db, k, config.overlap, config.serve_host, config.serve_port, guidelines=config.guidelines
                )
                run.log(f"ranking page: http://{config.serve_host}:{config.serve_port}/ (waiting for {need} rankings)")
            try:
                wait_for_rankings(
                    progress,
                    need,
                    config.human_wait_minutes,
                    lambda p: waiting_message(p, need, db, run.resume_command, config.guidelines),
                )
            finally:
                if stop is not None:
                    stop()
        exported = export(store, folder / "export", round=k, paths="relative")
        state = progress()
    finally:
        store.close()
    fresh = read_rankings(folder / "export" / "rankings.jsonl")
    carried = read_rankings(run.layout.stage(k - 1, "expand") / "rankings.jsonl") if k > 1 else []
    write_rankings(folder / "rankings.jsonl", carried + fresh)
    return {
        "annotators": config.annotators,
        "db": db,
        "tasks": state["tasks"],
        "tasks_complete": state["tasks_complete"],
        "fresh_rankings": len(fresh),
        "fresh_pairs": exported["pairs"],
        "carried_rankings": len(carried),
        "training_rankings": len(carried) + len(fresh),
        "per_aspect": dict(Counter(r.aspect for r in carried + fresh)),
    }


def refine_rewards(run: Run, k: int) -> dict:
    """Refine each aspect's reward model from round k-1's on round k's rankings (one aspect at a time, so a killed
    stage keeps the aspects it finished), then check them on held-out (val-split) annotator rankings."""
    from reward_models.config import RewardTrainConfig
    from reward_models.training import train

    config, folder = run.config, run.layout.stage(k, "rewards")
    rankings_file = run.layout.stage(k, "rankings") / "rankings.jsonl"
    init = run.reward_models(k - 1)
    summary = {}
    for aspect in REWARD_ASPECTS:
        final = folder / aspect
        if not (final / "train_state.json").is_file():  # written last by the trainer
            work = folder / ".work" / aspect
            on_main(run.state, lambda work=work: shutil.rmtree(work, ignore_errors=True))
            train_config = section_config(
                "rewards", config.rewards, RewardTrainConfig, rankings=str(rankings_file), output_dir=str(work),
                aspects=(aspect,), init_from=str(init) if init else None,
                **({} if "seed" in config.rewards else {"seed": config.seed + k}),
            )  # fmt: skip
            train(train_config)  # every process: data-parallel
            on_main(run.state, lambda work=work, final=final, aspect=aspect: replace_dir(work / aspect, final))
        state = read_json(final / "train_state.json")
        keep = ("train_rankings", "train_pairs", "val_rankings", "best_epoch", "best_val_loss", "best_val_accuracy")
        summary[aspect] = {"train": {key: state.get(key) for key in (*keep, "epochs_run", "seconds")}}
    on_main(run.state, lambda: shutil.rmtree(folder / ".work", ignore_errors=True))
    for aspect, result in on_main(run.state, lambda: held_out_accuracy(run, k, init)).items():
        summary[aspect].update(result)
    return summary


def held_out_accuracy(run: Run, k: int, init: Path | None) -> dict:
    """Pairwise accuracy (and oracle agreement, in the shapes world) on the val-split rankings that annotators
    made in rounds 1..k, for the refined models and for the models they started from."""
    from reward_models.evaluation import evaluate_rankings
    from reward_models.model import RewardModel

    held_out = [
        r
        for j in range(1, k + 1)
        for r in read_rankings(run.layout.stage(j, "rankings") / "export" / "rankings.jsonl")
        if run.prompts.is_val(r.prompt)
    ]
    results = {}
    for aspect in REWARD_ASPECTS:
        rankings = [r for r in held_out if r.aspect == aspect]
        if not rankings:
            results[aspect] = {"held_out_rankings": 0}
            continue
        after = evaluate_rankings(
            RewardModel.from_pretrained(run.layout.stage(k, "rewards") / aspect), rankings, Path("/")
        )
        result = {
            "held_out_rankings": len(rankings),
            "pair_accuracy": after["pair_accuracy"],
            "oracle_agreement": after.get("oracle_agreement"),
        }
        if init is not None:
            before = evaluate_rankings(RewardModel.from_pretrained(init / aspect), rankings, Path("/"))
            result.update(
                pair_accuracy_before=before["pair_accuracy"], oracle_agreement_before=before.get("oracle_agreement")
            )
        results[aspect] = result
    return results


def finetune_model(run: Run, k: int) -> dict:
    from reward_models.ensemble import RewardEnsemble

    config, folder = run.config, run.layout.stage(k, "model")
    pipe = run.load_pipeline(k - 1)  # every process; the fine-tuner's accelerator places it and syncs gradients
    if config.reward == "oracle":
        from itercomp.finetune.oracle_reward import OracleReward

        rewards, source = OracleReward(), "the oracle (a perfect annotator)"
    else:
        rewards = RewardEnsemble.from_pretrained(run.layout.stage(k, "rewards"))
        rewards, source = rewards.to(pipe.device).eval().requires_grad_(False), f"the round-{k} reward models"
    prompts = run.prompts.finetune
    loop_fields = {} if "seed" in config.finetune else {"seed": config.seed + k}
    rankings = str(run.layout.stage(k, "rankings") / "rankings.jsonl")
    dpo, select = config.finetune.get("dpo") or {}, config.finetune.get("select") or {}
    sections = {f.name for f in dataclasses.fields(run.feedback_config_cls)}  # a stand-in class may have none
    grad_mode = config.finetune.get("grad_mode", config.recipe().get("grad_mode"))
    if "dpo" in sections and grad_mode == "dpo" and "preference_pairs" not in dpo:
        # DPO learns from the round's rankings directly (plus the current model's own samples ranked by reward)
        loop_fields["dpo"] = {"preference_pairs": rankings}
    if select.get("winners") == "round":  # select also trains on the gallery's best image per ranked prompt
        loop_fields["select"] = {"winners": rankings}
    feedback = feedback_config(
        config, run.feedback_config_cls, sampling_settings(run), output_dir=str(folder), **loop_fields
    )
    run.log(f"fine-tuning {run.member(k - 1).name} on {len(prompts)} prompts with {source}")
    metrics = run.finetune_fn(pipe, rewards, prompts, feedback)
    if not (run.layout.pipeline(k) / "model_index.json").is_file():
        raise ItercompError(
            f"fine-tuning finished without saving a pipeline at {run.layout.pipeline(k)}; "
            "the finetune function must write <output_dir>/pipeline"
        )
    return finetune_summary(json_safe(metrics or {}))


def sampling_settings(run: Run) -> dict:
    """Fine-tune the model the way it is sampled in the gallery and the evaluation: the base member's steps and
    guidance (also in the steps with gradient), for the FeedbackConfig fields that exist."""
    call = run.base.config.call
    known = {f.name for f in dataclasses.fields(run.feedback_config_cls)}
    settings = {k: call[k] for k in ("num_inference_steps", "guidance_scale") if k in call and k in known}
    if "guidance_scale" in settings and "window" in known:  # the steps with gradient of refl / draft / alignprop
        settings["window"] = {"grad_guidance_scale": settings["guidance_scale"]}
    return settings


def finetune_summary(metrics: dict) -> dict:
    """The report's share of the fine-tuning metrics (all of them stay in model/metrics.json): the scalars, the
    last step's loss, and the mean rewards before and after on the fine-tuner's fixed evaluation batch."""
    summary = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None}
    history = metrics.get("history") or []
    if history and isinstance(history[-1], dict):
        summary["final_loss"] = history[-1].get("loss")
    evaluation = metrics.get("eval")
    if isinstance(evaluation, dict):
        summary.update(reward_before=evaluation.get("before"), reward_after=evaluation.get("after"))
    return summary


def expand_rankings(run: Run, k: int) -> dict:
    """The fine-tuned model joins the gallery: it renders every ranked prompt, and its images are inserted into
    each ranking with the round-k reward models (itercomp.loop.expansion; scores cached in scores.json)."""
    config = run.config
    return expand(
        run.member(k), run.layout.stage(k, "rankings") / "rankings.jsonl", run.layout.stage(k, "rewards"),
        run.layout.stage(k, "expand"), images_per_prompt=config.images_per_prompt, seed=config.seed,
        annotator=f"{REWARD_MODEL_PREFIX}round_{k}", round=k + 1, state=run.state, log=run.log,
    )  # fmt: skip


STAGE_FUNCTIONS = {
    "gallery": render_round_gallery,
    "rankings": collect_rankings,
    "rewards": refine_rewards,
    "model": finetune_model,
    "eval": evaluate_model,
    "expand": expand_rankings,
}


# ---- the loop -------------------------------------------------------------------------------------------------


def run_stage(run: Run, k: int, name: str) -> dict:
    folder = run.layout.stage(k, name)
    done = read_done(folder)
    if done is not None:
        return done["summary"]
    on_main(run.state, lambda: folder.mkdir(parents=True, exist_ok=True))
    run.log(f"==== round {k} / {run.config.rounds}: {name} ====")
    start = time.perf_counter()
    summary = STAGE_FUNCTIONS[name](run, k)  # every process; each stage says what it splits
    return on_main(run.state, lambda: mark_done(folder, summary, time.perf_counter() - start)["summary"])


def iterate(
    config: IterateConfig,
    *,
    resume: bool = False,
    gallery: Gallery | None = None,
    finetune_fn: Callable | None = None,
    feedback_config_cls: type | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Run (or resume) the loop for `config.rounds` rounds; returns the report (also in <out>/report.json).

    `gallery` replaces the configured gallery YAML; `finetune_fn` / `feedback_config_cls` replace
    `itercomp.finetune.finetune` / `FeedbackConfig` (same signatures)."""
    if config.threads:
        import torch

        torch.set_num_threads(config.threads)
    run = prepare(config, resume, gallery, finetune_fn, feedback_config_cls, log)
    layout, state = run.layout, run.state
    finished = [k for k in range(config.rounds + 1) if read_done(layout.stage(k, "expand" if k else "eval"))]
    if finished:
        run.log(f"resuming {layout.root}: round(s) {', '.join(map(str, finished))} finished earlier and are skipped")

    def report() -> dict:
        return write_report(layout, config.rounds, config.grid_prompts, config.eval_seeds[0])

    run_stage(run, 0, "eval")
    result = on_main(state, report)
    for k in range(1, config.rounds + 1):
        for name in STAGES:
            run_stage(run, k, name)
        result = on_main(state, report)
        run.log(format_table(result))
    return result if state.is_main_process else None


def prepare(config, resume, gallery, finetune_fn, feedback_config_cls, log, dry_run: bool = False) -> Run:
    """Check everything that can fail before any work: the run folder, the gallery, the prompts, the fine-tuning
    settings. A dry run checks the same without touching the run folder."""
    if finetune_fn is None or feedback_config_cls is None:
        try:
            from itercomp.finetune import FeedbackConfig, finetune
        except ImportError as e:
            raise ItercompError(f"reward-feedback fine-tuning (itercomp.finetune) cannot be imported: {e}") from None
        finetune_fn = finetune_fn or finetune
        feedback_config_cls = feedback_config_cls or FeedbackConfig
    feedback_config(config, feedback_config_cls, output_dir=str(Path(config.output_dir) / "check"))
    gallery = gallery or load_gallery(config.gallery)
    selected = gallery.select(list(config.members) if config.members else None)
    by_name = {m.name: m for m in selected}
    base = by_name.get(config.base_member)
    if base is None:
        raise ItercompError(
            f"gallery {gallery.name!r} has no member {config.base_member!r} to fine-tune; its members are "
            f"{', '.join(gallery.names)} (set --base-member)"
        )
    if not isinstance(base.config, DiffusersConfig):
        raise ItercompError(
            f"--base-member {base.name!r} is a {base.type!r} member; the loop fine-tunes and reloads a diffusers "
            "pipeline, so it must be a `type: diffusers` member"
        )
    clash = [m.name for m in selected if m.name.startswith(f"{base.name}_r")]
    if clash:
        raise ItercompError(f"member name {clash[0]!r} is reserved for the fine-tuned models; rename that member")
    check_real_data(config)
    if config.guidelines is not None:  # a bad file fails now, not when the ranking page starts
        from annotation_app.guidelines import load_guidelines

        load_guidelines(config.guidelines)
    prompts = prompt_pools(config)
    state = SingleProcess() if dry_run else process_state()
    if not state.is_main_process:  # one voice: the main process logs
        log = lambda _: None  # noqa: E731
    layout = RunLayout(Path(config.output_dir)) if dry_run else on_main(state, lambda: open_run(config, resume, log))
    start = Gallery(gallery.name, selected, gallery.description, gallery.source)
    run = Run(config, layout, start, base, finetune_fn, feedback_config_cls, log, prompts, state)
    # fails now, not after round 1's rankings, if the starting reward models or the evaluator are wrong
    check_evaluator(run.evaluator_spec, run.reward_models(0))
    return run


def check_real_data(config: IterateConfig) -> None:
    """Prompt files are other text than the shapes world's: the settings made for the world cannot score it."""
    if config.prompts.source == "shapes":
        return
    if config.evaluator.get("type", "shapes") == "shapes":
        raise ItercompError(
            "the shapes evaluator (the world's oracle) scores only shapes-world prompts; for prompts from files set "
            "evaluator.type to t2i_compbench or rewards"
        )
    if config.reward == "oracle":
        raise ItercompError(
            "reward: oracle is the shapes world's oracle and cannot score prompts from files; use reward: learned"
        )
    if config.reward_init is None and config.rewards.get("backbone", "shapes") == "shapes":
        raise ItercompError(
            "the shapes reward backbone reads only the shapes world's words; for prompts from files set "
            "rewards.backbone (blip, clip or siglip) and rewards.backbone_path"
        )
    if config.reward_init == SHIPPED:
        raise ItercompError(
            "reward_init: shipped are the shapes world's reward models; for prompts from files set reward_init: null "
            "(train new ones from rewards.backbone_path) or a folder of <aspect>/ reward models"
        )


def prompt_pools(config: IterateConfig) -> PromptPools:
    """The run's ranking, fine-tuning and test prompts, checked against the rounds they must serve."""
    per_split = {"train": config.prompts_per_aspect, "val": config.val_prompts_per_aspect}
    if config.prompts.source == "shapes":
        pools = shapes_pools(
            config.seed, config.rounds, per_split, config.finetune_prompts_per_aspect, config.eval_prompts_per_aspect
        )
    else:
        pools = file_pools(config.prompts, config.seed, config.eval_prompts_per_aspect)
    pools.check(config.rounds, per_split)
    return pools


def open_run(config: IterateConfig, resume: bool, log) -> RunLayout:
    """Refuse to write into another run unless resuming it with the same settings; save the resolved config."""
    layout = RunLayout(Path(config.output_dir))
    root = layout.root
    if root.exists() and any(root.iterdir()):
        if not resume:
            raise ItercompError(
                f"{root} already holds a run; pass --resume to continue it (finished stages are kept), "
                "or choose another --output-dir"
            )
        if not layout.config.is_file():
            raise ItercompError(
                f"{root} is not empty and has no config.yaml, so it is no itercomp run; use another --output-dir"
            )
        saved = yaml.safe_load(layout.config.read_text()) or {}
        changed = changed_fields(config, saved)
        if changed:
            now = to_dict(config)
            diffs = "; ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in changed)
            raise ItercompError(
                f"--resume with other settings than the run in {root} ({diffs}); only {', '.join(RESUMABLE)} may "
                "change when resuming. Drop those flags, or start a new run with another --output-dir"
            )
    elif resume:
        log(f"--resume: no run in {root} yet, starting one")
    root.mkdir(parents=True, exist_ok=True)
    write_text(layout.config, yaml.safe_dump(to_dict(config), sort_keys=False))
    return layout


def json_safe(value):
    """Metrics as plain JSON: tensors and numpy numbers become floats, anything else unknown a string."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "tolist"):  # tensors, numpy arrays and numpy scalars
        return json_safe(value.tolist())
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)

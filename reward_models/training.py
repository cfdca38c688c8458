"""Training one reward model per aspect on rankings (Bradley-Terry over every ordered pair), with accelerate.

The same function runs single-process (`itercomp rewards train`) and multi-process
(`accelerate launch recipes/train_reward_models.py`): accelerate shards the rankings between processes and
all-reduces the gradients, so every process ends with the same weights.

Loss normalisation: a batch's loss is the mean over its pairs. With `gradient_accumulation_steps` A, accelerate
divides each batch's loss by A, so an optimiser step takes the mean of its A batch means (and of the processes'),
each batch weighted alike whatever its number of pairs; that equals one batch of A times the rankings when the
batches hold equally many pairs. An epoch's last step may gather fewer than A batches and is still divided by A.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from itercomp.accelerators import fill_deepspeed_config, start_trackers, stop_trackers, tracker_kwargs
from itercomp.config import read_yaml
from itercomp.errors import ItercompError
from itercomp.io import read_json, weights_digest, write_json
from itercomp.rankings import RankingFile, ranking_pairs
from itercomp.schedules import cosine_factor
from reward_models.checkpoint import (
    checkpoint_dir,
    load_training_state,
    load_weights,
    random_states,
    read_progress,
    remove_checkpoint,
    save_checkpoint,
    set_random_states,
)
from reward_models.config import RESUMABLE, RewardTrainConfig, save_config, to_dict
from reward_models.data import ImageCache, RankingDataset, collate, pair_correct, pair_loss
from reward_models.model import RewardModel


def random_view(images: torch.Tensor, prompts: list[str], rng) -> tuple[torch.Tensor, list[str]]:
    """One random exact symmetry of the shapes world for a whole batch (every candidate of a ranking moves with
    its prompt, so each pair keeps its label): flips with the relation words swapped, and half the time a palette
    permutation with the colour words renamed."""
    from itercomp.errors import PromptError
    from itercomp.world.augment import apply_view

    permutation = tuple(int(i) for i in rng.permutation(8)) if rng.random() < 0.5 else None
    spec = (bool(rng.random() < 0.5), bool(rng.random() < 0.5), permutation)
    try:
        return apply_view(images, list(prompts), spec)
    except PromptError as e:
        raise ItercompError(f"train_views=shapes_symmetries needs shapes-world prompts: {e}") from None


def build_model(config: RewardTrainConfig, aspect: str) -> RewardModel:
    if config.init_from:
        folder = Path(config.init_from) / aspect
        if not (folder / "config.json").is_file():
            raise ItercompError(f"init_from: no reward model at {folder}; expected <init_from>/<aspect>/config.json")
        model = RewardModel.from_pretrained(folder)
    elif config.init_from_imagereward:
        from reward_models.imagereward import from_imagereward

        try:
            model = from_imagereward(config.init_from_imagereward, config.backbone_path, aspect)
        except ValueError as e:
            raise ItercompError(f"init_from_imagereward: {e}") from None
    elif config.backbone == "shapes":
        shape = {k: getattr(config, k) for k in ("width", "image_layers", "fusion_layers", "heads", "dropout")}
        model = RewardModel.for_shapes_world(aspect, **shape)
    else:
        model = RewardModel.from_backbone(
            config.backbone, config.backbone_path, aspect, image_size=config.image_size,
            fusion_layers=config.fusion_layers, dropout=config.dropout,
        )  # fmt: skip
    try:
        return model.resized(config.image_size) if config.image_size else model
    except ValueError as e:
        raise ItercompError(f"image_size: {e}") from None


@torch.no_grad()
def pair_metrics(model, loader, accelerator) -> dict:
    """Mean pair loss and pairwise accuracy over a (sharded) loader, reduced over processes."""
    model.eval()
    unwrapped = accelerator.unwrap_model(model)
    totals = torch.zeros(3, device=accelerator.device)
    for batch in loader:
        rewards = model(batch["images"], **unwrapped.tokenize(batch["prompts"]))
        per_ranking = _per_ranking(rewards, batch)
        totals += accelerator.gather_for_metrics(per_ranking).sum(0)
    model.train()
    loss_sum, correct, pairs = totals.tolist()
    return {"loss": loss_sum / max(pairs, 1), "accuracy": correct / max(pairs, 1), "pairs": int(pairs)}


def _per_ranking(rewards: torch.Tensor, batch: dict) -> torch.Tensor:
    """R x 3 rows (loss sum, correct pairs, pairs) per ranking, so gather_for_metrics can drop padded repeats."""
    rows = []
    offsets = batch["offsets"].tolist()
    for r in range(len(offsets) - 1):
        keep = (batch["better"] >= offsets[r]) & (batch["better"] < offsets[r + 1])
        b, w = batch["better"][keep], batch["worse"][keep]
        if len(b) == 0:
            rows.append(torch.zeros(3, device=rewards.device))
            continue
        loss = pair_loss(rewards, b, w) * len(b)
        rows.append(
            torch.stack([loss, pair_correct(rewards, b, w).sum(), torch.tensor(float(len(b)), device=rewards.device)])
        )
    return torch.stack(rows)


def collate_with_offsets(items: list[dict]) -> dict:
    batch = collate(items)
    sizes = [item["images"].shape[0] for item in items]
    batch["offsets"] = torch.tensor([0, *torch.tensor(sizes).cumsum(0).tolist()])
    return batch


@torch.no_grad()
def reward_stats(model: RewardModel, dataset: RankingDataset, batch_rankings: int) -> tuple[float, float]:
    """Mean and std of raw rewards over every training candidate (stored in the config for normalisation)."""
    model.eval()
    values = []
    loader = DataLoader(dataset, batch_size=batch_rankings, collate_fn=collate)
    for batch in loader:
        values.append(model(batch["images"].to(model.device), **model.tokenize(batch["prompts"])).float().cpu())
    values = torch.cat(values)
    return values.mean().item(), values.std().item() if len(values) > 1 else 1.0


def check_resumable(config: RewardTrainConfig, path: Path) -> None:
    """A resumed run computes what the interrupted one did: only the RESUMABLE settings may differ."""
    if not path.is_file():
        return
    # A setting the earlier run's file lacks (it predates the setting) had the setting's default.
    before = {**to_dict(RewardTrainConfig(rankings="", output_dir="")), **read_yaml(path)}
    now = to_dict(config)
    changed = sorted(k for k in now if k not in RESUMABLE and before.get(k) != now[k])
    if changed:
        detail = ", ".join(f"{k}: {before.get(k)!r} -> {now[k]!r}" for k in changed)
        raise ItercompError(
            f"resume: {path} was trained with other settings ({detail}); use them, or a new --output-dir"
        )


def train(config: RewardTrainConfig, on_step: Callable[[str, int], None] | None = None) -> dict:
    """Train every configured aspect; returns {aspect: summary} (also written to <output_dir>/<aspect>/).
    `on_step(aspect, step)` is called after every optimiser step (and its checkpoint, if one is due)."""
    from itercomp.accelerators import stage_accelerator

    if config.threads:
        torch.set_num_threads(config.threads)
    accelerator = stage_accelerator(
        cpu=config.cpu,
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        **tracker_kwargs(config.report_to, config.output_dir),
    )
    start_trackers(accelerator, "reward_models", config)
    out = Path(config.output_dir)
    if config.resume:
        check_resumable(config, out / "train_config.yaml")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_config(config, out / "train_config.yaml")
    data = RankingFile.read(config.rankings)
    results = {}
    for aspect in config.aspects:
        results[aspect] = train_aspect(config, aspect, data, accelerator, on_step)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(out / "train_summary.json", {"config": to_dict(config), "aspects": results})
    stop_trackers(accelerator)
    return results


def resumed_batches(accelerator, loader, done: int, epoch_states: dict, states: dict, view_rng, sampler_rng):
    """The rest of an epoch that a checkpoint cut: its order drawn again from the random states the epoch started
    with, its first `done` batches skipped, then the random states of the moment the checkpoint was written (the
    sampler's own generator excepted: replaying the epoch's order leaves it where the epoch left it)."""
    set_random_states(epoch_states, view_rng, sampler_rng)
    rest = iter(accelerator.skip_first_batches(loader, done))
    first = next(rest, None)  # the sampler draws the epoch's order here
    set_random_states(states, view_rng, sampler_rng)
    if first is not None:
        yield first
        yield from rest


@dataclass
class AspectRun:
    """One aspect's training: its prepared model, optimiser, schedule and loaders, and the state a checkpoint
    saves (step, epoch, best validation, history, patience, seconds, pairs trained, and for the epoch a checkpoint
    cut, the random states and running loss it had reached)."""

    config: RewardTrainConfig
    aspect: str
    accelerator: object
    folder: Path
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    params: list[torch.Tensor]
    train_set: RankingDataset
    val_set: RankingDataset
    train_loader: DataLoader
    val_loader: DataLoader
    total_steps: int
    view_rng: np.random.Generator
    sampler_rng: object = None
    step: int = 0
    first_epoch: int = 0
    seconds: float = 0.0
    best: dict = field(default_factory=lambda: {"loss": float("inf"), "epoch": -1})
    history: list[dict] = field(default_factory=list)
    stale: int = 0
    pairs_done: int = 0
    seen: list[int] = field(default_factory=list)  # the rankings of the current epoch's shard on this process
    epoch_loss: float = 0.0  # the mean train loss of the last epoch trained
    cut: dict | None = None  # the checkpoint's position and per-process state, until the cut epoch resumes


def train_aspect(
    config: RewardTrainConfig,
    aspect: str,
    data: RankingFile,
    accelerator,
    on_step: Callable[[str, int], None] | None = None,
) -> dict:
    """Train one aspect's reward model: an epoch of optimiser steps, then validation (the best model is saved),
    until `epochs`, `max_minutes` or `patience` stops it; resumes from the aspect's checkpoint with `resume`."""
    folder = Path(config.output_dir) / aspect
    resume_from = checkpoint_dir(folder) if config.resume else None
    if config.resume and resume_from is None and (folder / "train_state.json").is_file():
        accelerator.print(f"[{aspect}] finished in an earlier run ({folder / 'train_state.json'}): kept")
        return read_json(folder / "train_state.json")
    run = prepare_aspect(config, aspect, data, accelerator, folder, resume_from)
    started = time.perf_counter() - run.seconds
    bar = tqdm(total=run.total_steps, initial=run.step, desc=aspect, unit="step",
               disable=not accelerator.is_local_main_process)  # fmt: skip
    for epoch in range(run.first_epoch, config.epochs):
        train_epoch(run, epoch, bar, started, on_step)
        validate(run, epoch)
        if stop_after(run, epoch, minutes=(time.perf_counter() - started) / 60):
            break
    bar.close()
    return finish_aspect(run, time.perf_counter() - started)


def prepare_aspect(
    config: RewardTrainConfig, aspect: str, data: RankingFile, accelerator, folder: Path, resume_from: Path | None
) -> AspectRun:
    """The aspect's rankings, model (frozen share, resumed weights), loaders, optimiser and cosine schedule,
    prepared by the accelerator, and the training state of `resume_from` when given."""
    from accelerate.utils import set_seed

    set_seed(config.seed)
    train_rankings = data.select(aspect, "train")[: config.max_train_rankings]
    val_rankings = data.select(aspect, "val")
    if not train_rankings or not val_rankings:
        raise ItercompError(
            f"{config.rankings}: {aspect} has {len(train_rankings)} train and {len(val_rankings)} val rankings; "
            "training needs both (splits are by prompt: see itercomp.prompts.split_for)"
        )
    model = build_model(config, aspect)
    frozen = model.freeze_backbone(config.freeze_ratio) if config.freeze_ratio else 0
    if resume_from is not None:
        load_weights(resume_from, model)
    size = model.config.image_size
    cache = ImageCache(config.image_cache_mb)  # train and val share the bound
    train_set = RankingDataset(train_rankings, data.root, size, cache)
    val_set = RankingDataset(val_rankings, data.root, size, cache)
    train_loader = DataLoader(
        train_set, batch_size=config.batch_rankings, shuffle=True, collate_fn=collate_with_offsets, drop_last=False
    )
    val_loader = DataLoader(val_set, batch_size=config.batch_rankings, collate_fn=collate_with_offsets)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    fill_deepspeed_config(  # the micro-batch comes from the train loader
        accelerator, gradient_accumulation_steps=config.gradient_accumulation_steps,
        gradient_clipping=config.max_grad_norm or 0.0,
    )  # fmt: skip
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    accumulation = config.gradient_accumulation_steps
    steps_per_epoch = math.ceil(len(train_loader) / accumulation)  # the schedule counts optimiser steps
    total_steps = steps_per_epoch * config.epochs
    warmup = max(1, int(config.warmup_ratio * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_factor(s, total_steps, warmup))

    train_pairs = sum(len(ranking_pairs(r)) for r in train_rankings)
    world = accelerator.num_processes
    per_step = world * config.batch_rankings * accumulation
    unwrapped = accelerator.unwrap_model(model)
    accelerator.print(
        f"[{aspect}] {len(train_rankings)} train rankings ({train_pairs} pairs), {len(val_rankings)} val rankings | "
        f"{world} process(es) x {config.batch_rankings} rankings x {accumulation} accumulated = {per_step} rankings "
        f"per step (~{round(per_step * train_pairs / len(train_rankings))} pairs) | "
        f"{steps_per_epoch} steps/epoch x {config.epochs} epochs = {total_steps} steps | "
        f"{sum(p.numel() for p in params):,} trainable of {sum(p.numel() for p in model.parameters()):,} "
        f"parameters ({frozen} tensors frozen) | backbone {unwrapped.config.backbone} at {size} px | "
        f"image cache {config.image_cache_mb:g} MiB"
    )
    run = AspectRun(
        config, aspect, accelerator, folder, model, optimizer, scheduler, params, train_set, val_set,
        train_loader, val_loader, total_steps, view_rng=np.random.default_rng(config.seed + accelerator.process_index),
        sampler_rng=getattr(train_loader, "synchronized_generator", None),
    )  # fmt: skip
    if resume_from is not None:
        progress = read_progress(resume_from, world)
        process = load_training_state(resume_from, accelerator, optimizer, scheduler)
        run.best, run.history, run.stale = progress["best"], progress["history"], progress["stale"]
        run.step, run.first_epoch, run.seconds = progress["step"], progress["epoch"], progress["seconds"]
        run.pairs_done = process["pairs_done"]
        run.cut = {"position": progress["position"], **process}
        accelerator.print(
            f"[{aspect}] resuming from {resume_from}: epoch {run.first_epoch}, batch {progress['position']}, "
            f"step {run.step} of {total_steps}"
        )
    return run


def train_epoch(run: AspectRun, epoch: int, bar, started: float, on_step) -> None:
    """One pass over the train loader (the rest of it, for the epoch a checkpoint cut): Bradley-Terry loss,
    accumulated optimiser steps, checkpoints every `checkpoint_every` steps; the epoch's mean train loss goes to
    `run.epoch_loss`."""
    config, accelerator, model = run.config, run.accelerator, run.model
    if run.cut is not None:  # the epoch the checkpoint cut
        cut, run.cut = run.cut, None
        position, epoch_states = cut["position"], cut["epoch_states"]
        running, batches, run.seen = cut["running"], cut["batches"], cut["seen"]
        batches_left = resumed_batches(
            accelerator, run.train_loader, position, epoch_states, cut["states"], run.view_rng, run.sampler_rng
        )
    else:
        running, batches, run.seen, position = 0.0, 0, [], 0
        epoch_states = random_states(run.view_rng, run.sampler_rng) if config.checkpoint_every else None
        batches_left = run.train_loader
    unwrapped = accelerator.unwrap_model(model)
    for batch in batches_left:
        run.seen += batch["index"].tolist()
        if config.train_views:
            batch["images"], batch["prompts"] = random_view(batch["images"], batch["prompts"], run.view_rng)
        with accelerator.accumulate(model):
            rewards = model(batch["images"], **unwrapped.tokenize(batch["prompts"]))
            loss = pair_loss(rewards, batch["better"], batch["worse"])
            accelerator.backward(loss)
            if accelerator.sync_gradients and config.max_grad_norm:
                accelerator.clip_grad_norm_(run.params, config.max_grad_norm)
            run.optimizer.step()  # accelerate's optimiser steps (and zeroes) on a window's last batch only
            if accelerator.sync_gradients:
                run.scheduler.step()
            run.optimizer.zero_grad(set_to_none=True)
        position += 1
        run.pairs_done += len(batch["better"])
        running, batches = running + loss.item(), batches + 1
        if not accelerator.sync_gradients:
            continue
        run.step += 1
        accelerator.log(
            {f"{run.aspect}/train_loss": loss.item(), f"{run.aspect}/lr": run.scheduler.get_last_lr()[0]},
            step=run.step,
        )
        bar.update(1)
        bar.set_postfix(loss=f"{running / batches:.3f}", best_val=f"{run.best['loss']:.3f}")
        if config.checkpoint_every and run.step % config.checkpoint_every == 0:
            save_checkpoint(
                run.folder, accelerator, model, run.optimizer, run.scheduler,
                progress={"step": run.step, "epoch": epoch, "position": position, "best": run.best,
                          "history": run.history, "stale": run.stale, "seconds": time.perf_counter() - started},
                process={"epoch_states": epoch_states, "states": random_states(run.view_rng), "running": running,
                         "batches": batches, "seen": run.seen, "pairs_done": run.pairs_done},
            )  # fmt: skip
        if on_step is not None:
            on_step(run.aspect, run.step)
    run.epoch_loss = running / max(batches, 1)


def validate(run: AspectRun, epoch: int) -> None:
    """The epoch's validation pair loss and accuracy into the history; a better loss saves the model."""
    accelerator = run.accelerator
    val = pair_metrics(run.model, run.val_loader, accelerator)
    accelerator.log(
        {f"{run.aspect}/val_loss": val["loss"], f"{run.aspect}/val_accuracy": val["accuracy"],
         f"{run.aspect}/epoch": epoch},
        step=run.step,
    )  # fmt: skip
    run.history.append(
        {"epoch": epoch, "train_loss": run.epoch_loss, "val_loss": val["loss"], "val_accuracy": val["accuracy"]}
    )
    if val["loss"] < run.best["loss"]:
        run.best, run.stale = {"loss": val["loss"], "accuracy": val["accuracy"], "epoch": epoch}, 0
        if accelerator.is_main_process:
            accelerator.unwrap_model(run.model).save_pretrained(run.folder)
    else:
        run.stale += 1
    accelerator.wait_for_everyone()


def stop_after(run: AspectRun, epoch: int, minutes: float) -> bool:
    """Whether the time budget (`max_minutes`) or `patience` ends training after this epoch."""
    config, say = run.config, run.accelerator.print
    if config.max_minutes is not None and minutes >= config.max_minutes and epoch + 1 < config.epochs:
        say(f"[{run.aspect}] time budget of {config.max_minutes} min reached after epoch {epoch}")
        return True
    if config.patience is not None and run.stale >= config.patience:
        say(f"[{run.aspect}] no better val loss for {run.stale} epochs: stopping after epoch {epoch}")
        return True
    return False


def finish_aspect(run: AspectRun, seconds: float) -> dict:
    """The summary (with each process's rankings and final weights' digest, the evidence of the multi-process
    contract); the best model gets its reward statistics and `train_state.json`, and the checkpoint goes."""
    from accelerate.utils import gather_object

    accelerator, config, best = run.accelerator, run.config, run.best
    all_pairs = sum(gather_object([run.pairs_done]))
    processes = gather_object(
        [
            {
                "rank": accelerator.process_index,
                "rankings_seen": sorted(set(run.seen)),
                "weights": weights_digest(accelerator.unwrap_model(run.model).state_dict()),
            }
        ]
    )
    train_rankings = run.train_set.rankings
    summary = {
        "aspect": run.aspect,
        "world_size": accelerator.num_processes,
        "train_rankings": len(train_rankings),
        "train_pairs": sum(len(ranking_pairs(r)) for r in train_rankings),
        "val_rankings": len(run.val_set),
        "best_epoch": best["epoch"],
        "best_val_loss": best["loss"],
        "best_val_accuracy": best.get("accuracy"),
        "epochs_run": len(run.history),
        "seconds": round(seconds, 2),
        "pairs_per_second": round(all_pairs / seconds, 1),
        "history": run.history,
        "processes": [
            {**p, "rankings_seen": len(p["rankings_seen"]), "last_epoch_ids": p["rankings_seen"]} for p in processes
        ],
    }
    if accelerator.is_main_process:
        best_model = RewardModel.from_pretrained(run.folder).to(accelerator.device)
        mean, std = reward_stats(best_model, run.train_set, config.batch_rankings)
        best_model.set_reward_stats(mean, std)
        best_model.save_pretrained(run.folder)
        summary.update(reward_mean=mean, reward_std=std)
        write_json(run.folder / "train_state.json", summary)
        remove_checkpoint(run.folder)  # the aspect is done: its folder is the reward model and its record
        accelerator.print(
            f"[{run.aspect}] best epoch {best['epoch']}: val loss {best['loss']:.4f}, val pair accuracy "
            f"{best.get('accuracy', 0):.3f}; {summary['pairs_per_second']} pairs/s; saved {run.folder}"
        )
    accelerator.wait_for_everyone()
    accelerator.free_memory()
    return summary

"""Training one reward model per aspect on rankings (Bradley-Terry over every ordered pair), with accelerate.

The same function runs single-process (`itercomp rewards train`) and multi-process
(`accelerate launch recipes/train_reward_models.py`): accelerate shards the rankings between processes and
all-reduces the gradients, so every process ends with the same weights.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from itercomp.errors import ItercompError
from itercomp.io import weights_digest, write_json
from itercomp.rankings import RankingFile, ranking_pairs
from itercomp.schedules import cosine_factor
from reward_models.config import RewardTrainConfig, save_config, to_dict
from reward_models.data import RankingDataset, collate, pair_correct, pair_loss
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
        return RewardModel.from_pretrained(folder)
    if config.backbone == "shapes":
        shape = {k: getattr(config, k) for k in ("width", "image_layers", "fusion_layers", "heads", "dropout")}
        return RewardModel.for_shapes_world(aspect, **shape)
    return RewardModel.from_backbone(
        config.backbone, config.backbone_path, aspect, fusion_layers=config.fusion_layers, dropout=config.dropout
    )


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


def train(config: RewardTrainConfig) -> dict:
    """Train every configured aspect; returns {aspect: summary} (also written to <output_dir>/<aspect>/)."""
    from accelerate import Accelerator

    if config.threads:
        torch.set_num_threads(config.threads)
    accelerator = Accelerator(cpu=config.cpu, mixed_precision=config.mixed_precision)
    out = Path(config.output_dir)
    if accelerator.is_main_process:
        save_config(config, out / "train_config.yaml")
    data = RankingFile.read(config.rankings)
    results = {}
    for aspect in config.aspects:
        results[aspect] = train_aspect(config, aspect, data, accelerator)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(out / "train_summary.json", {"config": to_dict(config), "aspects": results})
    return results


def train_aspect(config: RewardTrainConfig, aspect: str, data: RankingFile, accelerator) -> dict:
    from accelerate.utils import gather_object, set_seed

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
    size = model.config.image_size
    train_set, val_set = RankingDataset(train_rankings, data.root, size), RankingDataset(val_rankings, data.root, size)
    train_loader = DataLoader(
        train_set, batch_size=config.batch_rankings, shuffle=True, collate_fn=collate_with_offsets, drop_last=False
    )
    val_loader = DataLoader(val_set, batch_size=config.batch_rankings, collate_fn=collate_with_offsets)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    steps_per_epoch = len(train_loader)
    total_steps = steps_per_epoch * config.epochs
    warmup = max(1, int(config.warmup_ratio * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_factor(s, total_steps, warmup))

    train_pairs = sum(len(ranking_pairs(r)) for r in train_rankings)
    world = accelerator.num_processes
    n_params = sum(p.numel() for p in model.parameters())
    accelerator.print(
        f"[{aspect}] {len(train_rankings)} train rankings ({train_pairs} pairs), {len(val_rankings)} val rankings | "
        f"{world} process(es) x {config.batch_rankings} rankings = {world * config.batch_rankings} rankings per step "
        f"(~{round(world * config.batch_rankings * train_pairs / len(train_rankings))} pairs) | "
        f"{steps_per_epoch} steps/epoch x {config.epochs} epochs = {total_steps} steps | "
        f"{sum(p.numel() for p in params):,} trainable of {n_params:,} parameters ({frozen} tensors frozen) | "
        f"backbone {model.module.config.backbone if hasattr(model, 'module') else model.config.backbone}"
    )

    folder = Path(config.output_dir) / aspect
    view_rng = np.random.default_rng(config.seed + accelerator.process_index)
    best = {"loss": float("inf"), "epoch": -1}
    history, seen, pairs_done, stale = [], [], 0, 0
    started = time.perf_counter()
    bar = tqdm(total=total_steps, desc=aspect, unit="step", disable=not accelerator.is_local_main_process)
    for epoch in range(config.epochs):
        running, batches, seen = 0.0, 0, []  # `seen`: this epoch's shard of rankings on this process
        for batch in train_loader:
            seen += batch["index"].tolist()
            unwrapped = accelerator.unwrap_model(model)
            if config.train_views:
                batch["images"], batch["prompts"] = random_view(batch["images"], batch["prompts"], view_rng)
            rewards = model(batch["images"], **unwrapped.tokenize(batch["prompts"]))
            loss = pair_loss(rewards, batch["better"], batch["worse"])
            accelerator.backward(loss)
            if config.max_grad_norm:
                accelerator.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            pairs_done += len(batch["better"])
            running, batches = running + loss.item(), batches + 1
            bar.update(1)
            bar.set_postfix(loss=f"{running / batches:.3f}", best_val=f"{best['loss']:.3f}")
        val = pair_metrics(model, val_loader, accelerator)
        history.append(
            {
                "epoch": epoch,
                "train_loss": running / max(batches, 1),
                "val_loss": val["loss"],
                "val_accuracy": val["accuracy"],
            }
        )
        if val["loss"] < best["loss"]:
            best = {"loss": val["loss"], "accuracy": val["accuracy"], "epoch": epoch}
            stale = 0
            if accelerator.is_main_process:
                accelerator.unwrap_model(model).save_pretrained(folder)
        else:
            stale += 1
        accelerator.wait_for_everyone()
        minutes = (time.perf_counter() - started) / 60
        if config.max_minutes is not None and minutes >= config.max_minutes and epoch + 1 < config.epochs:
            accelerator.print(f"[{aspect}] time budget of {config.max_minutes} min reached after epoch {epoch}")
            break
        if config.patience is not None and stale >= config.patience:
            accelerator.print(f"[{aspect}] no better val loss for {stale} epochs: stopping after epoch {epoch}")
            break
    bar.close()
    seconds = time.perf_counter() - started
    all_pairs = sum(gather_object([pairs_done]))
    # Evidence for the multi-process contract: who saw which rankings, and that the weights agree.
    processes = gather_object(
        [
            {
                "rank": accelerator.process_index,
                "rankings_seen": sorted(set(seen)),
                "weights": weights_digest(accelerator.unwrap_model(model).state_dict()),
            }
        ]
    )
    summary = {
        "aspect": aspect,
        "world_size": world,
        "train_rankings": len(train_rankings),
        "train_pairs": train_pairs,
        "val_rankings": len(val_rankings),
        "best_epoch": best["epoch"],
        "best_val_loss": best["loss"],
        "best_val_accuracy": best.get("accuracy"),
        "epochs_run": len(history),
        "seconds": round(seconds, 2),
        "pairs_per_second": round(all_pairs / seconds, 1),
        "history": history,
        "processes": [
            {**p, "rankings_seen": len(p["rankings_seen"]), "last_epoch_ids": p["rankings_seen"]} for p in processes
        ],
    }
    if accelerator.is_main_process:
        best_model = RewardModel.from_pretrained(folder).to(accelerator.device)
        mean, std = reward_stats(best_model, train_set, config.batch_rankings)
        best_model.set_reward_stats(mean, std)
        best_model.save_pretrained(folder)
        summary.update(reward_mean=mean, reward_std=std)
        write_json(folder / "train_state.json", summary)
        accelerator.print(
            f"[{aspect}] best epoch {best['epoch']}: val loss {best['loss']:.4f}, val pair accuracy "
            f"{best.get('accuracy', 0):.3f}; {summary['pairs_per_second']} pairs/s; saved {folder}"
        )
    accelerator.wait_for_everyone()
    accelerator.free_memory()
    return summary

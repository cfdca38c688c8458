"""Reward-feedback fine-tuning: sample without gradient, run a late window of steps with gradient, predict x0,
decode, score with the reward models, and step on sum_a w_a * relu(hinge - r_a) * scale (+ an optional
denoising-loss regulariser). The modes that never differentiate the reward replace the window: select (the
denoising loss on each prompt's best sample), dpo (Diffusion-DPO on best vs worst samples and ranked pairs) and
grpo (Flow-GRPO on SDE chains). One loop; the same function runs in one process or under `accelerate launch`.

    metrics = finetune(pipe, reward_fn, prompts, FeedbackConfig(...))

`reward_fn(images B x 3 x H x W in [0, 1], prompts) -> {aspect: Tensor[B]}` must be differentiable in the images
for refl / draft / alignprop (a `reward_models.RewardEnsemble` is); select, dpo and grpo take any black box (the
oracle: `itercomp.finetune.oracle_reward.OracleReward`). On return the pipeline's denoiser holds the final weights -- the EMA
average when ema_decay > 0, LoRA merged -- and output_dir holds pipeline/, lora/ (LoRA runs), metrics.json and
feedback_config.yaml. A killed run resumes from output_dir/checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from itercomp.errors import ItercompError
from itercomp.finetune.adapters import Conditioning, FeedbackAdapter, make_adapter
from itercomp.finetune.config import BLACK_BOX_MODES, FeedbackConfig
from itercomp.finetune.ema import ParameterEMA
from itercomp.finetune.lora import add_lora, merge_lora, save_lora
from itercomp.finetune.loss import (
    best_and_worst,
    best_of,
    clipped_policy_loss,
    dpo_loss,
    feedback_loss,
    gaussian_kl,
    gaussian_log_prob,
    gradient_steps,
    group_advantages,
    refl_step_bounds,
    sde_step,
    weighted_reward,
)
from itercomp.finetune.preferences import PreferencePairs
from itercomp.finetune.regulariser import PairSource, regulariser_from_config
from itercomp.io import write_json

RewardFn = Callable[[torch.Tensor, list[str]], dict[str, torch.Tensor]]


def denoise(adapter: FeedbackAdapter, latents, cond: Conditioning, steps, guidance_scale: float, score_last: bool):
    """Run the sampling steps `steps` from `latents`; with `score_last`, return the x0 prediction at the last of
    them (the image that is decoded and scored) instead of stepping past it."""
    steps = list(steps)
    for i in steps:
        output = adapter.predict(latents, i, cond, guidance_scale)
        if score_last and i == steps[-1]:
            return adapter.x0(latents, output, i)
        latents = adapter.step(output, i, latents)
    return latents


def check_rewards(rewards, batch: int, weights: dict[str, float]) -> dict[str, torch.Tensor]:
    """The reward function's contract: {aspect: tensor[B]}, every aspect weighted, every weighted aspect scored."""
    if not isinstance(rewards, dict) or not rewards:
        raise ItercompError(
            f"the reward function returned {type(rewards).__name__}; it must return {{aspect: tensor[B]}}"
        )
    unweighted = sorted(set(rewards) - set(weights))
    missing = sorted(a for a, w in weights.items() if w and a not in rewards)
    if unweighted or missing:
        raise ItercompError(
            f"the reward function scores {sorted(rewards)} but reward_weights is {weights}: "
            + (f"give {unweighted} a weight (0 to ignore them)" if unweighted else f"drop {missing} or score them")
        )
    for aspect, r in rewards.items():
        if not isinstance(r, torch.Tensor) or r.shape != (batch,):
            shape = tuple(r.shape) if isinstance(r, torch.Tensor) else type(r).__name__
            raise ItercompError(f"reward {aspect!r} has shape {shape}; expected one reward per image, ({batch},)")
    return rewards


def weights_digest(params: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(params):
        h.update(name.encode())
        h.update(params[name].detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _finite_or_none(value: float):
    return value if math.isfinite(value) else None


def _replace_dir(final: Path, write: Callable[[Path], None]) -> None:
    """Write a folder atomically: into <final>.tmp, then swap it in (a crash leaves the old one or <final>.old)."""
    tmp, old = final.with_name(final.name + ".tmp"), final.with_name(final.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


@torch.no_grad()
def sample_and_score(adapter, reward_fn, prompts: list[str], generators, config: FeedbackConfig, accelerator):
    """One image per (prompt, generator) with the full sampling chain and no gradient, and its rewards."""
    cond = adapter.encode(prompts, guidance=config.guidance_scale != 1)
    latents = adapter.initial_latents(generators)
    adapter.set_timesteps(config.num_inference_steps)
    steps = range(config.num_inference_steps)
    with accelerator.autocast():
        images = adapter.decode(denoise(adapter, latents, cond, steps, config.guidance_scale, score_last=True))
        images = images.float()
        rewards = check_rewards(reward_fn(images, prompts), len(prompts), config.reward_weights)
    return images, rewards


@torch.no_grad()
def evaluate(adapter, reward_fn, items, config: FeedbackConfig, accelerator) -> dict[str, float]:
    """Mean reward per aspect over the fixed evaluation batch (prompt, seed), full sampling chain, no gradient.
    Each process scores a share of the batch; the means cover all of it."""
    from accelerate.utils import gather_object

    if not items:
        return {}
    model, adapter.model = adapter.model, adapter.denoiser  # the unwrapped model: no collective calls inside
    adapter.denoiser.eval()
    mine = items[accelerator.process_index :: accelerator.num_processes]
    scores = []
    for k in range(0, len(mine), config.batch_size):
        chunk = mine[k : k + config.batch_size]
        prompts = [p for p, _ in chunk]
        generators = [torch.Generator().manual_seed(s) for _, s in chunk]
        _, rewards = sample_and_score(adapter, reward_fn, prompts, generators, config, accelerator)
        scores += [{a: float(r[j]) for a, r in rewards.items()} for j in range(len(prompts))]
    adapter.model = model
    everything = gather_object(scores) if accelerator.num_processes > 1 else scores
    return {a: float(np.mean([s[a] for s in everything])) for a in everything[0]}


@torch.no_grad()
def sample_and_pick(adapter, reward_fn, prompts: list[str], generators, config: FeedbackConfig, accelerator):
    """select mode: sample `len(generators) // len(prompts)` candidates per prompt (generators prompt-major) with
    the full chain and no gradient, score them, and return the best candidate of each prompt (images in [0, 1])
    with every candidate's rewards."""
    candidates = len(generators) // len(prompts)
    repeated = [p for p in prompts for _ in range(candidates)]
    images, rewards = sample_and_score(adapter, reward_fn, repeated, generators, config, accelerator)
    best = best_of(weighted_reward(rewards, config.reward_weights), candidates)
    return images[best].clamp(0, 1), rewards


@torch.no_grad()
def sample_pairs(adapter, reward_fn, prompts: list[str], generators, config: FeedbackConfig, accelerator):
    """dpo: sample candidates per prompt as select mode does and return (preferred images, other images, their
    prompts, every candidate's rewards): each prompt's best and worst candidate by weighted reward. Prompts whose
    candidates all tie are dropped; if every prompt ties, one pair of identical images stands in (its loss has no
    gradient, and every process still runs the same calls)."""
    candidates = len(generators) // len(prompts)
    repeated = [p for p in prompts for _ in range(candidates)]
    images, rewards = sample_and_score(adapter, reward_fn, repeated, generators, config, accelerator)
    winners, losers = best_and_worst(weighted_reward(rewards, config.reward_weights), candidates)
    if winners.numel() == 0:
        winners = losers = torch.zeros(1, dtype=torch.long, device=images.device)
    images = images.clamp(0, 1)
    return images[winners], images[losers], [repeated[int(i)] for i in winners], rewards


def dpo_batch(adapter, reward_fn, prompts, generators, preferences, rng, config: FeedbackConfig, accelerator):
    """dpo: the micro-batch's pairs -- the current model's own best vs worst (online_pairs) followed by
    batch_size pairs drawn from the ranked preference pairs -- and the rewards of the own samples ({} if none)."""
    preferred, other, pair_prompts, rewards = [], [], [], {}
    if config.online_pairs:
        good, bad, pair_prompts, rewards = sample_pairs(adapter, reward_fn, prompts, generators, config, accelerator)
        preferred, other = [good], [bad]
    if preferences is not None:
        good, bad, ranked_prompts = preferences.sample(config.batch_size, rng)
        size = (adapter.resolution, adapter.resolution)
        if good.shape[-2:] != size:
            good, bad = (F.interpolate(x, size=size, mode="bilinear", antialias=True).clamp(0, 1) for x in (good, bad))
        preferred.append(good.to(adapter.device))
        other.append(bad.to(adapter.device))
        pair_prompts = pair_prompts + ranked_prompts
    return torch.cat(preferred), torch.cat(other), pair_prompts, rewards


@dataclass
class Trajectories:
    """grpo: a batch of SDE sampling chains. states[i] is the latent before step i (T states for T steps: the
    last step runs the ODE to the image), log_probs[i] the log-probability of the transition states[i] ->
    states[i + 1] under the sampling weights."""

    cond: Conditioning
    states: list[torch.Tensor]
    log_probs: list[torch.Tensor]
    images: torch.Tensor
    rewards: dict[str, torch.Tensor]


def sde_transition(adapter, latents, i: int, cond, config: FeedbackConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of the stochastic step i of the (guided) model: Flow-GRPO's SDE around its Euler step."""
    output = adapter.predict(latents, i, cond, config.guidance_scale)
    x0 = adapter.x0(latents, output, i)
    sigma_max = adapter.sigma(1)
    return sde_step(latents, x0, adapter.sigma(i), adapter.sigma(i + 1), config.sde_noise_level, sigma_max)


@torch.no_grad()
def sample_trajectories(adapter, reward_fn, prompts: list[str], generators, config: FeedbackConfig, accelerator):
    """grpo: one SDE chain per (prompt, generator), every step but the last stochastic, scored at the end."""
    steps = config.num_inference_steps
    cond = adapter.encode(prompts, guidance=config.guidance_scale != 1)
    latents = adapter.initial_latents(generators)
    adapter.set_timesteps(steps)
    states, log_probs = [latents], []
    with accelerator.autocast():
        for i in range(steps - 1):
            mean, std = sde_transition(adapter, latents, i, cond, config)
            latents = mean + std * adapter._noise(latents.shape, generators)
            log_probs.append(gaussian_log_prob(latents.float(), mean.float(), std.float()))
            states.append(latents)
        images = adapter.decode(denoise(adapter, latents, cond, [steps - 1], config.guidance_scale, True)).float()
        rewards = check_rewards(reward_fn(images, prompts), len(prompts), config.reward_weights)
    return Trajectories(cond, states, log_probs, images, rewards)


def grpo_loss(adapter, reference, chains: Trajectories, advantages, train_steps: list[int], config: FeedbackConfig):
    """The clipped policy loss (+ kl_beta x the KL to the reference model) averaged over the trained steps."""
    total = 0.0
    for i in train_steps:
        mean, std = sde_transition(adapter, chains.states[i], i, chains.cond, config)
        log_prob = gaussian_log_prob(chains.states[i + 1].float(), mean.float(), std.float())
        loss = clipped_policy_loss(log_prob, chains.log_probs[i], advantages, config.grpo_clip)
        if config.kl_beta > 0:
            with torch.no_grad(), use_model(adapter, reference):
                reference_mean, _ = sde_transition(adapter, chains.states[i], i, chains.cond, config)
            loss = loss + config.kl_beta * gaussian_kl(mean.float(), reference_mean.float(), std.float())
        total = total + loss / len(train_steps)
    return total


@contextlib.contextmanager
def use_model(adapter, module):
    """Call `module` instead of the trained denoiser inside the block (the reference model of DPO and GRPO)."""
    model, adapter.model = adapter.model, module
    try:
        yield
    finally:
        adapter.model = model


def denoising_errors(adapter, images, prompts, seed: int) -> torch.Tensor:
    """Per-image denoising errors at times and noise drawn from `seed` (equal seeds noise images alike)."""
    return adapter.pretrain_loss(images, prompts, torch.Generator().manual_seed(seed), per_image=True)


def _eval_items(prompts: list[str], config: FeedbackConfig) -> list[tuple[str, int]]:
    """A fixed subset of the prompts (by the seed) and fixed noise seeds, so before/after compare like for like."""
    n = min(config.eval_prompts, len(prompts))
    order = np.random.default_rng([config.seed, 7919]).permutation(len(prompts))[:n]
    return [(prompts[i], config.eval_seed + k) for k, i in enumerate(order)]


def finetune(
    pipe,
    reward_fn: RewardFn,
    prompts: list[str],
    config: FeedbackConfig,
    accelerator=None,
    regulariser_data: PairSource | None = None,
    preferences: PreferencePairs | None = None,
) -> dict:
    """Fine-tune `pipe`'s denoiser (or LoRA adapters on it) in place with reward feedback; returns the metrics
    also written to output_dir/metrics.json."""
    from accelerate import Accelerator
    from accelerate.utils import gather_object

    from itercomp.config import save_config, to_dict

    prompts = [p for p in prompts if isinstance(p, str) and p.strip()]
    if not prompts:
        raise ItercompError("finetune() needs at least one non-empty prompt")
    if config.threads:
        torch.set_num_threads(config.threads)
    accelerator = accelerator or Accelerator(cpu=config.cpu, mixed_precision=config.mixed_precision)
    out = Path(config.output_dir)
    rank, world = accelerator.process_index, accelerator.num_processes
    torch.manual_seed(config.seed)  # LoRA's initialisation; the same on every process

    pipe.to(accelerator.device)
    adapter = make_adapter(pipe, config.resolution, config.max_sequence_length)
    for module in adapter.frozen_modules().values():
        module.requires_grad_(False).eval()  # eval: text-encoder dropout would make the conditioning random
    if isinstance(reward_fn, torch.nn.Module):
        reward_fn.requires_grad_(False).eval().to(accelerator.device)
    if not getattr(reward_fn, "differentiable", True) and config.grad_mode not in BLACK_BOX_MODES:
        raise ItercompError(
            f"{type(reward_fn).__name__} has no gradient, and grad_mode={config.grad_mode} differentiates the "
            f"reward; use grad_mode {', '.join(BLACK_BOX_MODES)}"
        )
    denoiser = adapter.denoiser
    # DPO's and GRPO's reference: the starting weights, frozen (a copy taken before LoRA adapters are added)
    needs_reference = config.grad_mode == "dpo" or (config.grad_mode == "grpo" and config.kl_beta > 0)
    reference = copy.deepcopy(denoiser).requires_grad_(False).eval() if needs_reference else None
    lora_config = None
    if config.use_lora:
        targets = config.lora_target_modules or adapter.default_lora_targets
        lora_config = add_lora(denoiser, config.lora_rank, config.lora_alpha, targets)
    else:
        denoiser.requires_grad_(True)
    if config.gradient_checkpointing:
        denoiser.enable_gradient_checkpointing()
    trainable = {name: p for name, p in denoiser.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(
        trainable.values(),
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_epsilon,
        weight_decay=config.weight_decay,
    )
    ema = ParameterEMA(trainable, config.ema_decay) if config.ema_decay > 0 else None
    if regulariser_data is None and config.pretrain_loss_weight > 0:
        regulariser_data = regulariser_from_config(
            config.regulariser_data, config.regulariser_samples, config.seed, adapter.resolution
        )
    use_regulariser = config.pretrain_loss_weight > 0 and regulariser_data is not None
    if preferences is None and config.grad_mode == "dpo" and config.preference_pairs:
        preferences = PreferencePairs.from_rankings(config.preference_pairs)
    if accelerator.is_main_process:
        save_config(config, out / "feedback_config.yaml")

    # A checkpoint holds the step, the skipped count, the history and the "before" evaluation.
    checkpoint = out / "checkpoint"
    if config.resume and not checkpoint.is_dir() and checkpoint.with_name("checkpoint.old").is_dir():
        checkpoint = checkpoint.with_name("checkpoint.old")  # killed between the two renames of a save
    state = {"step": 0, "skipped_steps": 0, "history": [], "before": None}
    resuming = config.resume and (checkpoint / "state.json").is_file()
    if resuming:
        state = json.loads((checkpoint / "state.json").read_text())

    eval_items = _eval_items(prompts, config)
    if state["before"] is None:
        state["before"] = evaluate(adapter, reward_fn, eval_items, config, accelerator)

    model, optimizer = accelerator.prepare(denoiser, optimizer)
    adapter.model = model
    if resuming:
        _load_checkpoint(checkpoint, trainable, ema, optimizer, accelerator.device)

    weights = config.reward_weights
    grad_guidance = config.effective_grad_guidance
    guided = config.guidance_scale != 1 or grad_guidance != 1
    micro_batches = config.gradient_accumulation_steps
    regulariser_batch = config.pretrain_batch_size or config.batch_size
    n_trainable = sum(p.numel() for p in trainable.values())
    n_total = sum(p.numel() for p in denoiser.parameters())
    if config.grad_mode == "refl":
        first, last = refl_step_bounds(config.num_inference_steps, config.grad_step_range)
        window = f"refl: one gradient step in {first}..{last} of {config.num_inference_steps}"
    elif config.grad_mode == "draft":
        window = f"draft: the last {config.draft_k} of {config.num_inference_steps} steps"
    elif config.grad_mode == "alignprop":
        window = f"alignprop: the last 1..{config.alignprop_max_k or config.num_inference_steps} steps"
    elif config.grad_mode == "select":
        window = f"select: the best of {config.samples_per_prompt} samples per prompt, denoising loss on it"
    elif config.grad_mode == "dpo":
        sources = (
            [f"best vs worst of {config.samples_per_prompt} own samples per prompt"] if config.online_pairs else []
        )
        if preferences is not None:
            sources.append(f"{config.batch_size} of {len(preferences)} ranked pairs")
        window = f"dpo: {' + '.join(sources)} per micro-batch, beta {config.dpo_beta}"
    else:
        trained = config.grpo_train_steps or config.num_inference_steps - 1
        window = (
            f"grpo: groups of {config.samples_per_prompt}, {trained} of {config.num_inference_steps - 1} SDE steps "
            f"trained, noise level {config.sde_noise_level}, KL x {config.kl_beta}"
        )
    accelerator.print(
        f"reward fine-tuning {type(pipe).__name__} ({type(denoiser).__name__}) | {len(prompts)} prompts | "
        f"{world} process(es) x {config.batch_size} prompts x {micro_batches} accumulation = "
        f"{world * config.batch_size * micro_batches} prompts per step"
        + (f" x {config.samples_per_prompt} samples" if config.grad_mode in BLACK_BOX_MODES else "")
        + f" | steps {state['step']}->{config.max_steps} | "
        f"{window} | {adapter.resolution}px | "
        f"{'LoRA r=' + str(config.lora_rank) + ', ' if config.use_lora else ''}{n_trainable:,} trainable of "
        f"{n_total:,} parameters | reward weights {weights}, hinge {config.reward_hinge}, "
        f"scale {config.reward_loss_scale}"
        + (
            f" | pretraining loss x {config.pretrain_loss_weight} on {len(regulariser_data)} pairs"
            if use_regulariser
            else ""
        )
    )

    def regularised(feedback: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(feedback + pretrain_loss_weight * the denoising loss on regulariser pairs, that denoising loss)."""
        if not use_regulariser:
            return feedback, torch.zeros((), device=accelerator.device)
        pairs, pair_prompts = regulariser_data.sample(regulariser_batch, rng)
        if pairs.shape[-1] != adapter.resolution or pairs.shape[-2] != adapter.resolution:
            size = (adapter.resolution, adapter.resolution)
            pairs = F.interpolate(pairs, size=size, mode="bilinear", antialias=True).clamp(0, 1)
        generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
        pretrain_loss = adapter.pretrain_loss(pairs, pair_prompts, generator)
        return feedback + config.pretrain_loss_weight * pretrain_loss, pretrain_loss

    started = time.perf_counter()
    micro_batches_run = 0
    bar = tqdm(
        range(state["step"], config.max_steps),
        desc="reward fine-tuning",
        unit="step",
        initial=state["step"],
        total=config.max_steps,
        disable=not accelerator.is_local_main_process,
    )
    for step in bar:
        denoiser.train()
        totals = torch.zeros(3, device=accelerator.device)  # loss, reward loss, pretraining loss
        reward_sums: dict[str, float] = {}
        windows = []
        for micro in range(micro_batches):
            # prompts and noise differ per process; the window is shared so every process runs the same steps
            rng = np.random.default_rng([config.seed, step, micro, rank])
            idx = rng.choice(len(prompts), size=config.batch_size, replace=len(prompts) < config.batch_size)
            batch_prompts = [prompts[i] for i in idx]
            if config.grad_mode in BLACK_BOX_MODES:
                #### SAMPLING: samples_per_prompt images per prompt, scored ####
                seeds = rng.integers(2**31, size=len(idx) * config.samples_per_prompt)
                generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
                grad_window = []
                if config.grad_mode == "select":
                    picks, rewards = sample_and_pick(adapter, reward_fn, batch_prompts, generators, config, accelerator)
                elif config.grad_mode == "dpo":
                    preferred, other, pair_prompts, rewards = dpo_batch(
                        adapter, reward_fn, batch_prompts, generators, preferences, rng, config, accelerator
                    )
                else:
                    group = [p for p in batch_prompts for _ in range(config.samples_per_prompt)]
                    chains = sample_trajectories(adapter, reward_fn, group, generators, config, accelerator)
                    rewards = chains.rewards
                    advantages = group_advantages(weighted_reward(rewards, weights), config.samples_per_prompt)
                    stochastic = config.num_inference_steps - 1
                    grad_window = sorted(
                        np.random.default_rng([config.seed, step, micro, 1])
                        .permutation(stochastic)[: config.grpo_train_steps or stochastic]
                        .tolist()
                    )
            else:
                #### SAMPLING: up to the window, without gradient ####
                generators = [torch.Generator().manual_seed(int(s)) for s in rng.integers(2**31, size=len(idx))]
                grad_window = gradient_steps(
                    config.grad_mode,
                    config.num_inference_steps,
                    np.random.default_rng([config.seed, step, micro]),
                    config.grad_step_range,
                    config.draft_k,
                    config.alignprop_max_k,
                )
                cond = adapter.encode(batch_prompts, guidance=guided)
                latents = adapter.initial_latents(generators)
                adapter.set_timesteps(config.num_inference_steps)
                with torch.no_grad():
                    latents = denoise(adapter, latents, cond, range(grad_window[0]), config.guidance_scale, False)
            windows.append(grad_window)

            #### TRAINING ####
            last = micro == micro_batches - 1
            with accelerator.no_sync(model) if not last else contextlib.nullcontext(), accelerator.autocast():
                if config.grad_mode == "select":
                    # the feedback term of select mode: the denoising loss on the reward models' picks
                    generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
                    reward_loss = adapter.pretrain_loss(picks, batch_prompts, generator)
                elif config.grad_mode == "dpo":
                    seed = int(rng.integers(2**31))  # the same times and noise for both images of a pair
                    errors = [denoising_errors(adapter, x, pair_prompts, seed) for x in (preferred, other)]
                    with torch.no_grad(), use_model(adapter, reference):
                        references = [denoising_errors(adapter, x, pair_prompts, seed) for x in (preferred, other)]
                    reward_loss = dpo_loss(*errors, *references, config.dpo_beta)
                elif config.grad_mode == "grpo":
                    reward_loss = grpo_loss(adapter, reference, chains, advantages, grad_window, config)
                else:
                    x0 = denoise(adapter, latents, cond, grad_window, grad_guidance, score_last=True)
                    images = adapter.decode(x0).float()
                    rewards = check_rewards(reward_fn(images, batch_prompts), len(batch_prompts), weights)
                    reward_loss = feedback_loss(rewards, weights, config.reward_hinge, config.reward_loss_scale)
                loss, pretrain_loss = regularised(reward_loss, rng)
                accelerator.backward(loss / micro_batches)
            totals += torch.stack([loss.detach(), reward_loss.detach(), pretrain_loss.detach()]).float() / micro_batches
            for aspect, r in rewards.items():
                reward_sums[aspect] = reward_sums.get(aspect, 0.0) + r.detach().float().mean().item() / micro_batches
            micro_batches_run += 1

        # Non-finite gradients (a NaN reward, an overflow) would poison the weights and Adam's moments: skip the
        # step and count it, as Playground v3 does. After the all-reduce every process sees the same norm.
        grad_norm = accelerator.clip_grad_norm_(trainable.values(), config.max_grad_norm or float("inf"))
        grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
        skipped = not math.isfinite(grad_norm)
        if skipped:
            state["skipped_steps"] += 1
            if accelerator.scaler is not None:
                optimizer.step()  # fp16: the grad scaler sees the inf, skips the update and lowers its scale
        else:
            optimizer.step()
            if ema is not None:
                ema.update(trainable, step)
        optimizer.zero_grad(set_to_none=True)

        aspects = sorted(reward_sums)
        stats = torch.cat([totals, torch.tensor([reward_sums[a] for a in aspects], device=accelerator.device)])
        stats = accelerator.reduce(stats, reduction="mean") if world > 1 else stats
        entry = {
            "step": step + 1,
            "loss": _finite_or_none(stats[0].item()),
            "reward_loss": _finite_or_none(stats[1].item()),
            "pretrain_loss": _finite_or_none(stats[2].item()) if use_regulariser else None,
            "rewards": {a: _finite_or_none(stats[3 + k].item()) for k, a in enumerate(aspects)},
            "grad_norm": _finite_or_none(grad_norm),
            "grad_steps": windows[0] if len(windows) == 1 else windows,
            "skipped": skipped,
        }
        state["history"].append(entry)
        state["step"] = step + 1
        bar.set_postfix(loss=f"{stats[0].item():.4g}", skipped=state["skipped_steps"])
        done = step + 1
        if (config.checkpoint_every and done % config.checkpoint_every == 0) or done == config.max_steps:
            _save_checkpoint(out / "checkpoint", trainable, ema, optimizer, state, accelerator)
    bar.close()

    #### FINAL WEIGHTS ####
    accelerator.wait_for_everyone()
    if ema is not None:
        ema.copy_to(trainable)
    digest = weights_digest(trainable)
    if config.use_lora:
        if accelerator.is_main_process:
            _replace_dir(out / "lora", lambda tmp: save_lora(pipe, adapter.denoiser_name, lora_config, tmp))
        merge_lora(denoiser)
    adapter.model = denoiser
    after = evaluate(adapter, reward_fn, eval_items, config, accelerator)
    processes = gather_object([{"rank": rank, "micro_batches": micro_batches_run, "weights": digest}])
    metrics = {
        "world_size": world,
        "steps": state["step"],
        "skipped_steps": state["skipped_steps"],
        "images_per_step": world * config.batch_size * micro_batches,
        "seconds_this_run": round(time.perf_counter() - started, 2),
        "history": state["history"],
        "eval": {
            "prompts": [p for p, _ in eval_items],
            "seeds": [s for _, s in eval_items],
            "before": state["before"],
            "after": after,
        },
        "processes": processes,
        "pipeline": str(out / "pipeline"),
        "lora": str(out / "lora") if config.use_lora else None,
        "config": to_dict(config),
    }
    if accelerator.is_main_process:
        _replace_dir(out / "pipeline", pipe.save_pretrained)
        write_json(out / "metrics.json", metrics)
        if after:
            change = ", ".join(f"{a} {state['before'][a]:+.3f} -> {after[a]:+.3f}" for a in after)
            accelerator.print(f"mean reward on {len(eval_items)} evaluation images: {change}")
        accelerator.print(f"saved {out / 'pipeline'} ({state['skipped_steps']} of {state['step']} steps skipped)")
    accelerator.wait_for_everyone()
    return metrics


def _save_checkpoint(folder: Path, trainable, ema, optimizer, state: dict, accelerator) -> None:
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        save_file({n: p.detach().cpu().contiguous() for n, p in trainable.items()}, tmp / "trainable.safetensors")
        if ema is not None:
            save_file(ema.state_dict(), tmp / "ema.safetensors")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps(state))

    if accelerator.is_main_process:
        _replace_dir(folder, write)
    accelerator.wait_for_everyone()


def _load_checkpoint(folder: Path, trainable, ema, optimizer, device) -> None:
    from safetensors.torch import load_file

    saved = load_file(folder / "trainable.safetensors")
    if set(saved) != set(trainable):
        raise ItercompError(
            f"{folder} was written for other trainable parameters (use_lora or lora settings changed?); "
            "delete it or choose another output_dir"
        )
    with torch.no_grad():
        for name, p in trainable.items():
            p.copy_(saved[name])
    if ema is not None:
        if not (folder / "ema.safetensors").is_file():
            raise ItercompError(f"{folder} has no EMA weights (written with ema_decay=0); delete it or set ema_decay=0")
        ema.load_state_dict(load_file(folder / "ema.safetensors"))
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location=device, weights_only=True))

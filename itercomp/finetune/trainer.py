"""Reward-feedback fine-tuning: one loop for every mode. Each optimizer step draws its micro-batches' prompts,
lets the mode sample them (#### SAMPLING ####) and compute its feedback loss (#### TRAINING ####), adds the
optional denoising-loss regulariser, and steps with gradient clipping, skipped non-finite steps, EMA,
checkpoints and metrics. What a mode does is in its class (`itercomp.finetune.modes`): the window modes refl /
draft / alignprop back-propagate the reward through late sampling steps; select, dpo, grpo and awm never
differentiate it. The same function runs in one process or under `accelerate launch`.

    metrics = finetune(pipe, reward_fn, prompts, FeedbackConfig(...))

`reward_fn(images B x 3 x H x W in [0, 1], prompts) -> {aspect: Tensor[B]}` is built by the caller (the CLI loads
the reward models or the oracle); it must be differentiable in the images for refl / draft / alignprop, while
select, dpo, grpo and awm take any black box (`reward_fn.differentiable = False` says so). On return the pipeline's
denoiser holds the final weights -- the EMA average when ema_decay > 0, LoRA merged -- and output_dir holds
pipeline/, lora/ (LoRA runs), metrics.json and feedback_config.yaml. A killed run resumes from
output_dir/checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from itercomp.accelerators import (
    fill_deepspeed_config,
    log_images,
    start_trackers,
    stop_trackers,
    tracker_kwargs,
    uses_deepspeed,
)
from itercomp.errors import ItercompError
from itercomp.finetune.adapters import FeedbackAdapter, make_adapter
from itercomp.finetune.config import FeedbackConfig
from itercomp.finetune.ema import ParameterEMA
from itercomp.finetune.lora import add_lora, merge_lora, save_lora
from itercomp.finetune.modes import black_box_modes, mode_class, mode_spec
from itercomp.finetune.modes.base import FeedbackMode
from itercomp.finetune.regulariser import PairSource, regulariser_from_config
from itercomp.finetune.sampling import evaluate
from itercomp.io import atomic_dir, weights_digest, write_json
from itercomp.schedules import cosine_factor

RewardFn = Callable[[torch.Tensor, list[str]], dict[str, torch.Tensor]]
# The dtype of the frozen modules under each mixed_precision setting (diffusers' training scripts' weight_dtype).
WEIGHT_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class Training:
    """Everything one run holds: the pipeline and its adapter, the mode, the trained weights and their
    optimizer and EMA, the regulariser, and the checkpointed state (step, skipped steps, history, the
    "before" evaluation)."""

    config: FeedbackConfig
    accelerator: object
    pipe: object
    adapter: FeedbackAdapter
    mode: FeedbackMode
    reward_fn: RewardFn
    prompts: list[str]
    trainable: dict[str, torch.Tensor]
    optimizer: torch.optim.Optimizer
    ema: ParameterEMA | None
    regulariser: Regulariser
    lora_config: object = None
    eval_items: list[tuple[str, int]] = field(default_factory=list)
    state: dict = field(
        default_factory=lambda: {"step": 0, "skipped_steps": 0, "history": [], "before": None, "train_seconds": 0.0}
    )
    micro_batches_run: int = 0

    @property
    def out(self) -> Path:
        return Path(self.config.output_dir)


class Regulariser:
    """pretrain_loss_weight x the denoising loss on (image, prompt) pairs, added to the feedback loss."""

    def __init__(self, data: PairSource | None, config: FeedbackConfig, adapter: FeedbackAdapter):
        self.data, self.adapter, self.weight = data, adapter, config.pretrain_loss_weight
        self.batch = config.pretrain_batch_size or config.batch_size
        self.active = self.weight > 0 and data is not None

    def __call__(self, feedback: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(feedback + weight * the denoising loss on regulariser pairs, that denoising loss)."""
        if not self.active:
            return feedback, torch.zeros((), device=feedback.device)
        pairs, prompts = self.data.sample(self.batch, rng)
        size = (self.adapter.resolution, self.adapter.resolution)
        if pairs.shape[-2:] != size:
            pairs = F.interpolate(pairs, size=size, mode="bilinear", antialias=True).clamp(0, 1)
        generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
        pretrain_loss = self.adapter.pretrain_loss(pairs, prompts, generator)
        return feedback + self.weight * pretrain_loss, pretrain_loss


def finetune(
    pipe,
    reward_fn: RewardFn,
    prompts: list[str],
    config: FeedbackConfig,
    accelerator=None,
    regulariser_data: PairSource | None = None,
) -> dict:
    """Fine-tune `pipe`'s denoiser (or LoRA adapters on it) in place with reward feedback; returns the metrics
    also written to output_dir/metrics.json."""
    from itercomp.accelerators import stage_accelerator

    prompts = [p for p in prompts if isinstance(p, str) and p.strip()]
    if not prompts:
        raise ItercompError("finetune() needs at least one non-empty prompt")
    if config.threads:
        torch.set_num_threads(config.threads)
    accelerator = accelerator or stage_accelerator(
        cpu=config.cpu, mixed_precision=config.mixed_precision, **tracker_kwargs(config.report_to, config.output_dir)
    )
    start_trackers(accelerator, "reward_ft", config)
    run = prepare(pipe, reward_fn, prompts, config, accelerator, regulariser_data)
    print_banner(run)
    started = time.perf_counter()
    bar = tqdm(
        range(run.state["step"], config.max_steps),
        desc="reward fine-tuning",
        unit="step",
        initial=run.state["step"],
        total=config.max_steps,
        disable=not accelerator.is_local_main_process,
    )
    for step in bar:
        if time_is_up(accelerator, run.state, config.max_minutes):  # a resumed run that had spent them already
            break
        step_started = time.perf_counter()
        entry = train_step(run, step)
        run.state["train_seconds"] = run.state.get("train_seconds", 0.0) + time.perf_counter() - step_started
        accelerator.log(tracked(entry), step=step + 1)
        run.state["history"].append(entry)
        run.state["step"] = step + 1
        loss = entry["loss"] if entry["loss"] is not None else math.nan
        bar.set_postfix(loss=f"{loss:.4g}", skipped=run.state["skipped_steps"])
        done = step + 1
        out_of_time = time_is_up(accelerator, run.state, config.max_minutes)
        if (config.checkpoint_every and done % config.checkpoint_every == 0) or done == config.max_steps or out_of_time:
            _save_checkpoint(run.out / "checkpoint", run)
        if out_of_time:
            accelerator.print(f"max_minutes={config.max_minutes} reached after step {done}")
            break
    bar.close()
    return finish(run, started)


def prepare(pipe, reward_fn, prompts, config: FeedbackConfig, accelerator, regulariser_data) -> Training:
    """The adapter, the mode, the trainable weights with their optimizer and EMA, the regulariser and the state,
    resumed from output_dir/checkpoint when there is one; the "before" evaluation when it is not saved yet."""
    from itercomp.config import save_config

    torch.manual_seed(config.seed)  # LoRA's initialisation; the same on every process
    adapter = make_adapter(pipe, config.resolution, config.max_sequence_length)
    for module in adapter.frozen_modules().values():
        module.requires_grad_(False).eval()  # eval: text-encoder dropout would make the conditioning random
    adapter.use_text_cache(config.text_cache_mb)
    cast_frozen_modules(adapter, config, accelerator)  # before moving: a half-precision copy is all the device holds
    pipe.to(accelerator.device)
    if isinstance(reward_fn, torch.nn.Module):
        reward_fn.requires_grad_(False).eval().to(accelerator.device)
    if not getattr(reward_fn, "differentiable", True) and mode_spec(config.grad_mode).differentiates_reward:
        raise ItercompError(
            f"{type(reward_fn).__name__} has no gradient, and grad_mode={config.grad_mode} differentiates the "
            f"reward; use grad_mode {', '.join(black_box_modes())}"
        )
    # before LoRA adapters are added: a mode may copy the starting weights (DPO's and GRPO's reference)
    mode = mode_class(config.grad_mode)(config, adapter, reward_fn, accelerator)
    trainable, lora_config = trainable_weights(adapter, config)
    optimizer = torch.optim.AdamW(
        trainable.values(),
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_epsilon,
        weight_decay=config.weight_decay,
    )
    ema = ParameterEMA(trainable, config.ema_decay) if config.ema_decay > 0 else None
    mode.ema = ema  # awm's nft trains around it (DiffusionNFT's old policy)
    if regulariser_data is None and config.pretrain_loss_weight > 0:
        regulariser_data = regulariser_from_config(
            config.regulariser_data, config.regulariser_samples, config.seed, adapter.resolution
        )
    run = Training(
        config, accelerator, pipe, adapter, mode, reward_fn, prompts, trainable, optimizer, ema,
        Regulariser(regulariser_data, config, adapter), lora_config, eval_items(prompts, config),
    )  # fmt: skip
    if accelerator.is_main_process:
        save_config(config, run.out / "feedback_config.yaml")
    checkpoint = resume_from(run)
    if run.state["before"] is None:
        samples = []
        run.state["before"] = evaluate(adapter, reward_fn, run.eval_items, config, accelerator, samples)
        log_images(accelerator, "samples/before", samples, step=0)
    fill_deepspeed_config(  # DeepSpeed cannot infer them: no dataloader is prepared
        accelerator, train_micro_batch_size_per_gpu=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps, gradient_clipping=config.max_grad_norm or 0.0,
    )  # fmt: skip
    model, run.optimizer = accelerator.prepare(adapter.denoiser, optimizer)
    adapter.model = model
    if checkpoint is not None:
        _load_checkpoint(checkpoint, run)
    return run


def trainable_weights(adapter: FeedbackAdapter, config: FeedbackConfig) -> tuple[dict[str, torch.Tensor], object]:
    """The weights the optimizer updates -- LoRA adapters (added here) or every denoiser weight -- and the LoRA
    config (None without LoRA)."""
    denoiser, lora_config = adapter.denoiser, None
    if config.use_lora:
        targets = config.lora_target_modules or adapter.default_lora_targets
        lora_config = add_lora(denoiser, config.lora_rank, config.lora_alpha, targets)
    else:
        denoiser.requires_grad_(True)
    if config.gradient_checkpointing:
        denoiser.enable_gradient_checkpointing()
    trainable = {name: p for name, p in denoiser.named_parameters() if p.requires_grad}
    for p in trainable.values():  # float32 master weights: a 1e-5 step is below half precision's resolution
        p.data = p.data.float()
    return trainable, lora_config


def time_is_up(accelerator, state: dict, max_minutes: float | None) -> bool:
    """Whether the run has spent its minutes of training (its steps, across resumes; not the evaluations); every
    process takes the slowest one's clock, so all stop together."""
    if max_minutes is None:
        return False
    elapsed = torch.tensor([state.get("train_seconds", 0.0)], device=accelerator.device)
    if accelerator.num_processes > 1:
        elapsed = accelerator.reduce(elapsed, reduction="max")
    return elapsed.item() >= max_minutes * 60


def tracked(entry: dict) -> dict[str, float]:
    """A history entry's numbers as tracker scalars: loss, reward_loss, pretrain_loss, grad_norm, learning_rate,
    reward/<aspect>."""
    keys = ("loss", "reward_loss", "pretrain_loss", "grad_norm", "learning_rate")
    values = {k: entry[k] for k in keys if entry.get(k) is not None}
    values.update({f"reward/{a}": v for a, v in entry["rewards"].items() if v is not None})
    return values


def cast_frozen_modules(adapter: FeedbackAdapter, config: FeedbackConfig, accelerator) -> None:
    """Precision as diffusers' training scripts set it: the frozen modules (text encoders, VAE, and the denoiser's
    own weights under LoRA) in the mixed-precision dtype, the trained weights in float32 (`trainable_weights`),
    the compute under autocast. A half-precision denoiser without mixed precision is refused: its forward pass
    would mix float32 master weights with half-precision inputs outside autocast."""
    dtype = adapter.dtype
    if dtype in (torch.float16, torch.bfloat16) and config.mixed_precision == "no":
        name = {torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
        raise ItercompError(
            f"the pipeline's {adapter.denoiser_name} is {str(dtype).removeprefix('torch.')}; fine-tuning keeps float32 "
            f"master weights and runs the half-precision modules under autocast: set mixed_precision={name} "
            "(in the loop: --finetune mixed_precision=" + name + "), or load the model in float32"
        )
    if config.mixed_precision == "fp16" and not accelerator.native_amp:
        raise ItercompError(
            f"mixed_precision=fp16 has no autocast on {accelerator.device.type} (accelerate autocasts fp16 on GPUs "
            "only); set mixed_precision=bf16, which also casts float16 modules to bfloat16"
        )
    weight_dtype = WEIGHT_DTYPES[config.mixed_precision]
    if weight_dtype is torch.float32:
        return
    for module in adapter.frozen_modules().values():
        module.to(weight_dtype)
    if config.use_lora:
        adapter.denoiser.to(weight_dtype)


def resume_from(run: Training) -> Path | None:
    """Load the checkpointed state into `run.state` and return the checkpoint folder, or None to start afresh."""
    if not run.config.resume:
        return None
    checkpoint = run.out / "checkpoint"
    if not checkpoint.is_dir() and checkpoint.with_name("checkpoint.old").is_dir():
        checkpoint = checkpoint.with_name("checkpoint.old")  # killed between the two renames of a save
    if not (checkpoint / "state.json").is_file():
        return None
    run.state = json.loads((checkpoint / "state.json").read_text())
    return checkpoint


def eval_items(prompts: list[str], config: FeedbackConfig) -> list[tuple[str, int]]:
    """A fixed subset of the prompts (by the seed) and fixed noise seeds, so before/after compare like for like."""
    n = min(config.eval_prompts, len(prompts))
    order = np.random.default_rng([config.seed, 7919]).permutation(len(prompts))[:n]
    return [(prompts[i], config.eval_seed + k) for k, i in enumerate(order)]


def print_banner(run: Training) -> None:
    """The effective sizes of the run: prompts and images per step, steps, the mode, the trained weights."""
    config, accelerator, mode = run.config, run.accelerator, run.mode
    world, micro_batches = accelerator.num_processes, config.gradient_accumulation_steps
    n_trainable = sum(p.numel() for p in run.trainable.values())
    n_total = sum(p.numel() for p in run.adapter.denoiser.parameters())
    lora = f"LoRA r={config.lora_rank}, " if config.use_lora else ""
    regulariser = run.regulariser
    accelerator.print(
        f"reward fine-tuning {type(run.pipe).__name__} ({type(run.adapter.denoiser).__name__}) | "
        f"{len(run.prompts)} prompts | {world} process(es) x {config.batch_size} prompts x {micro_batches} "
        f"accumulation = {world * config.batch_size * micro_batches} prompts per step"
        + (f" x {mode.samples_per_prompt} samples" if mode.samples_per_prompt > 1 else "")
        + f" | steps {run.state['step']}->{config.max_steps} | lr {describe_schedule(config)} | {mode.describe()} | "
        f"{run.adapter.resolution}px | "
        f"{lora}{n_trainable:,} trainable of {n_total:,} parameters | reward weights {config.reward_weights}"
        + (f" | pretraining loss x {regulariser.weight} on {len(regulariser.data)} pairs" if regulariser.active else "")
    )


def train_step(run: Training, step: int) -> dict:
    """One optimizer step over gradient_accumulation_steps micro-batches; returns its history entry."""
    config, accelerator = run.config, run.accelerator
    micro_batches = config.gradient_accumulation_steps
    run.adapter.denoiser.train()
    totals = torch.zeros(3, device=accelerator.device)  # loss, reward loss, pretraining loss
    reward_sums: dict[str, float] = {}
    windows = []
    for micro in range(micro_batches):
        # prompts and noise differ per process; the window is shared so every process runs the same steps
        rng = np.random.default_rng([config.seed, step, micro, accelerator.process_index])
        idx = rng.choice(len(run.prompts), size=config.batch_size, replace=len(run.prompts) < config.batch_size)
        #### SAMPLING ####
        batch = run.mode.sample([run.prompts[i] for i in idx], rng, step, micro)
        windows.append(batch.grad_steps)
        #### TRAINING ####
        last = micro == micro_batches - 1
        with accelerator.no_sync(run.adapter.model) if not last else contextlib.nullcontext(), accelerator.autocast():
            reward_loss, rewards = run.mode.loss(batch, rng)
            loss, pretrain_loss = run.regulariser(reward_loss, rng)
            # DeepSpeed's engine divides by its accumulation steps itself
            accelerator.backward(loss if uses_deepspeed(accelerator) else loss / micro_batches)
        totals += torch.stack([loss.detach(), reward_loss.detach(), pretrain_loss.detach()]).float() / micro_batches
        for aspect, r in rewards.items():
            reward_sums[aspect] = reward_sums.get(aspect, 0.0) + r.detach().float().mean().item() / micro_batches
        run.micro_batches_run += 1
    lr = learning_rate_at(step, config)
    for group in run.optimizer.param_groups:  # a pure function of the step: a resumed run needs no scheduler state
        group["lr"] = lr
    grad_norm, skipped = optimizer_step(run, step, totals[0].item())
    aspects = sorted(reward_sums)
    stats = torch.cat([totals, torch.tensor([reward_sums[a] for a in aspects], device=accelerator.device)])
    stats = accelerator.reduce(stats, reduction="mean") if accelerator.num_processes > 1 else stats
    return {
        "step": step + 1,
        "loss": _finite_or_none(stats[0].item()),
        "reward_loss": _finite_or_none(stats[1].item()),
        "pretrain_loss": _finite_or_none(stats[2].item()) if run.regulariser.active else None,
        "rewards": {a: _finite_or_none(stats[3 + k].item()) for k, a in enumerate(aspects)},
        "grad_norm": _finite_or_none(grad_norm),
        "learning_rate": lr,
        "grad_steps": windows[0] if len(windows) == 1 else windows,
        "skipped": skipped,
    }


def learning_rate_at(step: int, config: FeedbackConfig) -> float:
    """The learning rate of optimizer step `step` (0-based): constant, or a cosine decay from learning_rate to
    min_lr_ratio x it over lr_decay_steps (default max_steps), held after."""
    if config.lr_schedule == "constant":
        return config.learning_rate
    return config.learning_rate * cosine_factor(step, config.decay_steps, floor=config.min_lr_ratio)


def describe_schedule(config: FeedbackConfig) -> str:
    if config.lr_schedule == "constant":
        return f"{config.learning_rate:g}"
    final = config.learning_rate * config.min_lr_ratio
    return f"{config.learning_rate:g} -> {final:g} (cosine, {config.decay_steps} steps)"


def optimizer_step(run: Training, step: int, loss: float) -> tuple[float, bool]:
    """Clip, step and update the EMA; returns (the gradient norm, whether the step was skipped).

    Non-finite gradients (a NaN reward, an overflow) would poison the weights and Adam's moments: skip the step
    and count it, as Playground v3 does. So is an all-zero gradient under a non-zero loss (the gradient
    underflowed). After the all-reduce every process sees the same norm. Weights that are not finite after a
    step stop the run before anything is saved."""
    accelerator, optimizer = run.accelerator, run.optimizer
    grad_norm = accelerator.clip_grad_norm_(run.trainable.values(), run.config.max_grad_norm or float("inf"))
    if grad_norm is None and uses_deepspeed(accelerator):  # the engine clipped and stepped in backward()
        grad_norm = run.adapter.model.get_global_grad_norm()
    grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
    skipped = not math.isfinite(grad_norm) or (grad_norm == 0.0 and loss != 0.0)
    if skipped:
        run.state["skipped_steps"] += 1
        if accelerator.scaler is not None:
            optimizer.step()  # fp16: the grad scaler sees the inf, skips the update and lowers its scale
    else:
        optimizer.step()
        check_finite_weights(run.trainable, step)
        if run.ema is not None:
            run.ema.update(run.trainable, step)
    optimizer.zero_grad(set_to_none=True)
    return grad_norm, skipped


def check_finite_weights(trainable: dict[str, torch.Tensor], step: int) -> None:
    """Refuse to go on (and so to save) once a trained weight is NaN or infinite."""
    bad = [name for name, p in trainable.items() if not torch.isfinite(p).all()]
    if bad:
        raise ItercompError(
            f"{len(bad)} trained tensor(s) became non-finite at step {step + 1} (first: {bad[0]}); nothing was saved. "
            "Lower learning_rate or max_grad_norm, or use bf16 instead of fp16 mixed precision"
        )


def finish(run: Training, started: float) -> dict:
    """The final weights (EMA copied in, LoRA saved and merged), the "after" evaluation, pipeline/ and
    metrics.json; returns the metrics."""
    from accelerate.utils import gather_object

    from itercomp.config import to_dict

    config, accelerator, adapter, state, out = run.config, run.accelerator, run.adapter, run.state, run.out
    accelerator.wait_for_everyone()
    if state["step"] and state["skipped_steps"] == state["step"]:
        raise ItercompError(
            f"all {state['step']} steps were skipped (non-finite or underflowed gradients), so the weights never "
            f"changed; nothing was saved. The history is in {out / 'checkpoint'}: check the rewards and the precision"
        )
    if run.ema is not None:
        run.ema.copy_to(run.trainable)
    digest = weights_digest(run.trainable)
    denoiser = adapter.denoiser
    if config.use_lora:
        if accelerator.is_main_process:
            with atomic_dir(out / "lora") as tmp:
                save_lora(run.pipe, adapter.denoiser_name, run.lora_config, tmp)
        merge_lora(denoiser)
    adapter.model = denoiser
    samples = []
    after = evaluate(adapter, run.reward_fn, run.eval_items, config, accelerator, samples)
    log_images(accelerator, "samples/after", samples, step=state["step"])
    accelerator.log({f"eval/{a}": v for a, v in (after or {}).items()}, step=state["step"])
    stop_trackers(accelerator)
    rank, world = accelerator.process_index, accelerator.num_processes
    processes = gather_object([{"rank": rank, "micro_batches": run.micro_batches_run, "weights": digest}])
    metrics = {
        "world_size": world,
        "steps": state["step"],
        "skipped_steps": state["skipped_steps"],
        "images_per_step": world * config.batch_size * config.gradient_accumulation_steps,
        "seconds_this_run": round(time.perf_counter() - started, 2),
        "train_seconds": round(state.get("train_seconds", 0.0), 2),  # the steps' time, across resumes
        "history": state["history"],
        "eval": {
            "prompts": [p for p, _ in run.eval_items],
            "seeds": [s for _, s in run.eval_items],
            "before": state["before"],
            "after": after,
        },
        "processes": processes,
        "pipeline": str(out / "pipeline"),
        "lora": str(out / "lora") if config.use_lora else None,
        "config": to_dict(config),
    }
    if accelerator.is_main_process:
        with atomic_dir(out / "pipeline") as tmp:
            run.pipe.save_pretrained(tmp)
        write_json(out / "metrics.json", metrics)
        if after:
            change = ", ".join(f"{a} {state['before'][a]:+.3f} -> {after[a]:+.3f}" for a in after)
            accelerator.print(f"mean reward on {len(run.eval_items)} evaluation images: {change}")
        accelerator.print(f"saved {out / 'pipeline'} ({state['skipped_steps']} of {state['step']} steps skipped)")
    accelerator.wait_for_everyone()
    return metrics


def _finite_or_none(value: float):
    return value if math.isfinite(value) else None


def _save_checkpoint(folder: Path, run: Training) -> None:
    """The trained weights, the EMA, the optimizer and the state, swapped in whole (a kill mid-save leaves the
    previous checkpoint, or it as <folder>.old, which `resume_from` reads)."""
    from safetensors.torch import save_file

    if run.accelerator.is_main_process:
        with atomic_dir(folder) as tmp:
            trainable = {n: p.detach().cpu().contiguous() for n, p in run.trainable.items()}
            save_file(trainable, tmp / "trainable.safetensors")
            if run.ema is not None:
                save_file(run.ema.state_dict(), tmp / "ema.safetensors")
            if not uses_deepspeed(run.accelerator):  # ZeRO shards it across processes: Adam restarts on resume
                torch.save(run.optimizer.state_dict(), tmp / "optimizer.pt")
            (tmp / "state.json").write_text(json.dumps(run.state))
    run.accelerator.wait_for_everyone()


def _load_checkpoint(folder: Path, run: Training) -> None:
    from safetensors.torch import load_file

    saved = load_file(folder / "trainable.safetensors")
    if set(saved) != set(run.trainable):
        raise ItercompError(
            f"{folder} was written for other trainable parameters (use_lora or lora settings changed?); "
            "delete it or choose another output_dir"
        )
    with torch.no_grad():
        for name, p in run.trainable.items():
            p.copy_(saved[name])
    if run.ema is not None:
        if not (folder / "ema.safetensors").is_file():
            raise ItercompError(f"{folder} has no EMA weights (written with ema_decay=0); delete it or set ema_decay=0")
        run.ema.load_state_dict(load_file(folder / "ema.safetensors"))
    device = run.accelerator.device
    if (folder / "optimizer.pt").is_file() and not uses_deepspeed(run.accelerator):
        run.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location=device, weights_only=True))

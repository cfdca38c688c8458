"""Mid-run checkpoints of reward-model training, so a killed run continues where it stopped and ends with the
weights an uninterrupted run would have.

A checkpoint is a folder, `<output_dir>/<aspect>/checkpoint/`, written whole (into `checkpoint.tmp`, then renamed
by `itercomp.io.replace_dir`):

- `model.safetensors`: the weights being trained (not the best epoch's: that one is the reward model beside it);
- `optimizer.pt`: optimiser and learning-rate schedule state dicts (`torch.load(..., weights_only=True)`);
- `process_<rank>.pt`, one per process: its random states at the start of the epoch and now, and its counters;
- `progress.json`: optimiser step, epoch, batches done in the epoch, best val metrics so far, history, the config.

Resuming draws the epoch's order again from the random states the epoch started with, skips the batches already
done, then puts back the states of the moment the checkpoint was written.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from itercomp.errors import ItercompError
from itercomp.io import read_json, replace_dir, write_json

CHECKPOINT_DIR = "checkpoint"


def checkpoint_dir(folder: Path) -> Path | None:
    """The aspect's checkpoint, if any (`checkpoint.old` when a crash fell between replace_dir's two renames)."""
    for name in (CHECKPOINT_DIR, f"{CHECKPOINT_DIR}.old"):
        if (folder / name / "progress.json").is_file():
            return folder / name
    return None


def remove_checkpoint(folder: Path) -> None:
    for name in (CHECKPOINT_DIR, f"{CHECKPOINT_DIR}.tmp", f"{CHECKPOINT_DIR}.old"):
        shutil.rmtree(folder / name, ignore_errors=True)


def random_states(view_rng: np.random.Generator, generator: torch.Generator | None = None) -> dict:
    """The random streams training draws from: torch's (shuffling, dropout), CUDA's, the views' and, given, the
    sampler's own generator (accelerate gives the sampler one when several processes share the shuffle)."""
    states = {"torch": torch.get_rng_state(), "view": view_rng.bit_generator.state}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        states["sampler"] = generator.get_state()
    return states


def set_random_states(states: dict, view_rng: np.random.Generator, generator: torch.Generator | None) -> None:
    torch.set_rng_state(states["torch"])
    view_rng.bit_generator.state = states["view"]
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    if generator is not None and "sampler" in states:
        generator.set_state(states["sampler"])


def save_checkpoint(folder: Path, accelerator, model, optimizer, scheduler, progress: dict, process: dict) -> None:
    """Write the checkpoint as a whole; every process calls it (each writes its own random states)."""
    from safetensors.torch import save_model

    tmp, final = folder / f"{CHECKPOINT_DIR}.tmp", folder / CHECKPOINT_DIR
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(process, tmp / f"process_{accelerator.process_index}.pt")
    if accelerator.is_main_process:
        save_model(accelerator.unwrap_model(model), str(tmp / "model.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
        write_json(tmp / "progress.json", {**progress, "world_size": accelerator.num_processes})
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        replace_dir(tmp, final)
    accelerator.wait_for_everyone()


def read_progress(path: Path, world_size: int) -> dict:
    progress = read_json(path / "progress.json")
    if progress["world_size"] != world_size:
        raise ItercompError(
            f"resume: {path} was written by {progress['world_size']} process(es), this run has {world_size}; "
            f"relaunch with --num_processes {progress['world_size']} or train afresh without --resume"
        )
    return progress


def load_weights(path: Path, model) -> None:
    """The checkpoint's weights into the (unwrapped) model, every tensor present."""
    from safetensors.torch import load_model

    load_model(model, str(path / "model.safetensors"))


def load_training_state(path: Path, accelerator, optimizer, scheduler) -> dict:
    """Optimiser and schedule state into the prepared objects; returns this process's saved state."""
    state = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return torch.load(path / f"process_{accelerator.process_index}.pt", map_location="cpu", weights_only=True)

"""One Accelerator per stage, whatever the stage before it in the same process asked for.

accelerate keeps one global state per process and refuses a second Accelerator with another mixed precision
("AcceleratorState has already been initialized"). The loop runs reward training and fine-tuning one after the
other, each with its own `mixed_precision`, so in a single process the state is reset between them. Under
`accelerate launch` (several processes) the state belongs to the launch and is kept: there, stages that differ
are refused with the setting to change.
"""

from __future__ import annotations

import sys

from itercomp.errors import ItercompError


def stage_accelerator(**kwargs):
    """`Accelerator(**kwargs)`, after resetting a single-process state that was set up with other settings."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    wanted = kwargs.get("mixed_precision") or "no"
    shared = AcceleratorState._shared_state
    if shared and str(shared.get("_mixed_precision", wanted)) != wanted:
        if shared.get("num_processes", 1) > 1:
            raise ItercompError(
                f"this process already runs with mixed_precision={shared['_mixed_precision']}; under accelerate "
                f"launch every stage must use the same setting (this one asks for {wanted}); make them equal"
            )
        AcceleratorState._reset_state()  # accelerate's own tests do this between single-process runs
    return Accelerator(**kwargs)


def resolve_deepspeed_config(config: dict, values: dict, where: str = "the DeepSpeed config") -> dict:
    """`config` with each key of `values` ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
    "gradient_clipping") set: an "auto" or missing entry takes the stage's value; an integer that differs from it
    is refused, since DeepSpeed would silently train with its own (accelerate keeps DeepSpeed's value)."""
    resolved = dict(config)
    for key, value in values.items():
        given = resolved.get(key, "auto")
        if given == "auto":
            resolved[key] = value
        elif given != value:
            raise ItercompError(
                f'{where} sets {key}={given!r}, but this stage runs with {value!r}; set it to "auto" (the stage '
                f"fills it in) or to {value!r}"
            )
    return resolved


def fill_deepspeed_config(accelerator, **values) -> None:
    """Under DeepSpeed, put the stage's micro-batch size, accumulation steps and clipping into the plugin's
    config before `prepare` (accelerate cannot infer the micro-batch without a dataloader); a no-op otherwise."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is not None:
        plugin.deepspeed_config.update(resolve_deepspeed_config(plugin.deepspeed_config, values))


def uses_deepspeed(accelerator) -> bool:
    return getattr(accelerator.state, "deepspeed_plugin", None) is not None


# ---- trackers (accelerate's: tensorboard, wandb) ------------------------------------------------------------------

TRACKERS = ("none", "tensorboard", "wandb", "all")


def check_report_to(value: str) -> None:
    if value not in TRACKERS:
        raise ItercompError(f"report_to must be one of {', '.join(TRACKERS)}, got {value!r}")


def tracker_kwargs(report_to: str, output_dir) -> dict:
    """Accelerator arguments that log to `report_to` under `<output_dir>/logs` (nothing for "none")."""
    if report_to == "none":
        return {}
    from pathlib import Path

    return {"log_with": report_to, "project_dir": str(Path(output_dir) / "logs")}


def start_trackers(accelerator, name: str, config) -> None:
    """Open the trackers with the run's settings as hyperparameters (scalars only: nested sections flattened to
    `section.field`, lists as text)."""
    if not accelerator.log_with:
        return
    from itercomp.config import to_dict

    flat = {}

    def walk(prefix: str, values: dict) -> None:
        for key, value in values.items():
            if isinstance(value, dict):
                walk(f"{prefix}{key}.", value)
            elif value is None or isinstance(value, (bool, int, float, str)):
                flat[prefix + key] = value if value is not None else "None"
            else:
                flat[prefix + key] = str(value)

    walk("", to_dict(config))
    accelerator.init_trackers(name, config=flat)


def log_images(accelerator, name: str, images, step: int) -> None:
    """A grid of images (N x H x W x 3 uint8 or floats in [0, 1]) to every tracker that takes images."""
    if not accelerator.log_with or not accelerator.is_main_process or len(images) == 0:
        return
    import numpy as np

    images = np.asarray(images)
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({name: images}, step=step, dataformats="NHWC")
        elif hasattr(tracker, "log_images"):
            tracker.log_images({name: list(images)}, step=step)


def stop_trackers(accelerator) -> None:
    """Flush and close the trackers (not `accelerator.end_training()`, which also tears down the process group
    that the caller, e.g. the loop, may still use)."""
    if accelerator.is_main_process:
        for tracker in accelerator.trackers:
            tracker.finish()
    accelerator.trackers = []


def end_processes() -> None:
    """Destroy the process group, if this process started one (`accelerate launch`), before the interpreter exits.
    Left to the exit, gloo's worker threads can outlive Python and abort the process ("terminate called without
    an active exception") after all work is done. A no-op in one process, and it never imports torch."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

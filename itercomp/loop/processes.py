"""The processes a run spans: one by default; N under `accelerate launch` (`itercomp iterate --num-processes N`).

Every process runs the loop. The gallery, reward training, fine-tuning and the evaluation's sampling split their
work across the processes (shards of images, DDP gradients); the rest (the annotation store, scoring, files,
the report) runs on the main process while the others wait, and its result or its error reaches every process,
so one failing process never leaves the others waiting at a barrier.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from collections.abc import Callable

from itercomp.errors import ItercompError


class SingleProcess:
    """The process state of a run that was not launched: rank 0 of 1, barriers that return at once."""

    process_index, num_processes, is_main_process, device = 0, 1, True, None

    def wait_for_everyone(self) -> None:
        pass


def process_state():
    """accelerate's PartialState under a launcher (rank, world size, device, barriers; gloo on CPUs, NCCL on
    GPUs), else `SingleProcess`, so a plain run sets up no process group and leaves each stage's Accelerator
    its own settings."""
    if not launched():
        return SingleProcess()
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def gather(state, value) -> list:
    """Every process's `value`, in rank order, on every process."""
    if state.num_processes == 1:
        return [value]
    from accelerate.utils import gather_object

    return gather_object([value])


def launched() -> bool:
    """Whether this process was started by a launcher (accelerate launch, torchrun)."""
    return "WORLD_SIZE" in os.environ


def on_main(state, fn: Callable):
    """`fn()` on the main process only; every process returns its result, or raises its error."""
    result, error = None, None
    if state.is_main_process:
        try:
            result = fn()
        except Exception as e:  # handed to the other processes before it is raised here
            error = e
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        message = None if error is None else f"{type(error).__name__}: {error}"
        box = [result if error is None else None, message]
        broadcast_object_list(box)
        result, message = box
        if message is not None and not state.is_main_process:
            raise ItercompError(f"the main process stopped: {message}")
    if error is not None:
        raise error
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(num_processes: int, argv: list[str]) -> tuple[list[str], dict]:
    """The `accelerate launch` command (and environment) that reruns `itercomp <argv>` on `num_processes`
    processes: DDP over NCCL with one GPU each, or over gloo on CPUs (`--multi_gpu` plus ACCELERATE_USE_CPU,
    the combination that gives a real CPU process group)."""
    import torch

    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or shutil.which("accelerate")
    if accelerate is None:
        raise ItercompError(
            "--num-processes needs accelerate's launcher (`accelerate` on PATH); pip install accelerate"
        )
    env = dict(os.environ)
    if not torch.cuda.is_available():
        env["ACCELERATE_USE_CPU"] = "1"
    elif torch.cuda.device_count() < num_processes:
        raise ItercompError(
            f"--num-processes {num_processes} needs {num_processes} GPUs; this machine has {torch.cuda.device_count()}"
        )
    command = [accelerate, "launch", "--multi_gpu", "--num_processes", str(num_processes), "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
               "-m", "itercomp.cli", *argv]  # fmt: skip
    return command, env

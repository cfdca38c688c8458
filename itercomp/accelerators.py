"""One Accelerator per stage, whatever the stage before it in the same process asked for.

accelerate keeps one global state per process and refuses a second Accelerator with another mixed precision
("AcceleratorState has already been initialized"). The loop runs reward training and fine-tuning one after the
other, each with its own `mixed_precision`, so in a single process the state is reset between them. Under
`accelerate launch` (several processes) the state belongs to the launch and is kept: there, stages that differ
are refused with the setting to change.
"""

from __future__ import annotations

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

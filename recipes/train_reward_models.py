"""Train the three composition reward models (one per aspect) on rankings.

    accelerate launch recipes/train_reward_models.py --config recipes/configs/rewards_shapes.yaml [--field value ...]
    python recipes/train_reward_models.py --config FILE            # one process
    itercomp rewards train --config FILE                            # the same code path

Every field of reward_models.config.RewardTrainConfig is a YAML key and a `--field-name value` flag (on/off fields
are `--field-name` / `--no-field-name`).
"""

from __future__ import annotations

import sys

from itercomp.accelerators import end_processes
from itercomp.config import load_config
from itercomp.errors import ItercompError
from reward_models.config import RewardTrainConfig


def main(argv: list[str] | None = None) -> int:
    try:
        config = load_config(RewardTrainConfig, argv, description=__doc__)
        from reward_models.training import train  # torch: after the arguments, so --help answers at once

        train(config)
    except ItercompError as e:
        sys.stderr.write(f"train_reward_models: error: {e}\n")
        return 2
    finally:
        end_processes()
    return 0


if __name__ == "__main__":
    sys.exit(main())

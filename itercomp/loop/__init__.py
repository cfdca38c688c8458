"""The iterative loop (`itercomp iterate`): gallery -> rankings -> reward models -> fine-tuning -> evaluation ->
gallery expansion, per round, resumable stage by stage.

- `itercomp.loop.config.IterateConfig`: the settings (YAML + flags).
- `itercomp.loop.run.iterate(config, resume=...)`: the loop; one function per stage.
- `itercomp.loop.insertion.insert_candidates`: the rule that inserts a new model's images into a ranking.

Kept free of torch imports so the CLI can build its help quickly; import `itercomp.loop.run` for the loop.
"""

from itercomp.loop.config import IterateConfig
from itercomp.loop.insertion import best_gap, insert_candidates

__all__ = ["IterateConfig", "best_gap", "insert_candidates"]

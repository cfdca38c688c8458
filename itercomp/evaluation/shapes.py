"""The shapes world's oracle as an evaluator: exact verdicts from pixels (docs/design.md §3).

A row holds the oracle's `correct` and soft `score`, the objects of the prompt, how many are drawn as asked and
what the others miss, the share of the canvas painted (`coverage`) and the per-predicate verdicts: the numbers
`evaluate_pipeline` reports, from the same helpers (itercomp.world.evaluate).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from itercomp.errors import PromptError
from itercomp.evaluation.base import Evaluator, EvaluatorConfig, check_inputs
from itercomp.evaluation.registry import register_evaluator
from itercomp.world.evaluate import coverage, object_misses, objects_drawn
from itercomp.world.oracle import score


@dataclass
class ShapesConfig(EvaluatorConfig):
    """The oracle has no settings of its own."""


@register_evaluator("shapes")
class ShapesEvaluator(Evaluator):
    config_class = ShapesConfig

    def score(self, images, prompts, aspects) -> list[dict]:
        check_inputs(images, prompts, aspects)
        rows = []
        for image, prompt in zip(images, prompts):
            try:
                verdict = score(image, prompt)
            except PromptError as e:
                raise PromptError(
                    f"the shapes evaluator scores shapes-world prompts only: {e}; use --evaluator t2i_compbench "
                    "(or rewards) for other prompts"
                ) from None
            drawn = objects_drawn(verdict)
            rows.append(
                {
                    "score": verdict.score,
                    "correct": verdict.correct,
                    "objects": len(drawn),
                    "objects_drawn": sum(drawn),
                    "object_misses": object_misses(verdict),
                    "coverage": coverage(image),
                    "predicates": [asdict(p) for p in verdict.predicates],
                }
            )
        return rows

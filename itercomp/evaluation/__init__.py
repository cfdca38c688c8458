"""Evaluators: score images against prompts per aspect, behind one call (docs/evaluation.md).

    from itercomp.evaluation import build_evaluator, summarize_rows
    evaluator = build_evaluator({"type": "t2i_compbench", "device": "cuda"})
    rows = evaluator.score(images, prompts, aspects)   # [{"score", "correct", ...details}]

Built in: `shapes` (the shapes world's oracle) and `t2i_compbench` (BLIP-VQA, an open-vocabulary detector, CLIP,
3-in-1). `rewards` (the round's reward models) lives in reward_models/evaluator.py and registers itself when
imported. Importing this package imports no torch.
"""

from itercomp.evaluation.base import Evaluator, EvaluatorConfig, check_inputs, format_summary, summarize_rows
from itercomp.evaluation.registry import available_evaluators, build_evaluator, evaluator_class, register_evaluator

__all__ = [
    "Evaluator",
    "EvaluatorConfig",
    "available_evaluators",
    "build_evaluator",
    "check_inputs",
    "evaluator_class",
    "format_summary",
    "register_evaluator",
    "summarize_rows",
]

"""The shapes world (docs/design.md §3): vocabulary, prompts and splits, parser and rules, renderer and the pixel
oracle."""

from itercomp.world.oracle import Verdict, score
from itercomp.world.prompts import generate_prompts, split_of
from itercomp.world.render import render
from itercomp.world.rules import WorldRuleError, check_rules
from itercomp.world.scene import ObjectSpec, Relation, Scene, canonical, parse, prompt_id
from itercomp.world.vocab import ASPECTS, COLORS, PALETTE, REWARD_ASPECTS, SHAPES, SPLITS

__all__ = [
    "ASPECTS",
    "COLORS",
    "PALETTE",
    "REWARD_ASPECTS",
    "SHAPES",
    "SPLITS",
    "ObjectSpec",
    "Relation",
    "Scene",
    "Verdict",
    "WorldRuleError",
    "canonical",
    "check_rules",
    "generate_prompts",
    "parse",
    "prompt_id",
    "render",
    "score",
    "split_of",
]

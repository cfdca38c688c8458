"""The fixed vocabulary of the shapes world (docs/design.md §3)."""

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 40),
    "green": (40, 190, 70),
    "cyan": (40, 200, 220),
    "blue": (50, 90, 235),
    "purple": (150, 70, 210),
    "white": (240, 240, 240),
}
COLORS = tuple(PALETTE)
SHAPES = ("circle", "square", "triangle", "cross")
FILLS = ("solid", "hollow")
SIZES = ("small", "large")

SPATIAL_RELATIONS = ("to the left of", "to the right of", "above", "below")
NON_SPATIAL_RELATIONS = ("inside", "bigger than", "smaller than", "touching")
RELATIONS = SPATIAL_RELATIONS + NON_SPATIAL_RELATIONS
FUNCTION_WORDS = ("a", "an", "the", "and")


def world_words() -> list[str]:
    """Every word a canonical prompt of any template can contain, each once, in a fixed order (tokenizers number
    them in it, so the order is part of the shipped weights)."""
    words: list[str] = []
    for group in (FUNCTION_WORDS, SIZES, FILLS, COLORS, SHAPES, *(r.split() for r in RELATIONS)):
        words += [w for w in group if w not in words]
    return words


ASPECTS = (
    "attribute_binding",
    "spatial_relationship",
    "non_spatial_relationship",
    "complex",
)
# The three aspects that have a reward model each; `complex` is evaluated only.
REWARD_ASPECTS = ASPECTS[:3]
SPLITS = ("train", "val", "test")

# Relations that a one-attribute edit flips into a contradiction (used for negatives).
OPPOSITE = {
    "to the left of": "to the right of",
    "to the right of": "to the left of",
    "above": "below",
    "below": "above",
    "bigger than": "smaller than",
    "smaller than": "bigger than",
}

"""T2I-CompBench's scoring rules as small pure functions, apart from the models that feed them.

Each function names the official script it follows (github.com/Karine-Huang/T2I-CompBench):

- `noun_phrases`: the phrases BLIP_vqa.py asks about (spaCy's noun chunks there; a rule-based splitter here,
  docs/evaluation.md says where they differ);
- `yes_probability`, `attribute_score`: BLIP_VQA.vqa_prob's P(yes) and the product over phrases;
- `parse_spatial`, `determine_position`, `best_detections`, `spatial_score`: 2D_spatial_eval.py's relation
  words, box-centre rules and detection score;
- `clip_similarity`, `strip_modifiers`: CLIP_similarity.py's cosine, and its complex-prompt text;
- `complex_parts`, `three_in_one`: which scores 3_in_1.py averages for a complex prompt, and the average.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

# ---- noun phrases (BLIPvqa_eval/BLIP_vqa.py) -----------------------------------------------------------------


def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


DETERMINERS = _word_set(
    "a an the this that these those my your his her its our their some any each every several many few one two "
    "three four five six seven eight nine ten"
)
# Words that end a noun phrase and belong to none: prepositions, conjunctions, auxiliaries, pronouns, adverbs.
BOUNDARIES = _word_set(
    "about above across after against along among around at atop before behind below beneath beside besides "
    "between beyond by down during for from in inside into near next of off on onto out outside over past "
    "through to toward towards under underneath up upon with within without than like "
    "and or but nor while as so yet then because where when which who whose whom "
    "is are was were be been being am has have had do does did can could will would should may might must "
    "it he she they we i you him them us me itself himself herself themselves "
    "not also together there here very too just"
)
# Verbs that end a subject phrase ("the clouds floated above ..."): past forms not ending in -ed, and present forms.
VERBS = _word_set(
    "sat lay hung stood ran flew swam sank rose fell slept held wore rode drove shone hid lit spun stuck slid "
    "leapt crept went came grew ate drank sang cast "
    "sits lies hangs stands rests runs flies swims floats sleeps grows leans walks holds wears looks "
    "hold sit hang sleep lean wear embrace"
)
# Nouns ending in -ing or -ed that the verb rules below must keep.
ING_ED_NOUNS = _word_set(
    "building painting ceiling ring king wing string clothing earring railing pudding wedding evening morning "
    "icing stocking bedding swing spring ping thing sibling bed shed sled red seed reed weed"
)
# Words ending in -ly that are nouns, not adverbs ("waiting patiently").
LY_NOUNS = _word_set("family butterfly dragonfly firefly jelly belly lily holly assembly supply")
# Chunks spaCy finds inside relation phrases, which BLIP_vqa.py drops ('top', 'the side', 'the left', 'the right');
# the list here also drops the forms it misses ('the top', 'side', 'bottom', 'front', ...).
RELATION_NOUNS = _word_set("top bottom left right side front")
MAX_NOUN_PHRASES = 8  # BLIP_vqa.py's --np_num: phrases after the eighth are not asked about


@dataclass(frozen=True)
class Chunk:
    start: int  # index of the first word in the prompt's words
    end: int  # one past the last word
    words: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.words)

    @property
    def head(self) -> str:
        """The phrase's last word: its noun ("the brown coat rack" -> "rack")."""
        return self.words[-1]


def prompt_words(prompt: str) -> list[str]:
    """Words and punctuation marks in order ("A man, sitting." -> ['A', 'man', ',', 'sitting', '.'])."""
    return re.findall(r"[A-Za-z0-9][A-Za-z0-9'-]*|[^\sA-Za-z0-9]", prompt)


def _is_adverb(word: str) -> bool:
    w = word.lower()
    return len(w) > 5 and w.endswith("ly") and w not in LY_NOUNS


def _is_verb_like(word: str) -> bool:
    w = word.lower()
    if w in ING_ED_NOUNS:
        return False
    return w in VERBS or (len(w) > 4 and (w.endswith("ing") or w.endswith("ed")))


def noun_chunks(prompt: str) -> list[Chunk]:
    """The prompt's noun phrases with their word positions (see `noun_phrases`)."""
    words = prompt_words(prompt)
    chunks: list[Chunk] = []
    run: list[int] = []
    previous: str | None = None  # the boundary word (or mark) before the current run; None at the start

    def close(run: list[int], previous: str | None) -> None:
        # A determiner starts a new phrase: "holding a book" is "holding" + "a book".
        pieces, piece = [], []
        for i in run:
            if words[i].lower() in DETERMINERS and piece:
                pieces.append(piece)
                piece = []
            piece.append(i)
        if piece:
            pieces.append(piece)
        for number, piece in enumerate(pieces):
            starts_with_determiner = words[piece[0]].lower() in DETERMINERS
            if not starts_with_determiner:
                # "is standing", "and waiting", "roasting marshmallows", "waiting patiently": leading verbs and
                # adverbs are not the phrase.
                while (
                    piece
                    and (_is_verb_like(words[piece[0]]) or _is_adverb(words[piece[0]]))
                    and (number > 0 or previous is not None)
                ):
                    piece = piece[1:]
            # "the clouds floated": a trailing verb after the noun ends the subject phrase.
            while len(piece) > 1 and _is_verb_like(words[piece[-1]]) and words[piece[-2]].lower() not in DETERMINERS:
                piece = piece[:-1]
            content = [words[i] for i in piece if words[i].lower() not in DETERMINERS]
            if not content or (len(content) == 1 and content[0].lower() in RELATION_NOUNS):
                continue
            chunks.append(Chunk(piece[0], piece[-1] + 1, tuple(words[i] for i in piece)))

    for i, word in enumerate(words):
        # "next" is a preposition in "next to" only ("their next novel" keeps it).
        next_to = word.lower() == "next" and i + 1 < len(words) and words[i + 1].lower() == "to"
        if next_to or (word.lower() in BOUNDARIES and word.lower() != "next") or not word[0].isalnum():
            if run:
                close(run, previous)
                run = []
            previous = word.lower()
        else:
            run.append(i)
    if run:
        close(run, previous)
    return chunks


def noun_phrases(prompt: str) -> list[str]:
    """The noun phrases BLIP-VQA is asked about, in order: "a red book and a brown sheep" -> ["a red book",
    "a brown sheep"]; "The red hat was on top of the brown coat rack." -> ["The red hat", "the brown coat rack"].

    A rule-based stand-in for spaCy's `noun_chunks`: runs of words between prepositions, conjunctions,
    auxiliaries, pronouns and punctuation, split before each determiner, with verbs trimmed (-ing / -ed forms and
    a list of common irregular ones) and relation nouns ("the left", "top") dropped."""
    return [chunk.text for chunk in noun_chunks(prompt)]


# ---- BLIP-VQA (BLIPvqa_eval/models/blip_vqa.py: vqa_prob; BLIP_vqa.py: the product) -------------------------


def yes_probability(logits, yes_id: int, no_id: int):
    """P(yes) among {yes, no} from the decoder's first-token logits (B x vocab), as BLIP_VQA.vqa_prob computes it:
    softmax(logits)[yes] / (softmax(logits)[yes] + softmax(logits)[no]), which is sigmoid(logit_yes - logit_no)
    (the softmax's normaliser cancels; this form cannot divide 0 by 0)."""
    import torch

    return torch.sigmoid(logits[:, yes_id] - logits[:, no_id])


def attribute_score(p_yes: Sequence[float]) -> float:
    """The product of P(yes) over a prompt's noun phrases; 1.0 without any (BLIP_vqa.py counts an empty
    question as 1)."""
    return float(math.prod(p_yes))


# ---- spatial relations (UniDet_eval/2D_spatial_eval.py) --------------------------------------------------------

# Relation words -> the locality `determine_position` knows. The official vocabulary first; then the spellings
# of the shapes world and other common ones ("on top of" included: the official script finds it but scores it 0).
LOCALITIES = {
    "on side of": "on side of",
    "next to": "next to",
    "near": "near",
    "on the left of": "on the left of",
    "on the right of": "on the right of",
    "on the bottom of": "on the bottom of",
    "on the top of": "on the top of",
    "on top of": "on the top of",
    "on the side of": "on side of",
    "beside": "next to",
    "to the left of": "on the left of",
    "to the right of": "on the right of",
    "on bottom of": "on the bottom of",
    "above": "on the top of",
    "below": "on the bottom of",
    "under": "on the bottom of",
    "beneath": "on the bottom of",
    "underneath": "on the bottom of",
}
IOU_THRESHOLD = 0.1  # determine_position's iou_threshold: more overlap than this makes left/right/top/bottom soft
DISTANCE_THRESHOLD = 150.0  # determine_position's distance_threshold, in pixels of the 479-pixel frame below
# 2D_spatial_eval.py detects on the image resized to a shorter side of 479 pixels (longer side at most 480), so its
# pixel thresholds hold in that frame; boxes are scaled into it whatever the image's size.
UNIDET_SHORT_SIDE, UNIDET_LONG_SIDE = 479, 480
SPATIAL_FLOOR = 0.5  # 2D_spatial_eval.py sets a score below 0.5 to 0: one object found, or a wrong relation


@dataclass(frozen=True)
class SpatialPrompt:
    subject: str  # the first object's noun, as the detector is asked for it
    locality: str  # one of determine_position's relation names
    object: str


def _find_relation(words: list[str], phrases) -> tuple[int, int, str] | None:
    """(start, end, phrase) of the first relation phrase in the words (the longest at that position)."""
    lowered = [w.lower() for w in words]
    ordered = sorted(phrases, key=lambda p: -len(p.split()))
    for i in range(len(lowered)):
        for phrase in ordered:
            parts = phrase.split()
            if lowered[i : i + len(parts)] == parts:
                return i, i + len(parts), phrase
    return None


def parse_spatial(prompt: str) -> SpatialPrompt | None:
    """The two objects and the relation of a spatial prompt ("a wallet on the left of a giraffe" -> wallet, on the
    left of, giraffe): the nouns of the noun phrases just before and just after the first relation phrase. None
    when there is no relation phrase or no object on one side."""
    words = prompt_words(prompt)
    found = _find_relation(words, LOCALITIES)
    if found is None:
        return None
    start, end, phrase = found
    chunks = noun_chunks(prompt)
    before = [c for c in chunks if c.end <= start]
    after = [c for c in chunks if c.start >= end]
    if not before or not after:
        return None
    return SpatialPrompt(before[-1].head, LOCALITIES[phrase], after[0].head)


Box = tuple[float, float, float, float]  # x_min, y_min, x_max, y_max


def determine_position(
    locality: str,
    box1: Box,
    box2: Box,
    iou_threshold: float = IOU_THRESHOLD,
    distance_threshold: float = DISTANCE_THRESHOLD,
) -> float:
    """2D_spatial_eval.py's `determine_position`, rule for rule: is box1 `locality` box2, soft score in [0, 1].

    Centres decide the side (image y grows downwards): left/right need the horizontal centre distance to exceed
    the vertical one, top/bottom the reverse; overlap beyond `iou_threshold` softens a right side to
    iou_threshold / IoU. next to / near / on side of: 1 when the centres are within `distance_threshold` along x
    or along y, else distance_threshold / the larger distance."""
    x_distance = (box2[0] + box2[2]) / 2 - (box1[0] + box1[2]) / 2
    y_distance = (box2[1] + box2[3]) / 2 - (box1[1] + box1[3]) / 2
    x_overlap = max(0.0, min(box1[2], box2[2]) - max(box1[0], box2[0]))
    y_overlap = max(0.0, min(box1[3], box2[3]) - max(box1[1], box2[1]))
    intersection = x_overlap * y_overlap
    union = (box1[2] - box1[0]) * (box1[3] - box1[1]) + (box2[2] - box2[0]) * (box2[3] - box2[1]) - intersection
    iou = intersection / union if union > 0 else 0.0

    def side(along: float, across: float, right_sign: bool) -> float:
        if not right_sign or abs(along) <= abs(across):
            return 0.0
        return 1.0 if iou < iou_threshold else iou_threshold / iou

    if locality in ("next to", "on side of", "near"):
        if abs(x_distance) < distance_threshold or abs(y_distance) < distance_threshold:
            return 1.0
        return distance_threshold / max(abs(x_distance), abs(y_distance))
    if locality == "on the right of":
        return side(x_distance, y_distance, x_distance < 0)
    if locality == "on the left of":
        return side(x_distance, y_distance, x_distance > 0)
    if locality == "on the bottom of":
        return side(y_distance, x_distance, y_distance < 0)
    if locality == "on the top of":
        return side(y_distance, x_distance, y_distance > 0)
    return 0.0


def unidet_scale(height: int, width: int) -> float:
    """The factor that takes an image's pixels into 2D_spatial_eval.py's detection frame (torchvision's
    Resize(479, max_size=480): shorter side 479 unless that makes the longer side exceed 480)."""
    short, long = min(height, width), max(height, width)
    scale = UNIDET_SHORT_SIDE / short
    if long * scale > UNIDET_LONG_SIDE:
        scale = UNIDET_LONG_SIDE / long
    return scale


def best_detections(scores, boxes, threshold: float) -> list[tuple[float, Box] | None]:
    """Per query, the highest-scoring detection labelled with it, or None.

    `scores`: P x Q confidences of P candidate boxes for Q queries; `boxes`: P x 4. As a closed-vocabulary
    detector does, each box takes the one label it scores highest (and that score); boxes below `threshold` are
    dropped. UniDet's list of detections is sorted by score, so `obj.index(name)` in 2D_spatial_eval.py picks the
    same box."""
    out: list[tuple[float, Box] | None] = []
    labels = [max(range(len(row)), key=row.__getitem__) for row in scores]
    for q in range(len(scores[0]) if len(scores) else 0):
        candidates = [(scores[p][q], p) for p in range(len(scores)) if labels[p] == q and scores[p][q] >= threshold]
        if not candidates:
            out.append(None)
            continue
        score, p = max(candidates)
        out.append((float(score), tuple(float(v) for v in boxes[p])))
    return out


def spatial_score(
    locality: str,
    first: tuple[float, Box] | None,
    second: tuple[float, Box] | None,
    iou_threshold: float = IOU_THRESHOLD,
    distance_threshold: float = DISTANCE_THRESHOLD,
) -> float:
    """2D_spatial_eval.py's image score from the two objects' detections (confidence, box) or None:
    0.25 x each confidence + determine_position / 2 when both are found, 0.25 x the confidence of the one found
    otherwise; a score below 0.5 counts 0."""
    if first is not None and second is not None:
        position = determine_position(locality, first[1], second[1], iou_threshold, distance_threshold)
        score = 0.25 * first[0] + 0.25 * second[0] + position / 2
    elif first is not None or second is not None:
        score = 0.25 * (first or second)[0]
    else:
        score = 0.0
    return score if score >= SPATIAL_FLOOR else 0.0


# ---- CLIPScore (CLIPScore_eval/CLIP_similarity.py) -------------------------------------------------------------


def clip_similarity(image_embeds, text_embeds):
    """Row-wise cosine similarity of image and text embeddings (B x D each): CLIP_similarity.py's score, the raw
    cosine (not Hessel et al.'s 2.5 x max(cos, 0))."""
    import torch

    image_embeds = torch.as_tensor(image_embeds, dtype=torch.float32)
    text_embeds = torch.as_tensor(text_embeds, dtype=torch.float32)
    image_embeds = image_embeds / image_embeds.norm(dim=-1, keepdim=True)
    text_embeds = text_embeds / text_embeds.norm(dim=-1, keepdim=True)
    return (image_embeds * text_embeds).sum(-1)


def strip_modifiers(prompt: str) -> str:
    """A complex prompt without the modifiers of its noun phrases, the text CLIP_similarity.py --complex scores
    (it drops spaCy's ADJ tokens): "The sweet red strawberry lay next to the tart green apple." -> "The
    strawberry lay next to the apple." Determiners and each phrase's noun stay."""
    words = prompt_words(prompt)
    dropped = {
        i
        for chunk in noun_chunks(prompt)
        for i in range(chunk.start, chunk.end - 1)
        if words[i].lower() not in DETERMINERS
    }
    kept = [w for i, w in enumerate(words) if i not in dropped]
    return re.sub(r" ([^\sA-Za-z0-9])", r"\1", " ".join(kept))


# ---- complex prompts (3_in_1_eval/3_in_1.py) ------------------------------------------------------------------

# The prepositions 2D_spatial_eval.py --complex looks for, plus the shapes world's "to the left/right of".
COMPLEX_SPATIAL = ("on top of", "on bottom of", "on the left", "on the right", "next to", "on side of", "near",
                   "to the left of", "to the right of")  # fmt: skip
COPULAS = _word_set("is are was were be been being")


def complex_parts(prompt: str) -> tuple[str, ...]:
    """Which aspect scores 3_in_1.py averages for a complex prompt. The official script reads this from its prompt
    lists (complex_val_spatial / _action / _spatialaction); here it is read from the text: a spatial preposition
    after a form of "to be" ("The red hat was on top of ...") is spatial + attribute; after another verb
    ("The pumpkin sat next to ...") spatial + action + attribute; no spatial preposition, action + attribute.
    (This agrees with 299 of the 300 prompts of T2I-CompBench's complex_val lists.)"""
    words = prompt_words(prompt)
    found = _find_relation(words, COMPLEX_SPATIAL)
    if found is None:
        return ("attribute_binding", "non_spatial_relationship")
    start = found[0]
    if start > 0 and words[start - 1].lower() in COPULAS:
        return ("attribute_binding", "spatial_relationship")
    return ("attribute_binding", "spatial_relationship", "non_spatial_relationship")


def three_in_one(attribute: float, spatial: float | None = None, non_spatial: float | None = None) -> float:
    """3_in_1.py's complex score: the mean of the attribute score and whichever of the spatial and non-spatial
    (action) scores the prompt has: (a + s) / 2, (a + c) / 2 or (a + s + c) / 3."""
    parts = [attribute, *(v for v in (spatial, non_spatial) if v is not None)]
    return float(sum(parts) / len(parts))

"""The oracle: scores an image against a prompt from pixels alone.

Every pixel is snapped to the nearest palette colour (or the black background); each object of the prompt is
the largest 8-connected region of its colour; its shape, fill and size are measured from that region, and each
relation is checked between regions with the same predicate functions the renderer satisfies.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image
from scipy import ndimage

from itercomp.world.geometry import Blob, fill_is, relation_holds, shape_is, size_is
from itercomp.world.scene import Scene, parse
from itercomp.world.vocab import COLORS, PALETTE

MIN_PIXELS = 4  # fewer pixels of a colour than this is noise, not an object
_COLORS = np.array([(0, 0, 0), *PALETTE.values()], dtype=np.float32) / 255.0
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass
class Predicate:
    name: str  # e.g. "red circle: shape circle" or "red circle to the left of blue square"
    ok: bool
    soft: float


@dataclass
class Verdict:
    prompt: str
    correct: bool
    score: float  # mean soft score of the predicates, in [0, 1]
    predicates: list[Predicate] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def to_float_array(image) -> np.ndarray:
    """An H x W x 3 float array in [0, 1] from a PIL image, a uint8 array, a float array or a CHW tensor."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    if hasattr(image, "detach"):  # a torch tensor, C x H x W in [0, 1]
        image = image.detach().float().cpu().numpy().transpose(1, 2, 0)
    array = np.asarray(image)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    return np.clip(array.astype(np.float32), 0.0, 1.0)


def segment(image) -> np.ndarray:
    """H x W labels: 0 for background, 1 + palette index for each colour."""
    pixels = to_float_array(image)
    distances = ((pixels[:, :, None, :] - _COLORS[None, None]) ** 2).sum(-1)
    return distances.argmin(-1)


def find_blob(labels: np.ndarray, color: str) -> Blob | None:
    """The largest 8-connected region of one colour, or None when the colour is (nearly) absent."""
    components, count = ndimage.label(labels == 1 + COLORS.index(color), structure=_EIGHT)
    if count == 0:
        return None
    sizes = np.bincount(components.ravel())[1:]
    largest = int(sizes.argmax())
    if sizes[largest] < MIN_PIXELS:
        return None
    return Blob.from_mask(components == largest + 1)


def score(image, prompt: str | Scene) -> Verdict:
    """Score one image against one prompt: per-predicate verdicts, a binary `correct`, a soft score."""
    scene = parse(prompt) if isinstance(prompt, str) else prompt
    labels = segment(image)
    canvas = labels.shape[0]
    blobs = [find_blob(labels, obj.color) for obj in scene.objects]
    predicates: list[Predicate] = []
    for obj, blob in zip(scene.objects, blobs):
        name = f"{obj.color} {obj.shape}"
        if blob is None:
            predicates.append(Predicate(f"{name}: present", False, 0.0))
            predicates += [Predicate(f"{name}: {k} {v}", False, 0.0) for k, v in _attributes(obj)]
            continue
        predicates.append(Predicate(f"{name}: present", True, 1.0))
        for key, value in _attributes(obj):
            if key == "shape":
                ok, soft = shape_is(blob, value)
            elif key == "fill":
                ok, soft = fill_is(blob, value)
            else:
                ok, soft = size_is(blob, value, canvas)
            predicates.append(Predicate(f"{name}: {key} {value}", ok, soft))
    for rel in scene.relations:
        a, b = scene.objects[rel.subject], scene.objects[rel.object]
        name = f"{a.color} {a.shape} {rel.name} {b.color} {b.shape}"
        blob_a, blob_b = blobs[rel.subject], blobs[rel.object]
        if blob_a is None or blob_b is None:
            predicates.append(Predicate(name, False, 0.0))
        else:
            ok, soft = relation_holds(rel.name, blob_a, blob_b, canvas)
            predicates.append(Predicate(name, ok, soft))
    correct = all(p.ok for p in predicates)
    soft = float(np.mean([p.soft for p in predicates]))
    return Verdict(scene.prompt(), correct, soft, predicates)


def _attributes(obj) -> list[tuple[str, str]]:
    return [(k, getattr(obj, k)) for k in ("shape", "fill", "size") if getattr(obj, k) is not None]

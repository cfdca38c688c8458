"""Image and text towers of a reward model.

Two families behind one interface (`encode_image(pixels) -> B x N x D` image tokens; a text side that reads
token ids and cross-attends to the image tokens):

- `shapes`: a tiny conv-stem ViT and a word-level text transformer, trained from scratch for the shapes world;
- `blip`, `clip`, `siglip`: transformers' vision and text models, built from the config stored in the reward
  model's own config (so `from_pretrained` never needs the hub) or loaded from a hub id / local path.

BLIP's text model has cross-attention layers of its own (the ImageReward / IterComp design); CLIP's and
SigLIP's text models do not, so their text tokens pass through a few `CrossBlock`s that add it.
"""

from __future__ import annotations

import torch
from torch import nn

from reward_models.config import HF_BACKBONES

# Normalisation each family was pretrained with (OpenAI CLIP statistics for BLIP and CLIP; SigLIP uses 0.5).
IMAGE_MEAN = {"shapes": (0.5, 0.5, 0.5), "blip": (0.48145466, 0.4578275, 0.40821073), "siglip": (0.5, 0.5, 0.5)}
IMAGE_STD = {"shapes": (0.5, 0.5, 0.5), "blip": (0.26862954, 0.26130258, 0.27577711), "siglip": (0.5, 0.5, 0.5)}
IMAGE_MEAN["clip"], IMAGE_STD["clip"] = IMAGE_MEAN["blip"], IMAGE_STD["blip"]


class CrossBlock(nn.Module):
    """Pre-norm transformer block: self-attention over text, cross-attention to image tokens, MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.self_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        # What a word reads from the image is gated by the word itself: the product "this word x that pixel
        # content" is then one linear map away, which a from-scratch model otherwise takes long to discover.
        self.gate = nn.Linear(width, width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width), nn.Dropout(dropout))

    def forward(
        self, text: torch.Tensor, padding: torch.Tensor | None, image: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`bias`: optional B x L x N additive cross-attention logits (word -> image token prior)."""
        x = self.norm1(text)
        text = text + self.self_attn(x, x, x, key_padding_mask=padding, need_weights=False)[0]
        x = self.norm2(text)
        mask = None
        if bias is not None:  # B x L x N (all heads) or B x heads x L x N
            heads = self.cross_attn.num_heads
            mask = bias.repeat_interleave(heads, 0) if bias.ndim == 3 else bias.flatten(0, 1)
            mask = mask.to(x.dtype)
        read = self.cross_attn(x, image, image, attn_mask=mask, need_weights=False)[0]
        text = text + torch.sigmoid(self.gate(x)) * read
        return text + self.mlp(self.norm3(text))


GEOMETRY_FEATURES = 13


def slot_geometry(colour: torch.Tensor, mass: torch.Tensor) -> torch.Tensor:
    """B x C x 13 differentiable shape descriptors of each soft colour mask (B x C x H x W).

    Where (centroid), how big (log area, spread), how filled (area over spread: hollow shapes are low), which
    way it leans (skewness: a triangle's weight sits low), how peaked (kurtosis: a cross's arms) and how square
    (the joint moment E[dy^2 dx^2] / (var_y var_x): 1 for a filled square, below 1 for a circle, far below for
    a cross), and the share of its pixels on its boundary (outlines are all boundary).
    """
    height, width = colour.shape[-2:]
    ys = torch.linspace(-1, 1, height, device=colour.device, dtype=colour.dtype)
    xs = torch.linspace(-1, 1, width, device=colour.device, dtype=colour.dtype)
    py, px = colour.sum(3), colour.sum(2)  # B x C x H, B x C x W marginals
    cy = (py * ys).sum(2) / mass
    cx = (px * xs).sum(2) / mass
    dy = ys.view(1, 1, -1) - cy[..., None]
    dx = xs.view(1, 1, -1) - cx[..., None]
    vy = ((py * dy**2).sum(2) / mass).clamp(min=1e-4)
    vx = ((px * dx**2).sum(2) / mass).clamp(min=1e-4)
    skew_y = (py * dy**3).sum(2) / mass / vy**1.5
    skew_x = (px * dx**3).sum(2) / mass / vx**1.5
    kurt_y = (py * dy**4).sum(2) / mass / vy**2
    kurt_x = (px * dx**4).sum(2) / mass / vx**2
    joint = torch.einsum("bchw,bch,bcw->bc", colour, dy**2, dx**2) / mass / (vy * vx)
    pixel_area = 4.0 / (height * width)  # one pixel in the [-1, 1]^2 coordinates
    compact = mass * pixel_area / (12.0 * (vy * vx).sqrt())  # 1 for a filled square
    inner = torch.nn.functional.avg_pool2d(colour, 3, stride=1, padding=1)
    boundary = (colour * (1 - inner)).clamp(min=0).sum((2, 3)) / mass * 9 / 8
    present = torch.tanh(mass / 8.0)  # the oracle ignores colours with fewer than a few pixels
    features = [cy, cx, vy.sqrt(), vx.sqrt(), torch.log(mass) / 5.0, present, compact, skew_y, skew_x]
    features += [kurt_y / 3.0, kurt_x / 3.0, joint, boundary]
    # Descriptors of an absent colour are noise: zero them so they cannot mislead.
    return torch.stack(features, -1) * present[..., None]


class ShapesImageEncoder(nn.Module):
    """Colour-slot tokens: one token per palette colour, built from differentiable soft colour masks.

    The shapes world draws objects in eight exact colours, so the image is read as "what is drawn in red, in
    blue, ...": a soft mask per colour (softmax over distances to the palette, differentiable in the pixels)
    pools full-resolution conv features (shape, fill, what touches what) and adds where the colour lies (soft
    centroid and spread) and how much of it there is. A prompt's words then find their object by colour in
    one cross-attention step; patch tokens over a mostly black canvas made a from-scratch model spend
    hundreds of steps discovering that binding. A transformer layer over the slots lets them compare
    (left of, bigger than, inside).
    """

    def __init__(self, width: int, layers: int, heads: int, dropout: float):
        super().__init__()
        from itercomp.world.vocab import PALETTE

        palette = torch.tensor([(0, 0, 0), *PALETTE.values()], dtype=torch.float32) / 255.0
        self.register_buffer("palette", palette, persistent=False)
        self.mask_temperature = 0.02  # in squared [0, 1] RGB distance: palette colours are >= 0.1 apart
        stem = max(16, width // 2)
        # Input: RGB plus the soft masks, so features know which colour each neighbour has (touching, inside).
        channels = 3 + len(palette)
        self.stem = nn.Sequential(
            nn.Conv2d(channels, stem, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(stem, width, 3, padding=1),
        )
        self.geometry = nn.Linear(GEOMETRY_FEATURES, width)
        self.slot = nn.Parameter(torch.zeros(1, len(palette) - 1, width))
        nn.init.normal_(self.slot, std=0.02)
        self.proj = nn.Linear(2 * width, width)
        layer = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.layers = nn.ModuleList([_copy(layer) for _ in range(layers)])
        self.norm = nn.LayerNorm(width)

    def masks(self, rgb: torch.Tensor) -> torch.Tensor:
        """B x (1 + colours) x H x W soft assignment of each pixel to background or a palette colour."""
        distance = ((rgb[:, None] - self.palette[None, :, :, None, None]) ** 2).sum(2)
        return torch.softmax(-distance / self.mask_temperature, dim=1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        rgb = pixels * 0.5 + 0.5  # undo the (0.5, 0.5) normalisation of the shapes backbone
        masks = self.masks(rgb)
        features = self.stem(torch.cat([pixels, masks], 1))  # B x D x H x W
        colour = masks[:, 1:]  # B x C x H x W, background dropped
        mass = colour.sum((2, 3)) + 1e-3  # B x C
        pooled = torch.einsum("bchw,bdhw->bcd", colour, features) / mass[..., None]
        geometry = slot_geometry(colour, mass)
        tokens = self.proj(torch.cat([pooled, self.geometry(geometry)], -1)) + self.slot
        for layer in self.layers:
            tokens = layer(tokens)
        return self.norm(tokens)


def phrase_slots(words: list[str]) -> tuple[list[int], list[int]]:
    """For each word of a shapes prompt, the colour slots its meaning is about: (first, second).

    A word of an object phrase ("small", "hollow", "red", "circle") is about that phrase's colour (both entries);
    a relation word between two phrases is about the first phrase's colour (first) and the second's (second),
    so attention heads split between them keep the order that "left of" or "bigger than" depends on.
    Anything else (articles, "and", unknown words) gets -1. Slots follow the palette order.
    """
    from itercomp.world.vocab import COLORS, FILLS, SHAPES, SIZES

    phrase_words = {*COLORS, *FILLS, *SHAPES, *SIZES}
    n = len(words)
    first, second = [-1] * n, [-1] * n
    phrases: list[tuple[int, int, int]] = []  # (start, end, colour slot)
    i = 0
    while i < n:
        if words[i] in phrase_words:
            j = i
            while j < n and words[j] in phrase_words:
                j += 1
            colours = [COLORS.index(w) for w in words[i:j] if w in COLORS]
            phrases.append((i, j, colours[0] if colours else -1))
            i = j
        else:
            i += 1
    for start, end, colour in phrases:
        for k in range(start, end):
            first[k] = second[k] = colour
    for (_, end, a), (start, _, b) in zip(phrases[:-1], phrases[1:]):
        between = words[end:start]
        if "and" in between:
            continue
        for k in range(end, start):
            first[k], second[k] = a, b
    return first, second


class ShapesTextEmbedding(nn.Module):
    def __init__(self, vocab_size: int, max_length: int, width: int):
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, width)
        # Small like the image side's features: with N(0, 1) the word vectors drown what cross-attention adds.
        nn.init.normal_(self.tokens.weight, std=0.02)
        self.position = nn.Parameter(torch.zeros(1, max_length, width))
        nn.init.normal_(self.position, std=0.02)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.tokens(input_ids) + self.position[:, : input_ids.shape[1]]


def _copy(module: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(module)


def hf_config(kind: str, config: dict):
    """The transformers composite config of a backbone family, rebuilt from its stored dict."""
    from transformers import BlipConfig, CLIPConfig, SiglipConfig

    classes = {"blip": BlipConfig, "clip": CLIPConfig, "siglip": SiglipConfig}
    return classes[kind].from_dict(config)


def build_hf_towers(kind: str, config: dict) -> tuple[nn.Module, nn.Module]:
    """(vision model, text model) with random weights, shaped by the stored config (weights load afterwards)."""
    from transformers import (
        BlipTextModel,
        BlipVisionModel,
        CLIPTextModel,
        CLIPVisionModel,
        SiglipTextModel,
        SiglipVisionModel,
    )

    cfg = hf_config(kind, config)
    if kind == "blip":
        text_config = cfg.text_config
        text_config.is_decoder = True  # creates the cross-attention layers; forward runs bidirectionally
        return BlipVisionModel(cfg.vision_config), BlipTextModel(text_config, add_pooling_layer=False)
    if kind == "clip":
        return CLIPVisionModel(cfg.vision_config), CLIPTextModel(cfg.text_config)
    return SiglipVisionModel(cfg.vision_config), SiglipTextModel(cfg.text_config)


def load_hf_backbone(kind: str, name_or_path: str):
    """Load a pretrained backbone by hub id or local path: (config dict, vision model, text model, tokenizer)."""
    from transformers import AutoTokenizer, BlipForImageTextRetrieval, CLIPModel, SiglipModel

    if kind == "blip":
        model = BlipForImageTextRetrieval.from_pretrained(name_or_path)
        vision, text = model.vision_model, model.text_encoder
    elif kind == "clip":
        model = CLIPModel.from_pretrained(name_or_path)
        vision, text = model.vision_model, model.text_model
    elif kind == "siglip":
        model = SiglipModel.from_pretrained(name_or_path)
        vision, text = model.vision_model, model.text_model
    else:
        raise ValueError(f"backbone {kind!r} is not a transformers family; expected one of {', '.join(HF_BACKBONES)}")
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    return model.config.to_dict(), vision, text, tokenizer


def tower_stages(module: nn.Module) -> list[nn.Module]:
    """A tower's modules from input to output (embeddings first, then each layer), for freezing a prefix."""
    inner = getattr(module, "vision_model", None) or getattr(module, "text_model", None) or module
    stages: list[nn.Module] = []
    for name in ("embeddings", "stem", "tokens"):
        if hasattr(inner, name):
            stages.append(getattr(inner, name))
    encoder = getattr(inner, "encoder", inner)
    layers = getattr(encoder, "layer", None) or getattr(encoder, "layers", None)
    if layers is not None:
        stages.extend(layers)
    return stages


# Where each family keeps its vision position embedding, and how many tokens come before the patch grid
# (BLIP and CLIP prepend a class token; SigLIP pools without one).
POSITION_EMBEDDING = {
    "blip": ("embeddings.position_embedding", 1),
    "clip": ("embeddings.position_embedding.weight", 1),
    "siglip": ("embeddings.position_embedding.weight", 0),
}


def with_image_size(kind: str, config: dict, size: int) -> dict:
    """A copy of a backbone's stored config whose vision tower takes `size` x `size` images."""
    import copy

    patch = config["vision_config"]["patch_size"]
    if size % patch:
        raise ValueError(
            f"image_size={size} is not a multiple of the {kind} vision tower's patch size {patch}; use e.g. "
            f"{max(patch, size // patch * patch)} or {(size // patch + 1) * patch}"
        )
    config = copy.deepcopy(config)
    config["vision_config"]["image_size"] = size
    return config


def resize_position_embedding(weight: torch.Tensor, prefix_tokens: int, grid: int) -> torch.Tensor:
    """A ViT position embedding ([1 x] N x D: `prefix_tokens` then a square patch grid) resampled to a `grid` x
    `grid` patch grid, bicubic as BLIP's `interpolate_pos_embed` and timm do; the prefix tokens are kept."""
    squeeze = weight.ndim == 2
    table = weight[None] if squeeze else weight
    prefix, patches = table[:, :prefix_tokens], table[:, prefix_tokens:]
    old = round(patches.shape[1] ** 0.5)
    if old * old != patches.shape[1]:
        raise ValueError(f"position embedding of {patches.shape[1]} patch tokens is not a square grid")
    if old != grid:
        dim = patches.shape[-1]
        patches = patches.reshape(1, old, old, dim).permute(0, 3, 1, 2).float()
        patches = torch.nn.functional.interpolate(patches, size=(grid, grid), mode="bicubic", align_corners=False)
        patches = patches.permute(0, 2, 3, 1).reshape(1, grid * grid, dim).to(table.dtype)
    table = torch.cat([prefix, patches], 1)
    return table[0] if squeeze else table


def resize_vision_state(kind: str, state: dict, config: dict) -> dict:
    """A vision tower's state dict with its position embedding resampled to the image size in `config` (the
    stored backbone config), so it loads into towers built from that config."""
    key, prefix = POSITION_EMBEDDING[kind]
    vision = config["vision_config"]
    grid = vision["image_size"] // vision["patch_size"]
    return {**state, key: resize_position_embedding(state[key], prefix, grid)}

"""Starting a BLIP reward model from an ImageReward-format checkpoint (THUDM/ImageReward's `ImageReward.pt`, and
IterComp's three reward models, which are the same module saved from DistributedDataParallel).

ImageReward (`ImageReward/ImageReward.py`) is `blip` (`models/BLIP/blip_pretrain.py`: a timm-style ViT
`visual_encoder` from `vit.py`, a BERT `text_encoder` with cross-attention from `med.py`, and the contrastive
`vision_proj` / `text_proj`) plus `mlp`, five Linear layers with dropout between and no activation. Our BLIP
reward model holds transformers' `BlipVisionModel` (`vision.`) and `BlipTextModel` (`text.`): the text encoder's
names are BERT's on both sides, the ViT's are renamed below, and the MLP, linear end to end, becomes one Linear
(its product; the same function in eval mode, when dropout is off).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

# ImageReward normalises raw rewards with these (ImageReward/ImageReward.py; IterComp's rewards use them too).
IMAGEREWARD_MEAN = 0.16717362830052426
IMAGEREWARD_STD = 1.0333394966054072
# The Linear layers of ImageReward's MLP, input first (Dropouts sit at 1, 3 and 5).
HEAD_LAYERS = (0, 2, 4, 6, 7)
# Keys the reward does not use: the contrastive projections and a buffer rebuilt from the config.
UNUSED = (
    re.compile(r"blip\.(vision_proj|text_proj)\.(weight|bias)"),
    re.compile(r"blip\.text_encoder\.embeddings\.position_ids"),
)
VISION_NAMES = (  # (ImageReward's blip.visual_encoder.<name>, ours: vision.<name>)
    (r"cls_token", r"embeddings.class_embedding"),
    (r"pos_embed", r"embeddings.position_embedding"),
    (r"patch_embed\.proj\.(weight|bias)", r"embeddings.patch_embedding.\1"),
    (r"blocks\.(\d+)\.norm1\.(weight|bias)", r"encoder.layers.\1.layer_norm1.\2"),
    (r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)", r"encoder.layers.\1.self_attn.qkv.\2"),
    (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"encoder.layers.\1.self_attn.projection.\2"),
    (r"blocks\.(\d+)\.norm2\.(weight|bias)", r"encoder.layers.\1.layer_norm2.\2"),
    (r"blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", r"encoder.layers.\1.mlp.\2.\3"),
    (r"norm\.(weight|bias)", r"post_layernorm.\1"),
)
# timm's ViT in BLIP uses LayerNorm(eps=1e-6); transformers' BLIP configs say 1e-5.
VIT_LAYER_NORM_EPS = 1e-6


def _rename(key: str) -> str | None:
    if key.startswith("blip.text_encoder."):
        return "text." + key.removeprefix("blip.text_encoder.")
    if key.startswith("blip.visual_encoder."):
        name = key.removeprefix("blip.visual_encoder.")
        for pattern, target in VISION_NAMES:
            if re.fullmatch(pattern, name):
                return "vision." + re.sub(pattern, target, name)
    return None


def collapse_linear_head(state: dict, prefix: str = "mlp.layers.") -> tuple[torch.Tensor, torch.Tensor]:
    """(weight 1 x D, bias 1) of the single Linear equal to ImageReward's chain of Linear layers."""
    weight, bias = None, None
    for i in HEAD_LAYERS:
        w, b = state[f"{prefix}{i}.weight"].double(), state[f"{prefix}{i}.bias"].double()
        weight, bias = (w, b) if weight is None else (w @ weight, w @ bias + b)
    dtype = state[f"{prefix}{HEAD_LAYERS[0]}.weight"].dtype
    return weight.to(dtype), bias.to(dtype)


def imagereward_state_dict_to_ours(state: dict) -> dict:
    """An ImageReward-format state dict (a leading `module.` of DDP is dropped) in our BLIP RewardModel's names:
    `vision.*`, `text.*` and `head.0.*` (a RewardModel with `head_hidden=()`). Unknown keys are an error."""
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    head_keys = {f"mlp.layers.{i}.{p}" for i in HEAD_LAYERS for p in ("weight", "bias")}
    missing = sorted(head_keys - set(state))
    if missing or not any(k.startswith("blip.visual_encoder.") for k in state):
        example = (missing or ["blip.visual_encoder.*"])[:3]
        raise ValueError(
            f"not an ImageReward-format state dict: expected blip.visual_encoder.*, blip.text_encoder.* and "
            f"mlp.layers.{{{','.join(map(str, HEAD_LAYERS))}}}.*; missing e.g. {example}"
        )
    ours, unknown = {}, []
    for key, value in state.items():
        if key in head_keys or any(p.fullmatch(key) for p in UNUSED):
            continue
        name = _rename(key)
        if name is None:
            unknown.append(key)
        else:
            ours[name] = value
    if unknown:
        raise ValueError(f"{len(unknown)} keys of the ImageReward state dict have no place here, e.g. {unknown[:5]}")
    ours["head.0.weight"], ours["head.0.bias"] = collapse_linear_head(state)
    return ours


def from_imagereward(
    checkpoint: str | Path, backbone_path: str, aspect: str | None = None, image_size: int | None = None
):
    """A BLIP RewardModel whose towers and head are an ImageReward-format checkpoint's. `backbone_path` (a hub id
    or folder of a transformers BLIP, e.g. Salesforce/blip-itm-large-coco, ViT-L like ImageReward) supplies the
    architecture and tokenizer; its weights are not read. The image size is the checkpoint's own (224 for
    ImageReward), or `image_size` with the position embedding resampled; rewards are normalised with
    ImageReward's mean and std until training measures its own."""
    from transformers import AutoTokenizer, BlipConfig

    from reward_models.backbones import IMAGE_MEAN, IMAGE_STD
    from reward_models.model import RewardModel

    path = Path(checkpoint)
    if not path.is_file():
        raise ValueError(
            f"ImageReward checkpoint not found: {path} (ImageReward.pt from huggingface.co/THUDM/ImageReward)"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    ours = imagereward_state_dict_to_ours(state)
    config = BlipConfig.from_pretrained(backbone_path).to_dict()
    vision = config["vision_config"]
    positions = ours["vision.embeddings.position_embedding"].shape[1] - 1  # the class token comes first
    vision["image_size"] = round(positions**0.5) * vision["patch_size"]
    vision["layer_norm_eps"] = VIT_LAYER_NORM_EPS
    model = RewardModel(
        backbone="blip", backbone_config=config, aspect=aspect, image_size=vision["image_size"],
        image_mean=IMAGE_MEAN["blip"], image_std=IMAGE_STD["blip"], max_text_length=35, head_hidden=(),
        reward_mean=IMAGEREWARD_MEAN, reward_std=IMAGEREWARD_STD,
    )  # fmt: skip
    try:
        model.load_state_dict(ours)
    except RuntimeError as e:
        raise ValueError(
            f"{path} does not fit the BLIP of {backbone_path} (ImageReward is BLIP ViT-L with a BERT-base text "
            f"encoder: use e.g. Salesforce/blip-itm-large-coco): {' '.join(str(e).split())[:400]}"
        ) from None
    model.tokenizer = AutoTokenizer.from_pretrained(backbone_path)
    return model.resized(image_size) if image_size else model

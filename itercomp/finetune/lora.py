"""LoRA through peft on any denoiser: add adapters, save them (diffusers' format where the pipeline has one),
load them back, and merge them into the base weights so the result is a plain pipeline again."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer

from itercomp.errors import ItercompError

ADAPTER_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"


def add_lora(denoiser: torch.nn.Module, rank: int, alpha: float | None, targets: tuple[str, ...]) -> LoraConfig:
    """Freeze `denoiser` and give the `targets` modules trainable LoRA adapters (B starts at zero, so the
    model is unchanged until the first step)."""
    config = LoraConfig(r=rank, lora_alpha=alpha or rank, init_lora_weights="gaussian", target_modules=list(targets))
    denoiser.requires_grad_(False)
    try:
        if hasattr(denoiser, "add_adapter"):  # diffusers models: also registers peft_config for their loaders
            denoiser.add_adapter(config)
        else:
            inject_adapter_in_model(config, denoiser)
    except ValueError as e:
        names = sorted({n.rsplit(".", 1)[-1] for n, m in denoiser.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ItercompError(
            f"lora_target_modules={list(targets)} found no layer in {type(denoiser).__name__} ({e}); "
            f"its linear layers end in: {', '.join(names[:20])}"
        ) from None
    return config


def lora_state_dict(denoiser: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(denoiser).items()}


def save_lora(pipe, denoiser_name: str, config: LoraConfig, folder: Path) -> None:
    """Pipelines with diffusers' LoRA loaders get `save_lora_weights` (so `pipe.load_lora_weights(folder)` works
    for users); any other pipeline gets peft's adapter_model.safetensors + adapter_config.json."""
    folder = Path(folder)
    state = lora_state_dict(getattr(pipe, denoiser_name))
    if hasattr(type(pipe), "save_lora_weights"):
        from diffusers.utils import convert_state_dict_to_diffusers

        type(pipe).save_lora_weights(
            folder,
            **{
                f"{denoiser_name}_lora_layers": convert_state_dict_to_diffusers(state),
                f"{denoiser_name}_lora_adapter_metadata": config.to_dict(),
            },
        )
        return
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, folder / ADAPTER_FILE)
    (folder / CONFIG_FILE).write_text(json.dumps(_jsonable(config.to_dict()), indent=2))


def load_lora(pipe, denoiser_name: str, folder: Path) -> None:
    """Load adapters written by save_lora into `pipe` (unmerged; merge_lora fuses them)."""
    folder = Path(folder)
    if (folder / CONFIG_FILE).is_file():
        from safetensors.torch import load_file

        config = LoraConfig(**json.loads((folder / CONFIG_FILE).read_text()))
        denoiser = getattr(pipe, denoiser_name)
        inject_adapter_in_model(config, denoiser)
        result = set_peft_model_state_dict(denoiser, load_file(folder / ADAPTER_FILE))
        if getattr(result, "unexpected_keys", None):
            raise ItercompError(f"{folder}: LoRA weights {result.unexpected_keys[:3]} do not fit this model")
        return
    if not hasattr(pipe, "load_lora_weights"):
        raise ItercompError(f"{folder} has no {CONFIG_FILE}, and {type(pipe).__name__} has no diffusers LoRA loader")
    pipe.load_lora_weights(folder)


def merge_lora(denoiser: torch.nn.Module) -> int:
    """Fuse every LoRA layer into its base layer and put the base layer back: the model's state dict then has
    its original keys, and save_pretrained writes an ordinary model. Returns the number of merged layers."""
    merged = 0
    for name, module in list(denoiser.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = denoiser.get_submodule(parent_name) if parent_name else denoiser
            setattr(parent, child, module.get_base_layer())
            merged += 1
    for attr in ("peft_config", "_hf_peft_config_loaded"):
        if hasattr(denoiser, attr):
            delattr(denoiser, attr) if attr == "peft_config" else setattr(denoiser, attr, False)
    return merged


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)

"""Any diffusers `DiffusionPipeline` as a gallery member: by hub id or local folder, loaded once per run.

    - name: sdxl
      type: diffusers
      model: stabilityai/stable-diffusion-xl-base-1.0   # hub id, or a folder ('./' and '../' are relative to the YAML)
      pipeline: StableDiffusionXLPipeline               # 'auto' (model_index.json decides), a diffusers class, or an import path
      dtype: float16
      load: {variant: fp16}                             # extra from_pretrained arguments
      scheduler: {class: EulerDiscreteScheduler, config: {timestep_spacing: trailing}}
      call: {num_inference_steps: 50, guidance_scale: 5.0, height: 1024, width: 1024}
      batch_size: 4

Every image gets its own `torch.Generator` seeded with the image's seed, so an image does not depend on which
batch it was drawn in (diffusers draws each latent from its own generator when given a list).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from gallery.base import Context, Generator
from itercomp.errors import ItercompError

DTYPES = ("float32", "float16", "bfloat16")
# Arguments the gallery sets itself; a spec that sets them would silently change what an image id means.
RESERVED_CALL_ARGS = ("prompt", "generator", "output_type", "num_images_per_prompt", "return_dict")


@dataclass
class DiffusersConfig:
    model: str  # hub id or folder; './x' and '../x' resolve against the gallery YAML's folder
    pipeline: str = "auto"  # 'auto', a diffusers pipeline class name, or 'package.module.Class'
    dtype: str = "float32"
    device: str = "auto"  # 'auto' = the accelerator's device for this process
    load: dict = field(default_factory=dict)  # extra from_pretrained kwargs: variant, revision, use_safetensors
    scheduler: dict | None = None  # {"class": "<diffusers scheduler>", "config": {overrides}}
    call: dict = field(default_factory=dict)  # pipeline call kwargs: steps, guidance, size, negative prompt
    batch_size: int = 4
    seeding: Literal["per_image", "per_batch"] = "per_image"  # per_batch: one generator seeded by the first seed
    strict_call: bool = True  # false: allow call arguments that only a pipeline's **kwargs takes

    def __post_init__(self):
        if not self.model.strip():
            raise ValueError("field 'model' is empty; give a hub id or a folder")
        if self.dtype not in DTYPES:
            raise ValueError(f"field 'dtype' must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.batch_size < 1:
            raise ValueError(f"field 'batch_size' must be >= 1, got {self.batch_size}")
        reserved = [k for k in self.call if k in RESERVED_CALL_ARGS]
        if reserved:
            raise ValueError(f"field 'call' must not set {reserved[0]!r}: the gallery sets it per image")
        if self.scheduler is not None:
            unknown = sorted(set(self.scheduler) - {"class", "config"})
            if unknown or "class" not in self.scheduler:
                raise ValueError("field 'scheduler' must be {class: <diffusers scheduler class>, config: {...}}")
            if not isinstance(self.scheduler.get("config", {}), dict):
                raise ValueError("field 'scheduler.config' must be a mapping of config overrides")


def is_local(model: str) -> bool:
    return model.startswith(("./", "../", "/", "~"))


@contextmanager
def _quiet_transformers():
    """diffusers' lazy imports warn about torchvision-less image processors that no gallery member uses."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


def _diffusers_attr(name: str):
    with _quiet_transformers():
        import diffusers

        return getattr(diffusers, name, None)


def resolve_class(path: str):
    """A class from a diffusers name ('StableDiffusionXLPipeline') or an import path ('pkg.module.Class')."""
    if "." not in path:
        cls = _diffusers_attr(path)
        if cls is None:
            raise ValueError(f"diffusers has no class {path!r}; check the spelling or give a full import path")
        return cls
    module_name, _, attr = path.replace(":", ".").rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot import {path!r}: {e}") from None


def check_kwargs(func, kwargs: dict, what: str, strict: bool = True) -> None:
    """Names in `kwargs` that `func` does not name are errors. diffusers pipelines take **kwargs only for
    deprecated callbacks, so a typo would pass silently without `strict`."""
    params = inspect.signature(func).parameters
    if not strict and any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    named = [n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and n != "self"]
    unknown = [k for k in kwargs if k not in named]
    if unknown:
        allowed = [n for n in named if n not in RESERVED_CALL_ARGS]
        raise ValueError(f"{what} has no argument {unknown[0]!r}; it takes {', '.join(allowed)}")


class DiffusersGenerator(Generator):
    Config = DiffusersConfig
    type_name = "diffusers"

    @staticmethod
    def validate(config: DiffusersConfig, context: Context) -> None:
        """Checks that need diffusers but no weights: class names, call and scheduler arguments."""
        if config.pipeline != "auto" and "." not in config.pipeline:
            pipeline_cls = resolve_class(config.pipeline)
            check_kwargs(
                pipeline_cls.__call__, config.call, f"field 'call': {config.pipeline}.__call__", config.strict_call
            )
        if config.scheduler is not None:
            name = config.scheduler["class"]
            scheduler_cls = _diffusers_attr(name)
            if scheduler_cls is None or not name.endswith("Scheduler"):
                raise ValueError(f"field 'scheduler.class': diffusers has no scheduler {name!r}")
            check_kwargs(
                scheduler_cls.__init__, config.scheduler.get("config", {}), f"field 'scheduler.config': {name}"
            )

    def __init__(self, name, config: DiffusersConfig, context: Context | None = None):
        super().__init__(name, config, context)
        self.pipe = None
        self.device = None

    @property
    def model_path(self) -> str:
        model = self.config.model
        if not is_local(model):
            return model
        path = Path(model).expanduser()
        if not path.is_absolute() and self.context.root is not None:
            path = self.context.root / path
        return str(path.resolve())

    def unavailable(self) -> str | None:
        if is_local(self.config.model) and not (Path(self.model_path) / "model_index.json").is_file():
            return f"no pipeline at {self.model_path} (model_index.json missing); train or download it first"
        if self.config.pipeline != "auto":
            try:
                resolve_class(self.config.pipeline)
            except ValueError as e:
                return str(e)
        return None

    def load(self, device=None) -> None:
        if self.pipe is not None:
            return
        import torch

        reason = self.unavailable()
        if reason:
            raise ItercompError(f"gallery member {self.name!r}: {reason}")
        pipeline_cls = resolve_class("DiffusionPipeline" if self.config.pipeline == "auto" else self.config.pipeline)
        kwargs = {_dtype_argument(): getattr(torch, self.config.dtype), **self.config.load}
        try:
            with _quiet_transformers():
                pipe = pipeline_cls.from_pretrained(self.model_path, **kwargs)
        except OSError as e:
            raise ItercompError(f"gallery member {self.name!r}: cannot load {self.config.model}: {e}") from None
        try:  # with pipeline 'auto' the class is known only now
            check_kwargs(
                type(pipe).__call__,
                self.config.call,
                f"field 'call': {type(pipe).__name__}.__call__",
                self.config.strict_call,
            )
        except ValueError as e:
            raise ItercompError(f"gallery member {self.name!r}: {e}") from None
        if self.config.scheduler is not None:
            scheduler_cls = resolve_class(self.config.scheduler["class"])
            pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config, **self.config.scheduler.get("config", {}))
        self.device = torch.device(
            device if self.config.device == "auto" and device is not None else _auto(self.config.device)
        )
        pipe = pipe.to(self.device)
        if hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)  # the gallery shows one bar for the whole run
        self.pipe = pipe
        self.loaded = True

    def unload(self) -> None:
        self.pipe = None
        self.loaded = False
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    def generate(self, prompts: Sequence[str], seeds: Sequence[int]):
        import torch

        if self.pipe is None:
            self.load()
        if self.config.seeding == "per_image":
            generator = [torch.Generator(self.device).manual_seed(int(s)) for s in seeds]
        else:
            generator = torch.Generator(self.device).manual_seed(int(seeds[0]))
        with torch.inference_mode():
            output = self.pipe(list(prompts), generator=generator, output_type="np", **self.config.call)
        images = to_uint8_batch(output.images)
        meta = {
            "model": self.config.model,
            "pipeline": type(self.pipe).__name__,
            "scheduler": type(self.pipe.scheduler).__name__,
            "dtype": self.config.dtype,
            **{k: v for k, v in self.config.call.items() if isinstance(v, (int, float, str, bool, type(None)))},
        }
        return [(image, dict(meta)) for image in images]


def _dtype_argument() -> str:
    """diffusers renamed `torch_dtype` to `dtype` (and warns about the old name); older releases know only it."""
    from diffusers.pipelines import pipeline_utils

    return "dtype" if hasattr(pipeline_utils, "_resolve_dtype") else "torch_dtype"


def _auto(device: str):
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def to_uint8_batch(images) -> list[np.ndarray]:
    """Pipeline output (float arrays in [0, 1], tensors or PIL images) as H x W x 3 uint8 arrays."""
    if hasattr(images, "detach"):
        images = images.detach().float().cpu().numpy()
        if images.ndim == 4 and images.shape[1] in (1, 3):
            images = images.transpose(0, 2, 3, 1)
    out = []
    for image in images:
        if hasattr(image, "convert"):
            out.append(np.asarray(image.convert("RGB")))
            continue
        array = np.asarray(image)
        if array.dtype != np.uint8:
            array = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        out.append(array)
    return out

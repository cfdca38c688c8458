"""One small protocol over pipeline families: exactly what the feedback loop needs from a pipeline.

    adapter = make_adapter(pipe)                       # chosen by the pipeline's class
    cond = adapter.encode(prompts, guidance=True)       # text encoders run once per batch, without gradient
    latents = adapter.initial_latents(generators)       # one torch.Generator per image
    adapter.set_timesteps(num_steps)
    for i in range(num_steps):
        output = adapter.predict(latents, i, cond, guidance_scale)   # the denoiser's own parameterisation
        latents = adapter.step(output, i, latents, generators)       # or, at the scored step:
        x0 = adapter.x0(latents, output, i)
    images = adapter.decode(x0)                          # B x 3 x H x W in [0, 1], differentiable
    loss = adapter.pretrain_loss(images, prompts, generator)   # the denoising loss, for the regulariser

Families: the shapes `ShapesDiTPipeline` (rectified flow over pixels or latents, velocity or x0 output),
Stable Diffusion and SDXL (UNet; epsilon, v or sample prediction per the scheduler config), and the flow-matching
transformers SD3, Flux (packed latents) and Sana. `adapter.model` is what gets called: the trainer points it at
the accelerate-wrapped denoiser so that data-parallel gradients synchronise.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor

from itercomp.errors import ItercompError
from itercomp.finetune.prediction import vp_noisy, vp_target, vp_x0, x0_from_flow
from itercomp.models.training import (
    flow_interpolate,
    flow_loss,
    output_to_velocity,
    output_to_x0,
    sample_timesteps,
)

# peft's usual LoRA targets in diffusers attention blocks (UNet and the DiT families alike).
ATTENTION_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")


@dataclass
class Conditioning:
    """Prompt encodings of one batch. `batched` values (tensors or tuples of tensors) have a batch axis: the
    prompts first, then the null prompts when encoded for guidance; `shared` values serve the whole batch."""

    batched: dict[str, Any]
    shared: dict[str, Any] = field(default_factory=dict)
    guided: bool = False

    def positive(self) -> Conditioning:
        if not self.guided:
            return self

        def first_half(v):
            return tuple(first_half(x) for x in v) if isinstance(v, tuple) else v[: v.shape[0] // 2]

        return Conditioning({k: first_half(v) for k, v in self.batched.items()}, self.shared, guided=False)

    def __getitem__(self, key: str):
        return self.batched[key] if key in self.batched else self.shared[key]


def _to_pixels(images: torch.Tensor) -> torch.Tensor:
    return images * 2 - 1


def _to_unit(pixels: torch.Tensor) -> torch.Tensor:
    return (pixels / 2 + 0.5).clamp(0, 1)


def _mse(output: torch.Tensor, target: torch.Tensor, per_image: bool) -> torch.Tensor:
    """The mean squared error, over everything or per image."""
    error = (output.float() - target.float()).square()
    return error.flatten(1).mean(1) if per_image else error.mean()


def _logit_normal(batch: int, generator: torch.Generator, device) -> torch.Tensor:
    """Flow-matching training times in (0, 1), weighted towards the middle (SD3's logit-normal)."""
    return sample_timesteps(batch, generator).to(device)


class FeedbackAdapter(ABC):
    """The base of every family; subclasses fill in encode / initial_latents / denoise / step / x0 / decode /
    pretrain_loss. Classifier-free guidance is shared: one model call on [latents; latents] with the
    [prompts; null prompts] conditioning."""

    denoiser_name = "transformer"
    default_lora_targets: tuple[str, ...] = ATTENTION_PROJECTIONS
    fixed_length_text = True  # encodings padded to a fixed length, so one prompt's row fits any batch

    def __init__(self, pipe, resolution: int | None = None, max_sequence_length: int | None = None):
        self.text_cache = None
        self.pipe = pipe
        self.model = self.denoiser
        self.max_sequence_length = max_sequence_length
        self.resolution = resolution or self.default_resolution()
        self.timesteps: torch.Tensor | None = None

    # ---- what the trainer reads -----------------------------------------------------------------------
    @property
    def denoiser(self) -> torch.nn.Module:
        return getattr(self.pipe, self.denoiser_name)

    @property
    def scheduler(self):
        return self.pipe.scheduler

    @property
    def device(self) -> torch.device:
        return self.denoiser.device

    @property
    def dtype(self) -> torch.dtype:
        return self.denoiser.dtype

    def frozen_modules(self) -> dict[str, torch.nn.Module]:
        """Every other module of the pipeline (text encoders, VAE): never trained, never given gradients."""
        return {
            name: module
            for name, module in self.pipe.components.items()
            if isinstance(module, torch.nn.Module) and name != self.denoiser_name
        }

    def default_resolution(self) -> int:
        return self.pipe.default_sample_size * self.pipe.vae_scale_factor

    # ---- the sampling interface -----------------------------------------------------------------------
    def set_timesteps(self, num_steps: int) -> None:
        self.scheduler.set_timesteps(num_steps, device=self.device)
        self._begin()

    def _begin(self) -> None:
        self.timesteps = self.scheduler.timesteps
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(0)  # every run starts at step 0; no timestep lookup

    def predict(self, latents: torch.Tensor, i: int, cond: Conditioning, guidance_scale: float) -> torch.Tensor:
        if guidance_scale == 1.0 or not cond.guided:
            return self.denoise(latents, i, cond.positive())
        out = self.denoise(torch.cat([latents, latents]), i, cond)
        positive, null = out.chunk(2)
        return null + guidance_scale * (positive - null)

    def step(self, output: torch.Tensor, i: int, latents: torch.Tensor, generator=None) -> torch.Tensor:
        # As diffusers' pipelines do (`prepare_extra_step_kwargs`): only schedulers whose step draws noise take one.
        extra = {"generator": generator} if "generator" in inspect.signature(self.scheduler.step).parameters else {}
        return self.scheduler.step(output, self.timesteps[i], latents, return_dict=False, **extra)[0]

    @abstractmethod
    def initial_latents(self, generators: list[torch.Generator]) -> torch.Tensor:
        """Noise for len(generators) images, one generator each, scaled as the scheduler starts."""

    def encode(self, prompts: list[str], guidance: bool) -> Conditioning:
        """The prompts' encodings (no gradient); with `guidance` the null prompts follow the prompts. Through the
        text cache when the trainer set one (`use_text_cache`), else one pass of the text encoders."""
        if self.text_cache is not None:
            return self.text_cache.encode(prompts, guidance)
        return self.encode_batch(prompts, guidance)

    def use_text_cache(self, limit_mb: float) -> None:
        """Keep each prompt's encoding (frozen text encoders: it never changes), up to `limit_mb` MiB on the CPU.
        Families whose encodings are padded to the batch (the shapes LM) keep encoding per batch."""
        from itercomp.finetune.text_cache import TextCache

        if limit_mb > 0 and self.fixed_length_text:
            self.text_cache = TextCache(self.encode_batch, lambda: self.device, limit_mb)

    @abstractmethod
    def encode_batch(self, prompts: list[str], guidance: bool) -> Conditioning:
        """Run the text encoders once (no gradient); with `guidance` the null prompts follow the prompts."""

    @abstractmethod
    def denoise(self, latents: torch.Tensor, i: int, cond: Conditioning) -> torch.Tensor:
        """One call of `self.model` at sampling step i, in the model's own parameterisation."""

    @abstractmethod
    def x0(self, latents: torch.Tensor, output: torch.Tensor, i: int) -> torch.Tensor:
        """The clean-latent estimate at step i from the (guided) output."""

    @abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents to images B x 3 x H x W in [0, 1], differentiable."""

    @abstractmethod
    def pretrain_loss(
        self, images: torch.Tensor, prompts: list[str], generator: torch.Generator, per_image: bool = False
    ) -> torch.Tensor:
        """The family's denoising loss on (image in [0, 1], prompt) pairs: the regulariser, select mode's loss,
        and with `per_image` one error per image (Diffusion-DPO). The generator draws the times and the noise, so
        two calls with equally seeded generators noise their images alike."""

    def sigma(self, i: int) -> torch.Tensor:
        """The noise level of sampling step i (step num_steps: 0), for rectified-flow families (GRPO's SDE)."""
        raise ItercompError(
            f"{type(self.pipe).__name__} is not a rectified-flow pipeline; grad_mode=grpo needs one (SD3, Flux, "
            "Sana, the shapes DiT): use grad_mode=dpo, select or refl"
        )

    def _noise(self, shape, generator) -> torch.Tensor:
        return randn_tensor(shape, generator=generator, device=self.device, dtype=self.dtype)


# ---- the shapes world's LLM-conditioned DiT ---------------------------------------------------------------


class ShapesAdapter(FeedbackAdapter):
    default_lora_targets = ("qkv", "out", "text_kv")
    fixed_length_text = False  # the language model's states are padded to the batch's longest prompt

    def default_resolution(self) -> int:
        scale = 2 ** (len(self.pipe.vae.config.block_out_channels) - 1) if self.pipe.vae is not None else 1
        return self.denoiser.config.sample_size * scale

    def __init__(self, pipe, resolution=None, max_sequence_length=None):
        super().__init__(pipe, None, max_sequence_length)
        if resolution is not None and resolution != self.resolution:
            raise ItercompError(
                f"resolution={resolution}: this ShapesDiTPipeline makes {self.resolution}px images only "
                "(its position table is fixed); leave resolution unset"
            )

    @torch.no_grad()
    def encode_batch(self, prompts, guidance):
        hidden_states, mask = self.pipe.encode_prompt(list(prompts), guidance)
        return Conditioning({"hidden_states": hidden_states, "mask": mask}, guided=guidance)

    def initial_latents(self, generators):
        cfg = self.denoiser.config
        return self._noise((len(generators), cfg.in_channels, cfg.sample_size, cfg.sample_size), generators)

    def sigma(self, i: int) -> torch.Tensor:
        return self.scheduler.sigmas[i].to(self.device)

    def denoise(self, latents, i, cond):
        t = self.timesteps[i].expand(latents.shape[0])
        return self.model(latents, t, cond["hidden_states"], cond["mask"])

    def step(self, output, i, latents, generator=None):
        velocity = output_to_velocity(output, latents, self.sigma(i), self.denoiser.config.prediction_type)
        return super().step(velocity, i, latents, generator)

    def x0(self, latents, output, i):
        return output_to_x0(output, latents, self.sigma(i), self.denoiser.config.prediction_type)

    def decode(self, latents):
        return self.pipe.decode(latents)

    def pretrain_loss(self, images, prompts, generator, per_image=False):
        x0 = _to_pixels(images.to(self.device, self.dtype))
        if self.pipe.vae is not None:
            with torch.no_grad():
                x0 = self.pipe.vae.encode(x0).latent_dist.sample(generator) * self.pipe.vae.config.scaling_factor
        cond = self.encode(prompts, guidance=False)
        t = _logit_normal(x0.shape[0], generator, self.device)
        noise = self._noise(x0.shape, generator)
        output = self.model(flow_interpolate(x0, noise, t), t * 1000, cond["hidden_states"], cond["mask"])
        return flow_loss(output, x0, noise, t, self.denoiser.config.prediction_type, per_image=per_image)


# ---- Stable Diffusion / SDXL: a UNet on variance-preserving latents ----------------------------------------


class StableDiffusionAdapter(FeedbackAdapter):
    denoiser_name = "unet"

    def default_resolution(self) -> int:
        return self.denoiser.config.sample_size * self.pipe.vae_scale_factor

    @property
    def prediction_type(self) -> str:
        kind = self.scheduler.config.get("prediction_type", "epsilon")
        if kind not in ("epsilon", "v_prediction", "sample"):
            raise ItercompError(
                f"scheduler prediction_type={kind!r} is not supported; use epsilon, v_prediction or sample"
            )
        return kind

    @torch.no_grad()
    def encode_batch(self, prompts, guidance):
        positive, null = self.pipe.encode_prompt(list(prompts), self.device, 1, guidance, negative_prompt=None)[:2]
        embeds = torch.cat([positive, null]) if guidance else positive
        return Conditioning({"encoder_hidden_states": embeds}, guided=guidance)

    def initial_latents(self, generators):
        size = self.resolution // self.pipe.vae_scale_factor
        shape = (len(generators), self.denoiser.config.in_channels, size, size)
        return self._noise(shape, generators) * self.scheduler.init_noise_sigma

    def _added(self, cond: Conditioning) -> dict | None:
        return None

    def denoise(self, latents, i, cond):
        t = self.timesteps[i]
        model_input = self.scheduler.scale_model_input(latents, t)
        return self.model(
            model_input,
            t,
            encoder_hidden_states=cond["encoder_hidden_states"],
            added_cond_kwargs=self._added(cond),
            return_dict=False,
        )[0]

    def alpha_bar(self, i: int) -> torch.Tensor:
        """abar at step i. Schedulers that sample in sigma space (Euler, DPM-Solver, ...) keep per-step sigmas,
        sigma^2 = (1 - abar) / abar, which also covers their interpolated and Karras timesteps; the others
        (DDIM, DDPM) index alphas_cumprod by the integer timestep."""
        sigmas = getattr(self.scheduler, "sigmas", None)
        if sigmas is not None and len(sigmas) == len(self.timesteps) + 1:
            sigma = sigmas[i].float()
            return (1 / (1 + sigma**2)).to(self.device)
        return self.scheduler.alphas_cumprod[int(self.timesteps[i])].to(self.device)

    def x0(self, latents, output, i):
        # the model sees scale_model_input(latents): the VP sample x_t, whatever space the scheduler steps in
        x_t = self.scheduler.scale_model_input(latents, self.timesteps[i])
        return vp_x0(x_t, output, self.alpha_bar(i), self.prediction_type)

    def decode(self, latents):
        vae = self.pipe.vae
        return _to_unit(vae.decode((latents / vae.config.scaling_factor).to(vae.dtype), return_dict=False)[0])

    def pretrain_loss(self, images, prompts, generator, per_image=False):
        vae = self.pipe.vae
        pixels = _to_pixels(images.to(self.device, vae.dtype))
        with torch.no_grad():
            x0 = vae.encode(pixels).latent_dist.sample(generator) * vae.config.scaling_factor
        x0 = x0.to(self.dtype)
        cond = self.encode(prompts, guidance=False)
        steps = self.scheduler.config.num_train_timesteps
        t = torch.randint(0, steps, (x0.shape[0],), generator=generator).to(self.device)
        alpha_bar = self.scheduler.alphas_cumprod.to(self.device)[t]
        noise = self._noise(x0.shape, generator)
        output = self.model(
            vp_noisy(x0, noise, alpha_bar),
            t,
            encoder_hidden_states=cond["encoder_hidden_states"],
            added_cond_kwargs=self._added(cond),
            return_dict=False,
        )[0]
        return _mse(output, vp_target(x0, noise, alpha_bar, self.prediction_type), per_image)


class StableDiffusionXLAdapter(StableDiffusionAdapter):
    def default_resolution(self) -> int:
        return self.pipe.default_sample_size * self.pipe.vae_scale_factor

    @torch.no_grad()
    def encode_batch(self, prompts, guidance):
        pipe = self.pipe
        positive, null, pooled, null_pooled = pipe.encode_prompt(
            list(prompts), device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=guidance
        )
        projection = pipe.text_encoder_2.config.projection_dim if pipe.text_encoder_2 is not None else pooled.shape[-1]
        size = (self.resolution, self.resolution)
        # SDXL's micro-conditioning: original size, crop (0, 0), target size -- the uncropped full-size image
        time_ids = pipe._get_add_time_ids(
            size, (0, 0), size, dtype=positive.dtype, text_encoder_projection_dim=projection
        )
        time_ids = time_ids.to(self.device).repeat(len(prompts), 1)
        if guidance:
            positive, pooled, time_ids = (
                torch.cat([positive, null]),
                torch.cat([pooled, null_pooled]),
                torch.cat([time_ids, time_ids]),
            )
        batched = {"encoder_hidden_states": positive, "text_embeds": pooled, "time_ids": time_ids}
        return Conditioning(batched, guided=guidance)

    def _added(self, cond):
        return {"text_embeds": cond["text_embeds"], "time_ids": cond["time_ids"]}


# ---- flow-matching transformers: SD3, Flux, Sana -----------------------------------------------------------


class FlowAdapter(FeedbackAdapter):
    """x_t = (1 - sigma) x0 + sigma eps; the transformer predicts the velocity eps - x0."""

    def sigma(self, i: int) -> torch.Tensor:
        return self.scheduler.sigmas[i].to(self.device)

    def x0(self, latents, output, i):
        return x0_from_flow(latents, output, self.sigma(i))

    def _vae_encode(self, pixels: torch.Tensor, generator) -> torch.Tensor:
        vae = self.pipe.vae
        shift = vae.config.get("shift_factor") or 0.0
        return (vae.encode(pixels).latent_dist.sample(generator) - shift) * vae.config.scaling_factor

    def _vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        shift = vae.config.get("shift_factor") or 0.0
        return vae.decode((latents / vae.config.scaling_factor + shift).to(vae.dtype), return_dict=False)[0]

    def decode(self, latents):
        return _to_unit(self._vae_decode(latents))

    def _model_timestep(self, t: torch.Tensor, batch: int) -> torch.Tensor:
        return t.expand(batch)

    @abstractmethod
    def _forward(self, latents, timestep, cond):
        """The transformer call with a model-ready timestep."""

    def denoise(self, latents, i, cond):
        return self._forward(latents, self._model_timestep(self.timesteps[i], latents.shape[0]), cond)

    def _pack(self, latents):
        return latents

    def pretrain_loss(self, images, prompts, generator, per_image=False):
        pixels = _to_pixels(images.to(self.device, self.pipe.vae.dtype))
        with torch.no_grad():
            x0 = self._pack(self._vae_encode(pixels, generator).to(self.dtype))
        cond = self.encode(prompts, guidance=False)
        sigma = _logit_normal(x0.shape[0], generator, self.device)
        noise = self._noise(x0.shape, generator)
        timestep = self._model_timestep(sigma * self.scheduler.config.num_train_timesteps, x0.shape[0])
        output = self._forward(flow_interpolate(x0, noise, sigma), timestep, cond)
        return _mse(output, noise - x0, per_image)


class StableDiffusion3Adapter(FlowAdapter):
    @torch.no_grad()
    def encode_batch(self, prompts, guidance):
        prompts = list(prompts)
        positive, null, pooled, null_pooled = self.pipe.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            prompt_3=None,
            device=self.device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=guidance,
            max_sequence_length=self.max_sequence_length or 256,
        )
        if guidance:
            positive, pooled = torch.cat([positive, null]), torch.cat([pooled, null_pooled])
        return Conditioning({"encoder_hidden_states": positive, "pooled_projections": pooled}, guided=guidance)

    def initial_latents(self, generators):
        channels = self.denoiser.config.in_channels
        res = self.resolution
        return self.pipe.prepare_latents(len(generators), channels, res, res, self.dtype, self.device, generators)

    def set_timesteps(self, num_steps):
        extra = {}
        if self.scheduler.config.get("use_dynamic_shifting"):
            from diffusers.pipelines.flux.pipeline_flux import calculate_shift

            size = self.resolution // self.pipe.vae_scale_factor // self.denoiser.config.patch_size
            extra["mu"] = calculate_shift(
                size * size,
                self.scheduler.config.get("base_image_seq_len", 256),
                self.scheduler.config.get("max_image_seq_len", 4096),
                self.scheduler.config.get("base_shift", 0.5),
                self.scheduler.config.get("max_shift", 1.16),
            )
        self.scheduler.set_timesteps(num_steps, device=self.device, **extra)
        self._begin()

    def _forward(self, latents, timestep, cond):
        return self.model(
            hidden_states=latents,
            timestep=timestep,
            encoder_hidden_states=cond["encoder_hidden_states"],
            pooled_projections=cond["pooled_projections"],
            return_dict=False,
        )[0]


class FluxAdapter(FlowAdapter):
    """Flux works on packed latents (2 x 2 patches as tokens), reuses the pipeline's pack/unpack helpers, and
    takes guidance either as an embedding (guidance-distilled models such as FLUX.1-dev) or, for models without
    one, as true classifier-free guidance with the empty prompt."""

    def __init__(self, pipe, resolution=None, max_sequence_length=None):
        super().__init__(pipe, resolution, max_sequence_length)
        self._latent_size = 2 * (self.resolution // (pipe.vae_scale_factor * 2))
        half = self._latent_size // 2
        self._image_ids = pipe._prepare_latent_image_ids(1, half, half, self.device, self.dtype)
        self._guidance = 1.0  # the embedded guidance of the last prediction; the regulariser reuses it

    @property
    def embedded_guidance(self) -> bool:
        return bool(self.denoiser.config.get("guidance_embeds"))

    @torch.no_grad()
    def encode_batch(self, prompts, guidance):
        prompts = list(prompts)
        guidance = guidance and not self.embedded_guidance
        length = self.max_sequence_length or 512
        kwargs = dict(prompt_2=None, device=self.device, num_images_per_prompt=1, max_sequence_length=length)
        embeds, pooled, text_ids = self.pipe.encode_prompt(prompt=prompts, **kwargs)
        if guidance:
            null, null_pooled, _ = self.pipe.encode_prompt(prompt=[""] * len(prompts), **kwargs)
            embeds, pooled = torch.cat([embeds, null]), torch.cat([pooled, null_pooled])
        batched = {"encoder_hidden_states": embeds, "pooled_projections": pooled}
        return Conditioning(batched, shared={"txt_ids": text_ids}, guided=guidance)

    def initial_latents(self, generators):
        channels = self.denoiser.config.in_channels // 4
        res = self.resolution
        latents, _ = self.pipe.prepare_latents(len(generators), channels, res, res, self.dtype, self.device, generators)
        return latents

    def set_timesteps(self, num_steps):
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        config = self.scheduler.config
        sigmas = None if config.get("use_flow_sigmas") else np.linspace(1.0, 1 / num_steps, num_steps)
        mu = calculate_shift(
            (self._latent_size // 2) ** 2,
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.15),
        )
        self.scheduler.set_timesteps(num_steps, device=self.device, sigmas=sigmas, mu=mu)
        self._begin()

    def _model_timestep(self, t, batch):
        return t.expand(batch).to(self.dtype) / 1000  # Flux takes times in [0, 1]

    def predict(self, latents, i, cond, guidance_scale):
        if self.embedded_guidance:
            self._guidance = guidance_scale
            return self.denoise(latents, i, cond.positive())
        return super().predict(latents, i, cond, guidance_scale)

    def _forward(self, latents, timestep, cond):
        guidance = None
        if self.embedded_guidance:
            guidance = torch.full((latents.shape[0],), self._guidance, device=self.device, dtype=torch.float32)
        return self.model(
            hidden_states=latents,
            timestep=timestep,
            guidance=guidance,
            pooled_projections=cond["pooled_projections"],
            encoder_hidden_states=cond["encoder_hidden_states"],
            txt_ids=cond["txt_ids"],
            img_ids=self._image_ids,
            return_dict=False,
        )[0]

    def _pack(self, latents):
        b, c, h, w = latents.shape
        return self.pipe._pack_latents(latents, b, c, h, w)

    def decode(self, latents):
        unpacked = self.pipe._unpack_latents(latents, self.resolution, self.resolution, self.pipe.vae_scale_factor)
        return _to_unit(self._vae_decode(unpacked))


class SanaAdapter(FlowAdapter):
    def default_resolution(self) -> int:
        return self.denoiser.config.sample_size * self.pipe.vae_scale_factor

    @torch.no_grad()
    def encode_batch(self, prompts, guidance):
        positive, mask, null, null_mask = self.pipe.encode_prompt(
            list(prompts),
            do_classifier_free_guidance=guidance,
            negative_prompt="",
            num_images_per_prompt=1,
            device=self.device,
            clean_caption=False,
            max_sequence_length=self.max_sequence_length or 300,
            complex_human_instruction=None,
        )
        if guidance:
            positive, mask = torch.cat([positive, null]), torch.cat([mask, null_mask])
        return Conditioning({"encoder_hidden_states": positive, "encoder_attention_mask": mask}, guided=guidance)

    def initial_latents(self, generators):
        channels = self.denoiser.config.in_channels
        res = self.resolution
        return self.pipe.prepare_latents(len(generators), channels, res, res, self.dtype, self.device, generators)

    def _model_timestep(self, t, batch):
        return t.expand(batch) * self.denoiser.config.get("timestep_scale", 1.0)

    def _forward(self, latents, timestep, cond):
        out = self.model(
            latents,
            encoder_hidden_states=cond["encoder_hidden_states"],
            encoder_attention_mask=cond["encoder_attention_mask"],
            timestep=timestep,
            return_dict=False,
        )[0]
        if self.denoiser.config.out_channels // 2 == latents.shape[1]:  # learned sigma: keep the velocity half
            out = out.chunk(2, dim=1)[0]
        return out

    def _vae_encode(self, pixels, generator):
        return self.pipe.vae.encode(pixels).latent * self.pipe.vae.config.scaling_factor

    def _vae_decode(self, latents):
        vae = self.pipe.vae
        return vae.decode((latents / vae.config.scaling_factor).to(vae.dtype), return_dict=False)[0]


# Pipeline class name -> adapter; subclasses of these pipelines match through their MRO.
ADAPTERS: dict[str, type[FeedbackAdapter]] = {
    "ShapesDiTPipeline": ShapesAdapter,
    "StableDiffusionXLPipeline": StableDiffusionXLAdapter,
    "StableDiffusionPipeline": StableDiffusionAdapter,
    "StableDiffusion3Pipeline": StableDiffusion3Adapter,
    "FluxPipeline": FluxAdapter,
    "SanaPipeline": SanaAdapter,
}


def make_adapter(pipe, resolution: int | None = None, max_sequence_length: int | None = None) -> FeedbackAdapter:
    """The adapter for `pipe`'s family, chosen by class; an unsupported pipeline is a clear error."""
    for cls in type(pipe).__mro__:
        if cls.__name__ in ADAPTERS:
            return ADAPTERS[cls.__name__](pipe, resolution=resolution, max_sequence_length=max_sequence_length)
    raise ItercompError(
        f"reward fine-tuning does not support {type(pipe).__name__}; supported pipelines: {', '.join(ADAPTERS)} "
        "(add an adapter in itercomp/finetune/adapters.py)"
    )

"""`ShapesDiTPipeline`: tokenizer + decoder-only LM + CompositionDiT + flow-matching scheduler (+ optional VAE).

The LM runs once per call (conditional and null prompts in one batch); its hidden states are reused at every
sampling step. Classifier-free guidance uses the empty prompt as the null condition, as in training.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

# model_index.json names the transformer's and the scheduler's libraries `itercomp.models.dit` and
# `itercomp.models.scheduler`; diffusers can only load them once the modules are imported, so importing the
# pipeline must import them.
import itercomp.models.dit  # noqa: F401
import itercomp.models.scheduler  # noqa: F401
from itercomp.models.language import tokenize
from itercomp.models.training import output_to_velocity


def dynamic_threshold(x0: torch.Tensor, ratio: float) -> torch.Tensor:
    """Imagen's dynamic thresholding: clip x0 to the `ratio` quantile of |x0| (at least 1), then rescale."""
    s = torch.quantile(x0.abs().flatten(1).float(), ratio, dim=1).clamp(min=1.0).to(x0.dtype)
    s = s.view(-1, *([1] * (x0.ndim - 1)))
    return x0.clamp(-s, s) / s


class ShapesDiTPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->transformer->vae"
    _optional_components = ["vae"]

    def __init__(self, tokenizer, text_encoder, transformer, scheduler: FlowMatchEulerDiscreteScheduler, vae=None):
        super().__init__()
        self.register_modules(
            tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer, scheduler=scheduler, vae=vae
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """As `DiffusionPipeline.from_pretrained`, but in float32 unless a dtype is given: the shipped weights are
        stored in float16 to keep the repository small, and CPUs compute in float32."""
        if "dtype" not in kwargs and "torch_dtype" not in kwargs:
            kwargs["dtype"] = torch.float32
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def encode_prompt(self, prompts: list[str], guidance: bool):
        """LM hidden states (embeddings + every layer) and mask; with guidance the null prompts come second."""
        texts = list(prompts) + ([""] * len(prompts) if guidance else [])
        batch = tokenize(self.tokenizer, texts).to(self._execution_device)
        lm = getattr(self.text_encoder, "model", self.text_encoder)  # a CausalLM's trunk, without the LM head
        out = lm(**batch, output_hidden_states=True)
        dtype = self.transformer.dtype
        return tuple(h.to(dtype) for h in out.hidden_states), batch["attention_mask"].bool()

    def check_inputs(self, prompt, num_inference_steps, guidance_scale, output_type):
        if not prompt or not all(isinstance(p, str) for p in prompt):
            raise ValueError(f"`prompt` must be a string or a non-empty list of strings, got {prompt!r}")
        if num_inference_steps < 1:
            raise ValueError(f"`num_inference_steps` must be >= 1, got {num_inference_steps}")
        if guidance_scale < 0:
            raise ValueError(f"`guidance_scale` must be >= 0 (1 disables guidance), got {guidance_scale}")
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"`output_type` must be 'pil', 'np' or 'pt', got {output_type!r}")

    def velocity(self, latents, t, hidden_states, mask, guidance_scale):
        """The guided velocity at one step (the transformer runs once on the cond + null batch)."""
        guided = guidance_scale != 1.0
        model_input = torch.cat([latents, latents]) if guided else latents
        out = self.transformer(model_input, t.expand(model_input.shape[0]), hidden_states, mask)
        sigma = t / self.scheduler.config.num_train_timesteps
        v = output_to_velocity(out, model_input, sigma, self.transformer.config.prediction_type, min_sigma=1e-6)
        if guided:
            v_cond, v_null = v.chunk(2)
            v = v_null + guidance_scale * (v_cond - v_null)
        return v

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        num_inference_steps: int = 20,
        guidance_scale: float = 3.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        dynamic_thresholding_ratio: float | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ):
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        self.check_inputs(prompts, num_inference_steps, guidance_scale, output_type)
        device = self._execution_device
        hidden_states, mask = self.encode_prompt(prompts, guidance_scale != 1.0)
        cfg = self.transformer.config
        shape = (len(prompts), cfg.in_channels, cfg.sample_size, cfg.sample_size)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=self.transformer.dtype)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        for t in self.progress_bar(self.scheduler.timesteps):
            v = self.velocity(latents, t, hidden_states, mask, guidance_scale)
            if dynamic_thresholding_ratio is not None and self.vae is None:
                sigma = t / self.scheduler.config.num_train_timesteps
                x0 = dynamic_threshold(latents - sigma * v, dynamic_thresholding_ratio)
                v = (latents - x0) / sigma.clamp(min=1e-4)
            # A scheduler that draws fresh noise at each step (`FlowMatchEtaScheduler` with eta > 0) draws it from
            # the caller's generators, so a seeded call stays reproducible.
            latents = self.scheduler.step(v, t, latents, generator=generator).prev_sample
        images = self.decode(latents)
        if output_type == "pt":
            out = images
        else:
            out = (images.permute(0, 2, 3, 1).float().cpu().numpy() * 255).round().astype(np.uint8)
            if output_type == "pil":
                out = [Image.fromarray(im) for im in out]
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=out) if return_dict else (out,)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (or pixels in [-1, 1]) to images in [0, 1]."""
        if self.vae is not None:
            latents = latents / self.vae.config.scaling_factor
            latents = self.vae.decode(latents.to(self.vae.dtype)).sample
        return (latents / 2 + 0.5).clamp(0, 1)

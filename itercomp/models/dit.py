"""A DiT that reads every layer of a decoder-only language model (after Playground v3).

Around an attention trunk on the coarsest grid sit U-Net levels of convolutions (as U-ViT, HDiT and "simple
diffusion"): at 32 and 16 px residual blocks draw the outlines, the transformer on the 8 x 8 token grid decides
the layout. Timestep conditioning is adaLN-Zero.

`conditioning` selects how the text reaches the image, all on the same trunk:
- "deep_fusion": block i reads LM layer i (hidden_states[i + 1]); the DiT has one block per LM layer;
- "last_layer": every block reads the LM's last layer only (the T5/Imagen style);
- "pooled": no attention to text; the mean-pooled last layer joins the timestep in adaLN (the CLIP-pooled style).

Block i attends over [LM layer i ; image]: the image queries see the text as extra keys and values (per-modality
projections and QK-norm), and the text is read fresh from the next LM layer at the next block.

Options measured and switched off left the constructor; docs/base_model.md has their measurements. Commit 5e5e5b4
has a Mix-FFN, EDM preconditioning, a bidirectional text refiner and a pixel stem around linear patches; commit
fa89bd0 an MMDiT text stream that the blocks update jointly with the image (`joint_text`) and learned positions on
the text (`text_positions`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from itercomp.models.config import CONDITIONINGS


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of timesteps in [0, 1000]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def sincos_1d(length: int, dim: int) -> torch.Tensor:
    """Fixed sine-cosine positions of a token sequence (length, dim), as the original Transformer."""
    freqs = 1.0 / (10000 ** (torch.arange(dim // 2, dtype=torch.float32) / (dim // 2)))
    args = torch.arange(length, dtype=torch.float32)[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


def sincos_2d(size: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine positions for a size x size grid of tokens (row-major): half the channels per axis."""
    axis = sincos_1d(size, dim // 2)
    rows = torch.arange(size).repeat_interleave(size)
    return torch.cat([axis[rows], axis[torch.arange(size).repeat(size)]], dim=1)


def whitening_from_covariance(covariance: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """ZCA whitening W = V diag(1 / sqrt(lambda + eps * mean(lambda))) V^T of a covariance (..., d, d).

    Why the DiT needs it: a small LM trained on captions adds to every token a huge component that depends on
    the word's role ("a colour word") and not on the word ("red"), so the colour survives only as a residual
    of about 0.4% of the state's norm, in directions whose variance is 1e-9 of the largest. Attention cannot
    learn to read that by gradient descent in any reasonable time; after whitening "red" and "green" in the
    same slot differ by as much as the states' own norm. `eps` (relative to the mean eigenvalue) bounds the
    gain on directions of pure rounding noise."""
    eigenvalues, vectors = torch.linalg.eigh(covariance.double())
    floor = eps * eigenvalues.mean(-1, keepdim=True)
    scale = (eigenvalues.clamp(min=0) + floor).rsqrt()
    return ((vectors * scale[..., None, :]) @ vectors.transpose(-1, -2)).float()


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, D) -> (B, heads, N, D / heads), the layout scaled_dot_product_attention takes."""
    b, n, d = x.shape
    return x.view(b, n, heads, d // heads).transpose(1, 2)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


def mlp(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))


def zero_(*modules: nn.Module) -> None:
    for module in modules:
        nn.init.zeros_(module.weight)
        nn.init.zeros_(module.bias)


class Block(nn.Module):
    """One transformer block over the image tokens; the text (`text_dim`-wide LM states) is read as extra keys
    and values."""

    def __init__(self, dim: int, heads: int, text_dim: int, mlp_ratio: float, attend_text: bool):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.RMSNorm(dim // heads, eps=1e-6)
        self.k_norm = nn.RMSNorm(dim // heads, eps=1e-6)
        self.attend_text = attend_text
        if attend_text:  # the text's own key/value projections (MMDiT-style), read from the LM
            self.text_norm = nn.LayerNorm(text_dim, eps=1e-6)
            self.text_kv = nn.Linear(text_dim, 2 * dim)
            self.text_k_norm = nn.RMSNorm(dim // heads, eps=1e-6)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = mlp(dim, int(dim * mlp_ratio))
        # adaLN-single (PixArt-alpha): the modulation comes from one shared MLP plus this per-block table.
        self.ada_table = nn.Parameter(torch.zeros(6, dim))

    def forward(self, x, modulation, text=None, text_mask=None):
        """`modulation` is (B, 6, dim) from the shared adaLN MLP; gates start at zero (adaLN-Zero)."""
        shift1, scale1, gate1, shift2, scale2, gate2 = (modulation + self.ada_table).unbind(dim=1)
        h = modulate(self.norm1(x), shift1, scale1)
        q, k, v = (split_heads(t, self.heads) for t in self.qkv(h).chunk(3, dim=-1))
        q, k = self.q_norm(q), self.k_norm(k)
        mask = None
        if self.attend_text:
            tk, tv = (split_heads(t, self.heads) for t in self.text_kv(self.text_norm(text)).chunk(2, dim=-1))
            k, v = torch.cat([self.text_k_norm(tk), k], dim=2), torch.cat([tv, v], dim=2)
            keep = torch.cat([text_mask, text_mask.new_ones(x.shape[0], x.shape[1])], dim=1)
            mask = keep[:, None, None, :]
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + gate1[:, None] * self.out(attn.transpose(1, 2).reshape(x.shape))
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))


class ResBlock(nn.Module):
    """A convolutional residual block at one resolution of the U-Net levels, FiLM-conditioned on the timestep
    (and, for "pooled", the prompt) like the transformer blocks' adaLN; the second conv starts at zero."""

    def __init__(self, in_channels: int, channels: int, dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(8, in_channels), in_channels)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.film = nn.Linear(dim, 2 * channels)
        self.norm2 = nn.GroupNorm(min(8, channels), channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, channels, 1) if in_channels != channels else nn.Identity()
        zero_(self.conv2)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.conv2(F.silu(self.norm2(h) * (1 + scale) + shift))
        return self.skip(x) + h


def upsample(in_channels: int, channels: int) -> nn.Module:
    """x2 resolution: a 1x1 conv to 4x the channels, then pixel shuffle (no checkerboard from transposed convs)."""
    return nn.Sequential(nn.Conv2d(in_channels, 4 * channels, 1), nn.PixelShuffle(2))


class CompositionDiT(ModelMixin, ConfigMixin):
    """Rectified-flow model over pixels (or VAE latents), conditioned on LM hidden states. It predicts the
    velocity or, with `prediction_type="sample"`, the clean image x0 (JiT: x-prediction suits pixel space).

    `conv_channels` are the U-Net levels: one per halving of the resolution (two: 32 -> 16 -> 8 px tokens).

    `layout_expert` (the init arguments of a second CompositionDiT) adds a high-noise expert, as eDiff-I's and
    Wan 2.2's experts by noise level: rows at `timestep >= 1000 * layout_boundary` go to it, the rest to this
    trunk. The expert is trained on the captions' mean renders (`itercomp pretrain --layout-expert-steps`), the
    best x0 where the layout is chosen, so the first sampler steps place the objects as the prompt says. One
    module to callers: pipelines, fine-tuning and adapters see one `transformer`."""

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        sample_size: int = 32,
        in_channels: int = 3,
        conv_channels: tuple[int, ...] = (16, 32),
        hidden_size: int = 128,
        num_heads: int = 4,
        mlp_ratio: float = 3.0,
        num_layers: int = 6,
        text_dim: int = 128,
        conditioning: str = "deep_fusion",
        prediction_type: str = "sample",
        text_whitening: bool = False,
        layout_expert: dict | None = None,
        layout_boundary: float = 0.9,
    ):
        super().__init__()
        if not 0 < layout_boundary <= 1:
            raise ValueError(f"layout_boundary={layout_boundary}; expected a noise level in (0, 1]")
        self.layout_dit = None
        if layout_expert is not None:
            if layout_expert.get("layout_expert") is not None:
                raise ValueError("a layout expert cannot have a layout expert of its own")
            self.layout_dit = CompositionDiT(**layout_expert)
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning={conditioning!r}; expected one of {CONDITIONINGS}")
        if prediction_type not in ("velocity", "sample"):
            raise ValueError(f"prediction_type={prediction_type!r}; expected 'velocity' or 'sample' (x0)")
        conv_channels = tuple(conv_channels or ())
        if not conv_channels or sample_size % 2 ** len(conv_channels):
            raise ValueError(
                f"conv_channels={list(conv_channels)} must name at least one level, and sample_size={sample_size} "
                f"must halve {len(conv_channels)} times into a whole token grid"
            )
        self.gradient_checkpointing = False
        d = hidden_size
        self.grid = sample_size // 2 ** len(conv_channels)
        self.pos = nn.Parameter(sincos_2d(self.grid, d)[None])
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        if conditioning == "pooled":
            self.pooled_mlp = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.ada = nn.Linear(d, 6 * d)
        zero_(self.ada)
        attend = conditioning != "pooled"
        self.blocks = nn.ModuleList(Block(d, num_heads, text_dim, mlp_ratio, attend) for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Linear(d, 2 * d)
        zero_(self.final_ada)
        self._build_levels(conv_channels, in_channels, d)
        if text_whitening:
            # A fixed whitening of each LM hidden state the DiT reads (deep fusion: layers 1..L; the ablations:
            # the last), fitted on the training captions' tokens by `set_text_statistics`, saved with the
            # weights: x -> (x - mean) W.
            read = num_layers if conditioning == "deep_fusion" else 1
            self.register_buffer("text_mean", torch.zeros(read, text_dim))
            self.register_buffer("text_whitening_matrix", torch.eye(text_dim).repeat(read, 1, 1))

    def _build_levels(self, channels: tuple[int, ...], in_channels: int, d: int) -> None:
        """At each level a conditioned residual block, then a 2x2 stride-2 conv down; the transformer runs on the
        coarsest grid; on the way up, pixel-shuffle upsampling, the level's skip concatenated, a residual block;
        a zero-initialised output conv. Full-resolution convolutions draw the pixel-exact outlines."""
        widths = (*channels, d)
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(ResBlock(ch, ch, d) for ch in channels)
        self.downsamples = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 2, stride=2) for i in range(len(channels)))
        self.upsamples = nn.ModuleList(upsample(widths[i + 1], widths[i]) for i in range(len(channels)))
        self.up_blocks = nn.ModuleList(ResBlock(2 * ch, ch, d) for ch in channels)
        self.conv_out = nn.Sequential(
            nn.GroupNorm(min(8, channels[0]), channels[0]), nn.SiLU(), nn.Conv2d(channels[0], in_channels, 3, padding=1)
        )
        zero_(self.conv_out[-1])

    @torch.no_grad()
    def set_text_statistics(self, mean: torch.Tensor, whitening: torch.Tensor) -> None:
        """Whitening of the LM states: `mean` (num_states, text_dim) and `whitening` (num_states, text_dim,
        text_dim) for every hidden state of the LM, embeddings first (`whitening_from_covariance`); the DiT
        keeps those of the states it reads."""
        if not self.config.text_whitening:
            raise ValueError("this DiT was built with text_whitening=False; it has no text statistics to set")
        states, width = len(self.blocks) + 1, self.text_mean.shape[1]
        if mean.shape != (states, width) or whitening.shape != (states, width, width):
            raise ValueError(
                f"text statistics of shape {tuple(mean.shape)} / {tuple(whitening.shape)}; this DiT reads an LM "
                f"with {states - 1} layers of width {width}: expected {(states, width)} / {(states, width, width)} "
                "(embeddings + every layer)"
            )
        read = slice(1, None) if self.config.conditioning == "deep_fusion" else slice(-1, None)
        self.text_mean.copy_(mean[read])
        self.text_whitening_matrix.copy_(whitening[read])
        if self.layout_dit is not None and self.layout_dit.config.text_whitening:
            self.layout_dit.set_text_statistics(mean, whitening)

    def _whiten(self, state: torch.Tensor, row: int) -> torch.Tensor:
        """Row `row` of the statistics: block i's LM layer under deep fusion, the last layer (row 0) otherwise."""
        if not self.config.text_whitening:
            return state
        return (state - self.text_mean[row]) @ self.text_whitening_matrix[row]

    def text_layers(self, hidden_states, mask: torch.Tensor) -> list[torch.Tensor | None]:
        """What each block reads: its LM hidden state (hidden_states[0] is the embedding layer), whitened."""
        mode = self.config.conditioning
        if mode == "deep_fusion":
            if len(hidden_states) != len(self.blocks) + 1:
                raise ValueError(
                    f"deep fusion needs one LM layer per DiT block: the LM gave {len(hidden_states) - 1} layers, "
                    f"the DiT has {len(self.blocks)} blocks; build the DiT with num_layers={len(hidden_states) - 1}"
                )
            return [self._whiten(h, i) for i, h in enumerate(hidden_states[1:])]
        if mode == "last_layer":
            return [self._whiten(hidden_states[-1], 0)] * len(self.blocks)
        return [None] * len(self.blocks)

    def _run_block(self, block: Block, *args):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def forward(self, sample, timestep, encoder_hidden_states, encoder_attention_mask):
        """The flow velocity or x0 (`config.prediction_type`) for `sample` (B, C, H, W) at `timestep` (B,) in
        [0, 1000], given the LM's hidden states (embeddings + every layer) and their attention mask."""
        if timestep.ndim == 0:
            timestep = timestep.expand(sample.shape[0])
        if self.layout_dit is None:
            return self._trunk(sample, timestep, encoder_hidden_states, encoder_attention_mask)
        high = timestep >= 1000 * self.config.layout_boundary
        if high.all() or not high.any():
            model = self.layout_dit if high.all() else self._trunk
            return model(sample, timestep, encoder_hidden_states, encoder_attention_mask)
        out = torch.empty_like(sample)
        for rows, model in ((high, self.layout_dit), (~high, self._trunk)):
            hidden = tuple(None if h is None else h[rows] for h in encoder_hidden_states)
            out[rows] = model(sample[rows], timestep[rows], hidden, encoder_attention_mask[rows])
        return out

    def _trunk(self, sample, timestep, encoder_hidden_states, encoder_attention_mask):
        b = sample.shape[0]
        cond = self.time_mlp(timestep_embedding(timestep, self.config.hidden_size).to(sample.dtype))
        mask = encoder_attention_mask.bool()
        if self.config.conditioning == "pooled":
            last = self._whiten(encoder_hidden_states[-1], 0)
            pooled = (last * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
            cond = cond + self.pooled_mlp(pooled.to(sample.dtype))
        # F.silu(cond) is taken once per reader (levels, adaLN, final adaLN), as the shipped weights were trained:
        # one shared node would sum the three gradients in another order, and fine-tuning runs are chaotic enough
        # that a last-bit difference changes their results.
        emb, skips, h = F.silu(cond), [], self.conv_in(sample)
        for block, down in zip(self.down_blocks, self.downsamples):
            skips.append(block(h, emb))
            h = down(skips[-1])
        x = h.flatten(2).transpose(1, 2) + self.pos
        modulation = self.ada(F.silu(cond)).view(b, 6, -1)
        for block, text in zip(self.blocks, self.text_layers(encoder_hidden_states, mask)):
            x = self._run_block(block, x, modulation, None if text is None else text.to(x.dtype), mask)
        shift, scale = self.final_ada(F.silu(cond)).chunk(2, dim=-1)
        x = modulate(self.final_norm(x), shift, scale)
        h = x.transpose(1, 2).reshape(b, -1, self.grid, self.grid)
        for i in reversed(range(len(skips))):
            h = self.up_blocks[i](torch.cat([self.upsamples[i](h), skips[i]], dim=1), emb)
        return self.conv_out(h)

"""A DiT that reads every layer of a decoder-only language model (after Playground v3).

Block i attends jointly over [the LM's layer-i hidden states ; the image tokens]: image queries see text and
image keys (per-modality projections and QK-norm), and the text side is read fresh from the next LM layer at
the next block instead of being carried through the DiT. Timestep conditioning is adaLN-Zero. A small
convolutional stem and head around the patch trunk keep shapes and outlines crisp at the pixel level.

`conditioning` selects the conditioning ablations, all on the same trunk:
- "deep_fusion": block i reads LM layer i (hidden_states[i + 1]); the DiT has one block per LM layer;
- "last_layer": every block cross-attends to the LM's last layer only (the T5/Imagen style);
- "pooled": no attention to text; the mean-pooled last layer joins the timestep in adaLN (the CLIP-pooled style).
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


class RefinerLayer(nn.Module):
    """One pre-norm bidirectional transformer layer over text tokens. Positions enter the queries and keys only,
    so the values (what the DiT reads) stay pure content; the output projections start at zero, so an untrained
    refiner passes the (whitened) LM states through unchanged."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.qk = nn.Linear(dim, 2 * dim)
        self.v = nn.Linear(dim, dim)
        self.q_norm = nn.RMSNorm(dim // heads, eps=1e-6)
        self.k_norm = nn.RMSNorm(dim // heads, eps=1e-6)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        for module in (self.out, self.mlp[-1]):
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        q, k = (split_heads(t, self.heads) for t in self.qk(h + positions).chunk(2, dim=-1))
        attn = F.scaled_dot_product_attention(
            self.q_norm(q), self.k_norm(k), split_heads(self.v(h), self.heads), attn_mask=keep
        )
        x = x + self.out(attn.transpose(1, 2).reshape(x.shape))
        return x + self.mlp(self.norm2(x))


class TextRefiner(nn.Module):
    """Bidirectional self-attention over the prompt's tokens before the DiT reads them (the context refiner of
    Lumina-Image 2.0, which also conditions on a decoder-only LM).

    Why: a causal LM's colour word never sees the relation that follows it ("a red circle | to the left of a
    blue square"), so no token says "red goes left" and the image cannot place it in one attention hop. A
    refiner lets every word read the whole prompt. Positions are fixed sine-cosine (any prompt length); the
    padding of a batch is masked out as keys."""

    def __init__(self, dim: int, heads: int, layers: int):
        super().__init__()
        self.layers = nn.ModuleList(RefinerLayer(dim, heads) for _ in range(layers))

    def forward(self, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        positions = sincos_1d(text.shape[1], text.shape[2]).to(text)
        keep = mask.bool()[:, None, None, :]
        for layer in self.layers:
            text = layer(text, positions, keep)
        return text


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class Block(nn.Module):
    def __init__(
        self,
        dim: int,
        heads: int,
        text_dim: int,
        mlp_ratio: float,
        attend_text: bool,
        grid: int = 0,
        joint: bool = False,
        update_text: bool = True,
    ):
        super().__init__()
        self.heads = heads
        self.joint = joint
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.RMSNorm(dim // heads, eps=1e-6)
        self.k_norm = nn.RMSNorm(dim // heads, eps=1e-6)
        self.attend_text = attend_text
        hidden = int(dim * mlp_ratio)
        if joint:  # MMDiT: the text tokens are a stream of width `dim` that every block updates
            self.text_norm = nn.LayerNorm(dim, eps=1e-6)
            self.text_qkv = nn.Linear(dim, 3 * dim)
            self.text_q_norm = nn.RMSNorm(dim // heads, eps=1e-6)
            self.text_k_norm = nn.RMSNorm(dim // heads, eps=1e-6)
            self.update_text = update_text  # the last block's text output would be read by nobody
            if update_text:
                self.text_out = nn.Linear(dim, dim)
                self.text_norm2 = nn.LayerNorm(dim, eps=1e-6)
                self.text_mlp = nn.Sequential(
                    nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim)
                )
                for module in (self.text_out, self.text_mlp[-1]):
                    nn.init.zeros_(module.weight)
                    nn.init.zeros_(module.bias)
        elif attend_text:  # the text stream's own projections (MMDiT-style), read from the LM layer
            self.text_norm = nn.LayerNorm(text_dim, eps=1e-6)
            self.text_kv = nn.Linear(text_dim, 2 * dim)
            self.text_k_norm = nn.RMSNorm(dim // heads, eps=1e-6)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        # Mix-FFN (as Sana): a depthwise 3x3 convolution over the token grid inside the MLP, so neighbouring
        # tokens of one object agree on its outline without waiting for attention to learn it.
        self.grid = grid
        self.mlp_conv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden) if grid else None
        # adaLN-single (PixArt-alpha): the modulation comes from one shared MLP plus this per-block table.
        self.ada_table = nn.Parameter(torch.zeros(6, dim))

    def forward(self, x, modulation, text=None, text_mask=None):
        """`modulation` is (B, 6, dim) from the shared adaLN MLP; gates start at zero (adaLN-Zero)."""
        shift1, scale1, gate1, shift2, scale2, gate2 = (modulation + self.ada_table).unbind(dim=1)
        h = modulate(self.norm1(x), shift1, scale1)
        q, k, v = (split_heads(t, self.heads) for t in self.qkv(h).chunk(3, dim=-1))
        q, k = self.q_norm(q), self.k_norm(k)
        mask = None
        if self.joint:
            return self._joint(x, q, k, v, text, text_mask, gate1, shift2, scale2, gate2)
        if self.attend_text:
            tk, tv = (split_heads(t, self.heads) for t in self.text_kv(self.text_norm(text)).chunk(2, dim=-1))
            k = torch.cat([self.text_k_norm(tk), k], dim=2)
            v = torch.cat([tv, v], dim=2)
            keep = torch.cat([text_mask, text_mask.new_ones(x.shape[0], x.shape[1])], dim=1)
            mask = keep[:, None, None, :]
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + gate1[:, None] * self.out(attn.transpose(1, 2).reshape(x.shape))
        return x + gate2[:, None] * self.feed_forward(modulate(self.norm2(x), shift2, scale2))

    def _joint(self, x, q, k, v, text, text_mask, gate1, shift2, scale2, gate2):
        """Joint attention over [text ; image] for both streams (SD3's MMDiT): a text token can read the
        relation word and the image before the image reads it back. Returns (image tokens, text tokens)."""
        tq, tk, tv = (split_heads(t_, self.heads) for t_ in self.text_qkv(self.text_norm(text)).chunk(3, dim=-1))
        n_text = text.shape[1]
        keep = torch.cat([text_mask, text_mask.new_ones(x.shape[0], x.shape[1])], dim=1)[:, None, None, :]
        attn = F.scaled_dot_product_attention(
            torch.cat([self.text_q_norm(tq), q], dim=2),
            torch.cat([self.text_k_norm(tk), k], dim=2),
            torch.cat([tv, v], dim=2),
            attn_mask=keep,
        ).transpose(1, 2)
        if self.update_text:
            text = text + self.text_out(attn[:, :n_text].reshape(text.shape))
            text = text + self.text_mlp(self.text_norm2(text))
        x = x + gate1[:, None] * self.out(attn[:, n_text:].reshape(x.shape))
        return x + gate2[:, None] * self.feed_forward(modulate(self.norm2(x), shift2, scale2)), text

    def feed_forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.mlp_conv is None:
            return self.mlp(h)
        h = self.mlp[0](h)
        b, n, c = h.shape
        grid = h.transpose(1, 2).reshape(b, c, self.grid, self.grid)
        h = h + self.mlp_conv(grid).flatten(2).transpose(1, 2)
        return self.mlp[2](self.mlp[1](h))


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
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

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
    With `preconditioning="edm"` the x0 prediction is EDM's c_skip x_t + c_out F(c_in x_t): the input passes
    through at low noise, and the trunk always sees and predicts unit-variance signals."""

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        sample_size: int = 32,
        in_channels: int = 3,
        patch_size: int = 4,
        hidden_size: int = 128,
        num_heads: int = 4,
        mlp_ratio: float = 3.0,
        text_dim: int = 128,
        num_layers: int = 6,
        stem_channels: int = 32,
        conditioning: str = "deep_fusion",
        prediction_type: str = "velocity",
        mix_ffn: bool = False,
        text_positions: int = 0,
        preconditioning: str | None = None,
        sigma_data: float = 0.5,
        conv_channels: tuple[int, ...] = (),
        text_whitening: bool = False,
        text_refiner_layers: int = 0,
        joint_text: bool = False,
    ):
        super().__init__()
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning={conditioning!r}; expected one of {CONDITIONINGS}")
        if prediction_type not in ("velocity", "sample"):
            raise ValueError(f"prediction_type={prediction_type!r}; expected 'velocity' or 'sample' (x0)")
        if preconditioning not in (None, "edm"):
            raise ValueError(f"preconditioning={preconditioning!r}; expected None or 'edm'")
        if preconditioning and prediction_type != "sample":
            raise ValueError("preconditioning='edm' predicts x0 through a skip; use prediction_type='sample'")
        if sample_size % patch_size:
            raise ValueError(f"sample_size={sample_size} must be a multiple of patch_size={patch_size}")
        conv_channels = tuple(conv_channels or ())
        if conv_channels and (stem_channels or 2 ** len(conv_channels) != patch_size):
            raise ValueError(
                f"conv_channels={list(conv_channels)} halves the resolution {len(conv_channels)} times, so it needs "
                f"patch_size={2 ** len(conv_channels)} (got {patch_size}) and stem_channels=0 (got {stem_channels})"
            )
        self.gradient_checkpointing = False
        c, d, p = stem_channels, hidden_size, patch_size
        self.grid = sample_size // p
        # stem_channels=0: plain linear patch embedding and output (JiT-style, no full-resolution convolutions).
        self.stem = (
            nn.Sequential(nn.Conv2d(in_channels, c, 3, padding=1), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1), nn.SiLU())
            if c
            else nn.Identity()
        )
        self.patchify = nn.Conv2d(c or in_channels, d, p, stride=p)
        self.pos = nn.Parameter(sincos_2d(self.grid, d)[None])
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        if conditioning == "pooled":
            self.pooled_mlp = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.ada = nn.Linear(d, 6 * d)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)
        attend = conditioning != "pooled"
        grid = self.grid if mix_ffn else 0
        joint = joint_text and attend
        self.blocks = nn.ModuleList(
            Block(d, num_heads, text_dim, mlp_ratio, attend, grid, joint, update_text=i < num_layers - 1)
            for i in range(num_layers)
        )
        # Learned positions of the prompt's tokens, added to every LM layer the DiT reads: a RoPE LM's hidden
        # states carry no absolute position, and "which colour goes with which shape" is a question of order.
        self.text_pos = (
            nn.Parameter(torch.zeros(1, text_positions, d if joint else text_dim)) if text_positions and attend else None
        )
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Linear(d, 2 * d)
        self.unpatchify = nn.Linear(d, p * p * (c or in_channels))
        self.head = (
            nn.Sequential(nn.Conv2d(2 * c, c, 3, padding=1), nn.SiLU(), nn.Conv2d(c, in_channels, 3, padding=1))
            if c
            else None
        )
        for module in (self.final_ada, self.head[-1] if c else self.unpatchify):
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)
        if conv_channels:
            self._build_levels(conv_channels, in_channels, d)
        if text_whitening:
            # A fixed whitening of each LM hidden state the DiT reads (deep fusion: layers 1..L; the ablations:
            # the last), fitted on the training captions' tokens by `set_text_statistics`, saved with the
            # weights: x -> (x - mean) W.
            read = num_layers if conditioning == "deep_fusion" else 1
            self.register_buffer("text_mean", torch.zeros(read, text_dim))
            self.register_buffer("text_whitening_matrix", torch.eye(text_dim).repeat(read, 1, 1))
        # Built last, so that without it the initialisation of every other module is unchanged.
        self.text_refiner = TextRefiner(text_dim, num_heads, text_refiner_layers) if text_refiner_layers else None
        # The joint text stream's input: each LM state read is projected to the DiT's width and added to the
        # stream before its block (deep fusion: block i adds LM layer i; last_layer: the first block adds it).
        read = num_layers if conditioning == "deep_fusion" else 1
        self.text_in = nn.ModuleList(nn.Linear(text_dim, d) for _ in range(read)) if joint else None

    def _build_levels(self, channels: tuple[int, ...], in_channels: int, d: int) -> None:
        """U-Net levels around the transformer (as U-ViT / HDiT / simple diffusion): at each level a conditioned
        residual block, then a 2x2 stride-2 conv down; the transformer runs on the coarsest grid; on the way up,
        pixel-shuffle upsampling, the level's skip concatenated, a residual block; a zero-initialised output conv.
        Pixel-exact outlines are drawn by full-resolution convolutions instead of a linear unpatchify."""
        widths = (*channels, d)
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(ResBlock(ch, ch, d) for ch in channels)
        self.downsamples = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 2, stride=2) for i in range(len(channels)))
        self.upsamples = nn.ModuleList(upsample(widths[i + 1], widths[i]) for i in range(len(channels)))
        self.up_blocks = nn.ModuleList(ResBlock(2 * ch, ch, d) for ch in channels)
        self.conv_out = nn.Sequential(
            nn.GroupNorm(min(8, channels[0]), channels[0]), nn.SiLU(), nn.Conv2d(channels[0], in_channels, 3, padding=1)
        )
        nn.init.zeros_(self.conv_out[-1].weight)
        nn.init.zeros_(self.conv_out[-1].bias)
        # Built after (then replacing) the linear patch path, so the random initialisation of every other module
        # is the one the shipped run drew: `itercomp pretrain` with the same seed reproduces it.
        del self.stem, self.patchify, self.unpatchify

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

    def _whiten(self, state: torch.Tensor, row: int) -> torch.Tensor:
        """Row `row` of the statistics: block i's LM layer under deep fusion, the last layer (row 0) otherwise."""
        if not self.config.text_whitening:
            return state
        return (state - self.text_mean[row]) @ self.text_whitening_matrix[row]

    def _refine(self, states: list[torch.Tensor], mask: torch.Tensor) -> list[torch.Tensor]:
        """The text refiner over each state read (one batched call; shared weights), if the DiT has one."""
        if self.text_refiner is None:
            return states
        refined = self.text_refiner(torch.cat(states), mask.repeat(len(states), 1))
        return list(refined.chunk(len(states)))

    def text_layers(self, hidden_states, mask: torch.Tensor) -> list[torch.Tensor | None]:
        """What each block reads: its LM hidden state (hidden_states[0] is the embedding layer), whitened and
        refined."""
        mode = self.config.conditioning
        if mode == "deep_fusion":
            if len(hidden_states) != len(self.blocks) + 1:
                raise ValueError(
                    f"deep fusion needs one LM layer per DiT block: the LM gave {len(hidden_states) - 1} layers, "
                    f"the DiT has {len(self.blocks)} blocks; build the DiT with num_layers={len(hidden_states) - 1}"
                )
            return self._refine([self._whiten(h, i) for i, h in enumerate(hidden_states[1:])], mask)
        if mode == "last_layer":
            return self._refine([self._whiten(hidden_states[-1], 0)], mask) * len(self.blocks)
        return [None] * len(self.blocks)

    def forward(self, sample, timestep, encoder_hidden_states, encoder_attention_mask):
        """The flow velocity or x0 (`config.prediction_type`) for `sample` (B, C, H, W) at `timestep` (B,) in
        [0, 1000], given the LM's hidden states (embeddings + every layer) and their attention mask."""
        b, _, h, w = sample.shape
        p, g = self.config.patch_size, self.grid
        if timestep.ndim == 0:
            timestep = timestep.expand(b)
        x_t = sample
        if self.config.preconditioning == "edm":
            c_in, c_skip, c_out = (c.view(-1, 1, 1, 1).to(sample.dtype) for c in self._edm(timestep))
            sample = sample * c_in
        cond = self.time_mlp(timestep_embedding(timestep, self.config.hidden_size).to(sample.dtype))
        mask = encoder_attention_mask.bool()
        if self.config.conditioning == "pooled":
            last = self._refine([self._whiten(encoder_hidden_states[-1], 0)], mask)[0]
            pooled = (last * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
            cond = cond + self.pooled_mlp(pooled.to(sample.dtype))
        levels = bool(self.config.conv_channels)
        if levels:
            emb, skips, h_ = F.silu(cond), [], self.conv_in(sample)
            for block, down in zip(self.down_blocks, self.downsamples):
                skips.append(block(h_, emb))
                h_ = down(skips[-1])
            x = h_.flatten(2).transpose(1, 2) + self.pos
        else:
            stem = self.stem(sample)
            x = self.patchify(stem).flatten(2).transpose(1, 2) + self.pos
        modulation = self.ada(F.silu(cond)).view(b, 6, -1)
        texts = self.text_layers(encoder_hidden_states, mask)
        if self.text_in is not None:
            x = self._joint_blocks(x, modulation, texts, mask)
        for block, text in zip(self.blocks if self.text_in is None else (), texts):
            if text is not None:
                text = text.to(x.dtype)
                if self.text_pos is not None:
                    if text.shape[1] > self.text_pos.shape[1]:
                        raise ValueError(
                            f"the prompt has {text.shape[1]} tokens but the DiT has text_positions="
                            f"{self.text_pos.shape[1]}; truncate prompts or build the DiT with more text_positions"
                        )
                    text = text + self.text_pos[:, : text.shape[1]]
            args = (x, modulation, text, mask)
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False)
            else:
                x = block(*args)
        shift, scale = self.final_ada(F.silu(cond)).chunk(2, dim=-1)
        x = modulate(self.final_norm(x), shift, scale)
        if levels:
            h_ = x.transpose(1, 2).reshape(b, -1, g, g)
            for i in reversed(range(len(skips))):
                h_ = self.up_blocks[i](torch.cat([self.upsamples[i](h_), skips[i]], dim=1), emb)
            out = self.conv_out(h_)
        else:
            x = self.unpatchify(x)
            c = stem.shape[1]
            x = x.view(b, g, g, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)
            out = x if self.head is None else self.head(torch.cat([x, stem], dim=1))
        if self.config.preconditioning == "edm":
            return c_skip * x_t + c_out * out
        return out

    def _joint_blocks(self, x, modulation, texts, mask):
        """The blocks with a joint text stream: it starts at the text positions (or zero) and gains each LM
        state read through `text_in` before the block that reads it."""
        stream = None
        for i, (block, text) in enumerate(zip(self.blocks, texts)):
            if i < len(self.text_in):
                injected = self.text_in[i](text.to(x.dtype))
                if stream is None:
                    stream = injected + self._text_positions(injected)
                else:
                    stream = stream + injected
            args = (x, modulation, stream, mask)
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x, stream = torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False)
            else:
                x, stream = block(*args)
        return x

    def _text_positions(self, text: torch.Tensor) -> torch.Tensor | float:
        if self.text_pos is None:
            return 0.0
        if text.shape[1] > self.text_pos.shape[1]:
            raise ValueError(
                f"the prompt has {text.shape[1]} tokens but the DiT has text_positions={self.text_pos.shape[1]}; "
                "truncate prompts or build the DiT with more text_positions"
            )
        return self.text_pos[:, : text.shape[1]]

    def _edm(self, timestep: torch.Tensor):
        from itercomp.models.training import edm_scalings

        return edm_scalings(timestep.float() / 1000, self.config.sigma_data)

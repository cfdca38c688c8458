"""Tiny random diffusers pipelines built from configs, for tests and benchmarks (no hub, CPU, milliseconds).

Each builder returns a real pipeline of the named class with randomly initialised components a few thousand
parameters big. `save_tiny_pipeline(kind, folder)` writes it with `save_pretrained`, so a gallery YAML can
point at the folder and load it through the same `from_pretrained` path a user's real model takes.
"""

from __future__ import annotations

from pathlib import Path

TINY_KINDS = ("stable_diffusion", "stable_diffusion_xl", "stable_diffusion_3", "flux", "sana")
# Words the tiny tokenizer knows; everything else maps to [UNK]. Enough for the shapes world's prompts.
_WORDS = [
    "a",
    "an",
    "the",
    "and",
    "of",
    "to",
    "left",
    "right",
    "above",
    "below",
    "inside",
    "bigger",
    "smaller",
    "than",
    "touching",
    "small",
    "large",
    "solid",
    "hollow",
    "red",
    "orange",
    "yellow",
    "green",
    "cyan",
    "blue",
    "purple",
    "white",
    "circle",
    "square",
    "triangle",
    "cross",
    "photo",
]
_SPECIAL = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
VOCAB_SIZE = 64  # >= len(_SPECIAL) + len(_WORDS); the text encoders' embedding tables are this big


def tiny_tokenizer(max_length: int = 16):
    """A word-level fast tokenizer with pad/unk/bos/eos, built in code (transformers 5 saves and reloads it)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate((*_SPECIAL, *_WORDS))}
    assert len(vocab) <= VOCAB_SIZE
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", vocab["[BOS]"]), ("[EOS]", vocab["[EOS]"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
        model_max_length=max_length,
    )


def _clip(with_projection: bool = False, hidden: int = 32):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=hidden,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=16,
        projection_dim=32,
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=0,
    )
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


def _t5():
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(
        T5Config(
            vocab_size=VOCAB_SIZE,
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            pad_token_id=0,
            eos_token_id=3,
        )
    )


def _vae(latent_channels: int = 4, **extra):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[16, 32],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=latent_channels,
        norm_num_groups=8,
        **extra,
    )


def build_tiny_pipeline(kind: str):
    """A randomly initialised pipeline of one kind (see TINY_KINDS); seeded, so the same call gives the same model."""
    import torch

    if kind not in TINY_KINDS:
        raise ValueError(f"unknown tiny pipeline kind {kind!r}; expected one of {', '.join(TINY_KINDS)}")
    torch.manual_seed(0)
    builder = globals()[f"_{kind}"]
    return builder()


def _stable_diffusion():
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=8,
        attention_head_dim=4,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, steps_offset=1
    )
    return StableDiffusionPipeline(
        vae=_vae(),
        text_encoder=_clip(),
        tokenizer=tiny_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _stable_diffusion_xl():
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        # 6 size/crop conditioning numbers x addition_time_embed_dim + the pooled projection of text_encoder_2
        projection_class_embeddings_input_dim=6 * 8 + 32,
        cross_attention_dim=64,  # both text encoders' hidden states concatenated
        norm_num_groups=8,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading"
    )
    return StableDiffusionXLPipeline(
        vae=_vae(),
        text_encoder=_clip(),
        text_encoder_2=_clip(with_projection=True),
        tokenizer=tiny_tokenizer(),
        tokenizer_2=tiny_tokenizer(),
        unet=unet,
        scheduler=scheduler,
    )


def _stable_diffusion_3():
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=1,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=32,
        pooled_projection_dim=64,  # the two CLIP projections concatenated
        out_channels=4,
    )
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_vae(shift_factor=0.0609, scaling_factor=1.5035),
        text_encoder=_clip(with_projection=True),
        tokenizer=tiny_tokenizer(),
        text_encoder_2=_clip(with_projection=True),
        tokenizer_2=tiny_tokenizer(),
        text_encoder_3=_t5(),
        tokenizer_3=tiny_tokenizer(),
    )


def _flux():
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels packed 2 x 2
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )
    return FluxPipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_vae(shift_factor=0.0609, scaling_factor=1.5035, use_quant_conv=False, use_post_quant_conv=False),
        text_encoder=_clip(),
        tokenizer=tiny_tokenizer(),
        text_encoder_2=_t5(),
        tokenizer_2=tiny_tokenizer(),
    )


def _sana():
    from diffusers import AutoencoderDC, FlowMatchEulerDiscreteScheduler, SanaPipeline, SanaTransformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    transformer = SanaTransformer2DModel(
        patch_size=1,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        num_attention_heads=2,
        attention_head_dim=4,
        num_cross_attention_heads=2,
        cross_attention_head_dim=4,
        cross_attention_dim=8,
        caption_channels=32,
        sample_size=16,
    )
    vae = AutoencoderDC(
        in_channels=3,
        latent_channels=4,
        attention_head_dim=2,
        encoder_block_types=("ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "EfficientViTBlock"),
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        encoder_qkv_multiscales=((), (5,)),
        decoder_qkv_multiscales=((), (5,)),
        encoder_layers_per_block=(1, 1),
        decoder_layers_per_block=[1, 1],
        downsample_block_type="conv",
        upsample_block_type="interpolate",
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        scaling_factor=0.41407,
    )
    text_encoder = Gemma2Model(
        Gemma2Config(
            vocab_size=VOCAB_SIZE,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=64,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
            attn_implementation="eager",
        )
    )
    return SanaPipeline(
        tokenizer=tiny_tokenizer(max_length=32),
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
    )


# The call arguments each tiny pipeline needs beside the prompt (image size, sequence length, Sana's extras).
TINY_CALL = {
    "stable_diffusion": {"height": 32, "width": 32},
    "stable_diffusion_xl": {"height": 32, "width": 32},
    "stable_diffusion_3": {"height": 32, "width": 32, "max_sequence_length": 16},
    "flux": {"height": 32, "width": 32, "max_sequence_length": 16},
    "sana": {
        "height": 32,
        "width": 32,
        "use_resolution_binning": False,
        "complex_human_instruction": None,
        "max_sequence_length": 32,
    },
}


def save_tiny_pipeline(kind: str, folder) -> Path:
    """Build a tiny pipeline and `save_pretrained` it to `folder`; returns the folder."""
    folder = Path(folder)
    build_tiny_pipeline(kind).save_pretrained(folder)
    return folder

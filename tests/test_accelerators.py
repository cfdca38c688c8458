"""Stage accelerators: one per stage in a process, and the DeepSpeed ZeRO-2 config each stage fills in."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from itercomp.accelerators import resolve_deepspeed_config, stage_accelerator
from itercomp.errors import ItercompError

ROOT = Path(__file__).resolve().parents[1]
ZERO2 = ROOT / "recipes" / "configs" / "deepspeed_zero2.json"
STAGES = {  # what the fine-tuner (reward_ft_sdxl) and reward training (rewards_blip) put into the config
    "finetune": {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 4, "gradient_clipping": 1.0},
    "rewards": {"gradient_accumulation_steps": 4, "gradient_clipping": 1.0},
}


def test_a_stage_fills_autos_and_refuses_values_that_contradict_it():
    config = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": 4, "zero_optimization": {}}
    resolved = resolve_deepspeed_config(config, STAGES["finetune"])
    assert resolved["train_micro_batch_size_per_gpu"] == 2 and resolved["gradient_clipping"] == 1.0
    assert config["train_micro_batch_size_per_gpu"] == "auto"  # the input is not changed
    with pytest.raises(ItercompError, match='gradient_accumulation_steps=4.*runs with 8; set it to "auto"'):
        resolve_deepspeed_config(config, {"gradient_accumulation_steps": 8})


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_the_zero2_config_passes_accelerates_checks_once_a_stage_fills_it(stage):
    """What accelerate checks before handing the config to DeepSpeed (Accelerator._prepare_deepspeed): the
    micro-batch is an integer (the fine-tuner prepares no dataloader to infer it from; reward training's comes
    from its loader) and the accumulation steps agree with the stage's, which accelerate would otherwise
    overrule with DeepSpeed's own."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DeepSpeedPlugin

    launch = load_config_from_file(str(ROOT / "recipes" / "configs" / "accelerate_deepspeed_zero2.yaml"))
    assert launch.distributed_type == "DEEPSPEED" and (ROOT / launch.deepspeed_config["deepspeed_config_file"]) == ZERO2
    plugin = DeepSpeedPlugin(hf_ds_config=str(ZERO2))
    assert plugin.zero_stage == 2 and plugin.is_auto("train_micro_batch_size_per_gpu")
    plugin.deepspeed_config.update(resolve_deepspeed_config(plugin.deepspeed_config, STAGES[stage]))
    for key, value in STAGES[stage].items():
        assert not plugin.is_auto(key) and plugin.get_value(key) == value
    plugin.fill_match("gradient_accumulation_steps", must_match=True, gradient_accumulation_steps=4)


@pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None or not torch.cuda.is_available(),
    reason="DeepSpeed runs on GPUs (pip install -e '.[deepspeed]'); on CPU accelerate + DeepSpeed runs every process "
    "as rank 0, so only the config is checked above",
)
def test_zero2_prepares_a_denoiser_and_its_optimizer_on_a_gpu(tmp_path):
    from accelerate.utils import DeepSpeedPlugin

    from gallery.tiny import build_tiny_pipeline
    from itercomp.accelerators import fill_deepspeed_config

    unet = build_tiny_pipeline("stable_diffusion").unet
    accelerator = stage_accelerator(mixed_precision="bf16", deepspeed_plugin=DeepSpeedPlugin(hf_ds_config=str(ZERO2)))
    fill_deepspeed_config(accelerator, **STAGES["finetune"])
    model, optimizer = accelerator.prepare(unet, torch.optim.AdamW(unet.parameters(), lr=1e-5))
    assert accelerator.state.deepspeed_plugin.zero_stage == 2 and optimizer is not None and model is not None


def test_stages_of_one_process_each_get_their_own_mixed_precision():
    assert stage_accelerator(cpu=True, mixed_precision="no").mixed_precision == "no"
    assert stage_accelerator(cpu=True, mixed_precision="bf16").mixed_precision == "bf16"
    assert stage_accelerator(cpu=True).mixed_precision == "no"


def _events(folder: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(folder.rglob("events.out.tfevents.*"))
    assert files, f"no tensorboard event file under {folder}"
    tags = {"scalars": set(), "images": set()}
    for path in files:
        events = EventAccumulator(str(path), size_guidance={"images": 0, "scalars": 0}).Reload()
        tags["scalars"] |= set(events.Tags()["scalars"])
        tags["images"] |= set(events.Tags()["images"])
    return tags


def test_fine_tuning_writes_losses_rewards_and_sample_grids_to_tensorboard(tmp_path):
    from pipelines import shapes_pipeline

    from itercomp.finetune import FeedbackConfig, finetune
    from itercomp.world.vocab import REWARD_ASPECTS

    torch.set_num_threads(1)

    def reward(images, prompts):
        return {a: images[:, c].mean((1, 2)) for c, a in enumerate(REWARD_ASPECTS)}

    config = FeedbackConfig(output_dir=str(tmp_path / "run"), num_inference_steps=4, max_steps=2, batch_size=2,
                            eval_prompts=2, threads=1, cpu=True, report_to="tensorboard")  # fmt: skip
    finetune(shapes_pipeline(), reward, ["a red circle", "a blue square above a green cross"], config)
    tags = _events(tmp_path / "run" / "logs")
    assert {"loss", "reward_loss", "grad_norm", "reward/attribute_binding", "eval/spatial_relationship"} <= tags[
        "scalars"
    ]
    assert {"samples/before", "samples/after"} <= tags["images"]


def test_reward_training_writes_its_losses_to_tensorboard(tmp_path):
    from reward_models.config import RankingDataConfig, RewardTrainConfig
    from reward_models.simulate import make_rankings
    from reward_models.training import train

    torch.set_num_threads(1)
    rankings = make_rankings(RankingDataConfig(output_dir=str(tmp_path / "data"), aspects=("spatial_relationship",),
                                               train_prompts=6, val_prompts=2, test_prompts=0, candidates=3))  # fmt: skip
    train(RewardTrainConfig(rankings=str(rankings), output_dir=str(tmp_path / "rm"), aspects=("spatial_relationship",),
                            epochs=2, batch_rankings=2, width=32, image_layers=1, fusion_layers=1, heads=2, cpu=True,
                            report_to="tensorboard"))  # fmt: skip
    tags = _events(tmp_path / "rm" / "logs")
    assert {"spatial_relationship/train_loss", "spatial_relationship/val_accuracy"} <= tags["scalars"]


def test_report_to_names_the_trackers():
    from itercomp.finetune import FeedbackConfig

    with pytest.raises(ItercompError, match="report_to must be one of none, tensorboard, wandb, all"):
        FeedbackConfig(output_dir="x", report_to="mlflow")


def test_end_processes_destroys_the_process_group_and_is_a_no_op_without_one(tmp_path):
    """A launched process ends its process group before exit (gloo's threads otherwise may abort it at exit)."""
    import torch.distributed as dist

    from itercomp.accelerators import end_processes

    end_processes()  # no group: nothing to do
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    assert dist.is_initialized()
    end_processes()
    assert not dist.is_initialized()

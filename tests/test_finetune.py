"""Reward-feedback fine-tuning: the loss and window math, every pipeline family on tiny components, LoRA,
skipped steps, resume, the regulariser, a rising reward in the shapes world, and a two-process run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from pipelines import shapes_pipeline

from gallery.tiny import build_tiny_pipeline
from itercomp.config import load_config
from itercomp.errors import ItercompError
from itercomp.finetune import FeedbackConfig, FeedbackRunConfig, finetune
from itercomp.finetune.adapters import make_adapter
from itercomp.finetune.config import AWMConfig, DPOConfig, GRPOConfig, SelectConfig, WindowConfig
from itercomp.finetune.loss import (
    advantage_weights,
    all_pairs,
    best_and_worst,
    best_of,
    clipped_policy_loss,
    dpo_loss,
    feedback_loss,
    gaussian_log_prob,
    gradient_steps,
    group_advantages,
    implicit_policy,
    nft_loss,
    optimality_probability,
    refl_step_bounds,
    sde_step,
    weighted_matching_loss,
    weighted_reward,
)
from itercomp.finetune.modes import MODES, register_mode
from itercomp.finetune.modes.base import FeedbackMode, MicroBatch
from itercomp.finetune.oracle_reward import OracleReward
from itercomp.finetune.prediction import vp_noisy, vp_target, x0_from_epsilon, x0_from_v
from itercomp.finetune.regulariser import ArrayPairs, FolderPairs
from itercomp.finetune.sampling import denoise, sample_and_score, seeded_generators
from itercomp.world import REWARD_ASPECTS

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["a red circle and a blue square", "a green cross above a white triangle", "a small yellow circle"]
KINDS = (
    "shapes",
    "shapes_velocity",
    "stable_diffusion",
    "sd_v_prediction",
    "stable_diffusion_xl",
    "stable_diffusion_3",
    "flux",
    "sana",
)
# Text lengths the tiny tokenizers support (gallery.tiny.TINY_CALL).
SEQUENCE = {"stable_diffusion_3": 16, "flux": 16, "flux_guidance": 16, "sana": 32}


def tiny(kind: str):
    if kind.startswith("shapes"):
        return shapes_pipeline("velocity" if kind == "shapes_velocity" else "sample")
    if kind == "sd_v_prediction":
        from diffusers import DDIMScheduler

        pipe = build_tiny_pipeline("stable_diffusion")
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, prediction_type="v_prediction")
        return pipe
    if kind == "flux_guidance":  # a guidance-distilled Flux (FLUX.1-dev style): guidance is an input embedding
        from diffusers import FluxTransformer2DModel

        pipe = build_tiny_pipeline("flux")
        pipe.transformer = FluxTransformer2DModel.from_config(pipe.transformer.config, guidance_embeds=True)
        return pipe
    return build_tiny_pipeline(kind)


def channel_reward(images: torch.Tensor, prompts: list[str]) -> dict[str, torch.Tensor]:
    """A differentiable stand-in for the reward models: one colour channel's mean brightness per aspect."""
    return {aspect: images[:, c].mean((1, 2)) for c, aspect in enumerate(REWARD_ASPECTS)}


def config(tmp_path, kind: str = "shapes", **overrides) -> FeedbackConfig:
    values = dict(
        output_dir=str(tmp_path / "run"),
        num_inference_steps=4,
        max_steps=2,
        batch_size=2,
        learning_rate=1e-3,
        eval_prompts=2,
        threads=1,
        ema_decay=0.9,
        resolution=None if kind.startswith("shapes") else 32,
        max_sequence_length=SEQUENCE.get(kind),
    )
    values.update(overrides)
    return FeedbackConfig(**values)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ---- pure functions ------------------------------------------------------------------------------------------


def test_advantage_weights_clip_and_damp_the_negatives():
    weights = advantage_weights(torch.tensor([3.0, 1.0, -1.0, -4.0]), clip=2.0, negative_weight=0.5)
    assert weights.tolist() == [2.0, 1.0, -0.5, -1.0]
    losses = torch.tensor([0.2, 0.4, 0.6, 0.8])
    assert weighted_matching_loss(losses, weights).item() == pytest.approx((0.4 + 0.4 - 0.3 - 0.8) / 4)
    assert weighted_matching_loss(losses, torch.ones(4)).item() == pytest.approx(losses.mean().item())  # pretraining
    with pytest.raises(ItercompError, match="awm.negative_weight must be in"):
        AWMConfig(negative_weight=1.5)


def test_feedback_loss_is_the_weighted_hinge():
    rewards = {"a": torch.tensor([1.0, 3.0]), "b": torch.tensor([0.0, 0.0])}
    loss = feedback_loss(rewards, {"a": 1.0, "b": 0.5}, hinge=2.0, scale=1e-3)
    # a: mean(relu(2-1), relu(2-3)) = 0.5; b: 0.5 * mean(2, 2) = 1
    assert loss.item() == pytest.approx(1.5e-3)
    r = torch.tensor([1.0, 3.0], requires_grad=True)
    feedback_loss({"a": r}, {"a": 1.0}, 2.0, 1.0).backward()
    assert r.grad.tolist() == [-0.5, 0.0]  # a reward above the hinge gets no push
    with pytest.raises(ValueError, match="no weight"):
        feedback_loss(rewards, {"a": 1.0}, 2.0, 1.0)
    with pytest.raises(ValueError, match="returned only"):
        feedback_loss({"a": rewards["a"]}, {"a": 1.0, "c": 1.0}, 2.0, 1.0)


def test_refl_window_scales_with_the_number_of_steps():
    assert refl_step_bounds(40, (0.75, 1.0)) == (30, 39)  # IterComp's range
    assert refl_step_bounds(20, (0.75, 1.0)) == (15, 19)
    assert refl_step_bounds(4, (0.75, 1.0)) == (3, 3)
    rng = np.random.default_rng(0)
    drawn = {gradient_steps("refl", 40, rng)[0] for _ in range(500)}
    assert drawn == set(range(30, 40))


def test_draft_and_alignprop_windows_end_at_the_last_step():
    rng = np.random.default_rng(0)
    assert gradient_steps("draft", 10, rng, draft_k=3) == [7, 8, 9]
    lengths = set()
    for _ in range(300):
        window = gradient_steps("alignprop", 10, rng, alignprop_max_k=4)
        assert window == list(range(10 - len(window), 10))
        lengths.add(len(window))
    assert lengths == {1, 2, 3, 4}
    with pytest.raises(ValueError, match="mode"):
        gradient_steps("dpo", 10, rng)


def test_best_of_picks_each_prompts_highest_weighted_candidate():
    rewards = {"a": torch.tensor([0.0, 1.0, 0.0, 5.0, 0.0, 0.0]), "b": torch.tensor([2.0, 0.0, 0.0, 0.0, 0.0, 3.0])}
    scores = weighted_reward(rewards, {"a": 1.0, "b": 1.0})
    assert best_of(scores, 3).tolist() == [0, 3]  # prompt 0: candidates 0-2, prompt 1: candidates 3-5
    assert best_of(weighted_reward(rewards, {"a": 1.0, "b": 0.0}), 3).tolist() == [1, 3]  # b ignored
    assert best_of(weighted_reward(rewards, {"a": 0.1, "b": 1.0}), 2).tolist() == [0, 3, 5]
    with pytest.raises(ValueError, match="groups of 4"):
        best_of(scores, 4)


def test_sde_step_is_euler_without_noise_and_keeps_the_marginal_with_it():
    """Flow-GRPO's SDE: noise level 0 is the ODE's Euler step; with noise, a model that knows x0 moves
    x_t ~ (1 - s) x0 + s eps to (1 - s') x0 + s' eps (the marginals are kept, to first order in the step)."""
    x0 = torch.full((1, 3, 4, 4), 0.3)
    x_t = 0.5 * x0 + 0.5 * torch.randn(1, 3, 4, 4)
    mean, std = sde_step(x_t, x0, torch.tensor(0.5), torch.tensor(0.4), noise_level=0.0)
    assert torch.allclose(mean, x_t + (0.4 - 0.5) * (x_t - x0) / 0.5) and float(std) == 0
    torch.manual_seed(0)
    sigma, sigma_next = 0.5, 0.49
    x_t = (1 - sigma) * x0 + sigma * torch.randn(20000, 3, 4, 4)
    mean, std = sde_step(x_t, x0.expand_as(x_t), torch.tensor(sigma), torch.tensor(sigma_next), noise_level=0.7)
    x_next = mean + std * torch.randn_like(mean)
    assert float(std) == pytest.approx(0.7 * (sigma / (1 - sigma)) ** 0.5 * (sigma - sigma_next) ** 0.5, rel=1e-4)
    assert float((x_next - (1 - sigma_next) * x0).std()) == pytest.approx(sigma_next, rel=0.01)
    assert float(x_next.mean()) == pytest.approx((1 - sigma_next) * 0.3, abs=0.01)


def test_gaussian_log_prob_is_the_normal_density_per_image():
    sample, mean = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    std = torch.tensor(0.3)
    expected = torch.distributions.Normal(mean, std).log_prob(sample).flatten(1).mean(1)
    assert torch.allclose(gaussian_log_prob(sample, mean, std), expected, atol=1e-5)


def test_group_advantages_and_the_clipped_policy_loss():
    advantages = group_advantages(torch.tensor([1.0, 3.0, 2.0, 2.0, 5.0, 5.0]), 2)
    assert torch.allclose(advantages, torch.tensor([-1.0, 1.0, 0.0, 0.0, 0.0, 0.0]), atol=1e-3)  # ties teach nothing
    with pytest.raises(ValueError, match="groups of 4"):
        group_advantages(torch.zeros(6), 4)
    adv = torch.tensor([1.0, -1.0])
    log_prob = torch.zeros(2, requires_grad=True)
    loss = clipped_policy_loss(log_prob, torch.zeros(2), adv, clip=0.2)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(0.0) and torch.allclose(log_prob.grad, torch.tensor([-0.5, 0.5]))
    # past the clip range in the advantage's direction the gradient stops; against it, it does not
    log_prob = torch.full((2,), 0.5, requires_grad=True)
    clipped_policy_loss(log_prob, torch.zeros(2), adv, clip=0.2).backward()
    assert log_prob.grad[0] == 0 and log_prob.grad[1] > 0


def test_dpo_loss_falls_when_the_preferred_image_is_denoised_better():
    zero = torch.zeros(4)
    assert float(dpo_loss(zero, zero, zero, zero, beta=100.0)) == pytest.approx(np.log(2))
    better = dpo_loss(zero - 0.01, zero, zero, zero, beta=100.0)  # lower error on the preferred image
    worse = dpo_loss(zero, zero - 0.01, zero, zero, beta=100.0)
    assert float(better) < np.log(2) < float(worse)
    winners, losers = best_and_worst(torch.tensor([0.1, 0.9, 0.5, 0.4, 0.4, 0.4]), 3)
    assert winners.tolist() == [1] and losers.tolist() == [0]  # the second prompt's candidates tie


def test_rpo_alpha_adds_the_preferred_images_denoising_error():
    """DPO trains only the margin: lowering both errors alike leaves it unchanged. RPO's term also rewards a lower
    error on the preferred image, by rpo_alpha per unit of its mean."""
    errors_w, errors_l, zero = torch.tensor([0.2, 0.4]), torch.tensor([0.3, 0.1]), torch.zeros(2)
    dpo = float(dpo_loss(errors_w, errors_l, zero, zero, beta=10.0))
    assert float(dpo_loss(errors_w - 0.1, errors_l - 0.1, zero, zero, beta=10.0)) == pytest.approx(dpo)
    assert float(dpo_loss(errors_w, errors_l, zero, zero, beta=10.0, rpo_alpha=2.0)) == pytest.approx(dpo + 2 * 0.3)
    w = errors_w.clone().requires_grad_(True)
    dpo_loss(w, errors_l, zero, zero, beta=10.0, rpo_alpha=2.0).backward()
    plain = errors_w.clone().requires_grad_(True)
    dpo_loss(plain, errors_l, zero, zero, beta=10.0).backward()
    assert torch.allclose(w.grad - plain.grad, torch.full((2,), 1.0))  # d(2 * mean)/d e_w = 2 / 2 pairs
    with pytest.raises(ItercompError, match="dpo.rpo_alpha must be >= 0"):
        DPOConfig(rpo_alpha=-1.0)


def test_nft_loss_is_lowest_at_the_reference_moved_towards_good_and_away_from_bad_targets():
    """DiffusionNFT's loss on one sample, r L((1-b) v_old + b v) + (1-r) L((1+b) v_old - b v) with L the squared
    error to the target v*, is minimal at v = v_old + ((2r - 1) / b) (v* - v_old): a bounded step, unlike the
    advantage-weighted loss (whose negative part falls without end as v leaves v*)."""
    reference, target = torch.tensor([0.2, -0.4]), torch.tensor([1.0, 0.6])
    for r, beta in ((1.0, 1.0), (0.0, 1.0), (0.75, 0.5), (0.5, 2.0)):
        v = torch.zeros(2, requires_grad=True)
        optimizer = torch.optim.SGD([v], lr=0.1)
        for _ in range(500):
            optimizer.zero_grad()
            losses = [((implicit_policy(v, reference, b) - target) ** 2).sum()[None] for b in (beta, -beta)]
            nft_loss(*losses, torch.tensor([r])).backward()
            optimizer.step()
        expected = reference + (2 * r - 1) / beta * (target - reference)
        assert torch.allclose(v.detach(), expected, atol=1e-4), (r, beta)
    assert optimality_probability(torch.tensor([-4.0, -1.0, 0.0, 1.0, 4.0]), 2.0).tolist() == [0, 0.25, 0.5, 0.75, 1]
    with pytest.raises(ItercompError, match="awm.objective='nfts'; use one of weighted, nft"):
        AWMConfig(objective="nfts")
    with pytest.raises(ItercompError, match="awm.objective=nft trains around the moving average.*ema_decay > 0"):
        FeedbackConfig(output_dir="x", grad_mode="awm", awm=AWMConfig(objective="nft"), ema_decay=0.0)


def test_all_pairs_takes_every_differing_pair_of_a_prompt_better_first():
    scores = torch.tensor([0.1, 0.9, 0.5, 0.4, 0.4, 0.4, 2.0, 0.0, 1.0])
    winners, losers = all_pairs(scores, 3)
    pairs = sorted(zip(winners.tolist(), losers.tolist()))
    # prompt 0: 1>0, 1>2, 2>0; prompt 1 ties throughout; prompt 2: 6>7, 6>8, 8>7 (indices are flat)
    assert pairs == [(1, 0), (1, 2), (2, 0), (6, 7), (6, 8), (8, 7)]
    assert all(scores[better] > scores[worse] for better, worse in pairs)
    assert sorted(zip(*[t.tolist() for t in all_pairs(scores, 3, min_gap=0.5)])) == [(1, 0), (6, 7), (6, 8), (8, 7)]
    with pytest.raises(ValueError, match="groups of 4"):
        all_pairs(torch.zeros(6), 4)


def test_dpo_pairing_all_trains_on_every_differing_pair_of_the_own_samples(tmp_path):
    """pairing=all pairs each prompt's own samples every way their rewards differ; best_worst takes one pair."""
    from itercomp.accelerators import stage_accelerator
    from itercomp.finetune.modes.dpo import DPOMode

    adapter, accelerator = make_adapter(shapes_pipeline(), None, None), stage_accelerator(cpu=True)
    sizes = {}
    for pairing in ("best_worst", "all"):
        settings = DPOConfig(pairing=pairing, samples_per_prompt=3, sample_steps=2)
        mode = DPOMode(config(tmp_path, grad_mode="dpo", dpo=settings), adapter, channel_reward, accelerator)
        batch = mode.sample(PROMPTS[:2], np.random.default_rng(0), 0, 0)
        assert batch.data["preferred"].shape == batch.data["other"].shape == (len(batch.prompts), 3, 32, 32)
        sizes[pairing] = len(batch.prompts)
        scores = weighted_reward(batch.rewards, mode.config.reward_weights)
        assert len(set(scores.tolist())) == 6  # the channel reward does not tie here
    assert sizes == {"best_worst": 2, "all": 6}  # 3 pairs from each prompt's 3 samples
    with pytest.raises(ItercompError, match="dpo.pairing='ranked'; use one of best_worst, all"):
        DPOConfig(pairing="ranked")


def test_dpo_timesteps_per_pair_average_independent_draws(tmp_path):
    """Each of a pair's timesteps_per_pair copies gets its own time and noise: the loss is their mean, so its
    spread over seeds shrinks (about 1/k of the variance), while its expectation stays the one-draw loss's."""
    from itercomp.finetune.modes.dpo import DPOMode

    torch.manual_seed(0)
    adapter = make_adapter(shapes_pipeline(), None, None)
    images = torch.rand(4, 3, 32, 32)
    batch = MicroBatch(PROMPTS[:2], {"preferred": images[:2], "other": images[2:]})
    modes = {  # their references: the starting weights
        k: DPOMode(
            config(tmp_path, grad_mode="dpo", dpo=DPOConfig(timesteps_per_pair=k)), adapter, channel_reward, None
        )
        for k in (1, 8)
    }
    with torch.no_grad():
        for p in adapter.denoiser.parameters():  # move the model off its reference
            p.add_(0.02 * torch.randn_like(p))

    def losses(draws: int) -> np.ndarray:
        with torch.no_grad():
            return np.array([float(modes[draws].loss(batch, np.random.default_rng(seed))[0]) for seed in range(16)])

    one, eight = losses(1), losses(8)
    assert eight.var() < 0.5 * one.var()
    assert abs(eight.mean() - one.mean()) < 3 * np.sqrt(one.var() / 16 + eight.var() / 16)
    with pytest.raises(ItercompError, match="dpo.timesteps_per_pair must be >= 1"):
        DPOConfig(timesteps_per_pair=0)


def test_oracle_reward_scores_renders_and_refuses_gradient_modes(tmp_path):
    from itercomp.world import render

    prompt = "a red circle to the left of a blue square"
    image = torch.from_numpy(render(prompt, seed=0)).float().permute(2, 0, 1) / 255
    rewards = OracleReward()(torch.stack([image, torch.zeros_like(image)]), [prompt, prompt])
    assert set(rewards) == set(REWARD_ASPECTS)
    value = rewards["attribute_binding"].tolist()
    assert value[0] > 1.9 and value[1] == 0  # correct (1) + the mean soft score of the predicates
    with pytest.raises(ItercompError, match="reward=oracle has no gradient"):
        FeedbackRunConfig(reward="oracle", grad_mode="refl")
    with pytest.raises(ItercompError, match="'learned'.*'oracle'"):
        FeedbackRunConfig(reward="detector", grad_mode="grpo")
    with pytest.raises(ItercompError, match="has no gradient"):
        finetune(shapes_pipeline(), OracleReward(), PROMPTS, config(tmp_path, max_steps=1))


def test_sampling_with_fresh_noise_draws_it_from_each_images_generator():
    from accelerate import Accelerator

    from itercomp.models.scheduler import FlowMatchEtaScheduler

    pipe = tiny("shapes")
    pipe.scheduler = FlowMatchEtaScheduler.from_config(pipe.scheduler.config, eta=0.7)
    adapter, settings = make_adapter(pipe), config(Path("unused"), guidance_scale=1.0)
    prompts = ["a red circle", "a blue square"]

    def draw(seeds):
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        return sample_and_score(adapter, channel_reward, prompts, generators, settings, Accelerator(cpu=True))[0]

    first = draw((1, 2))
    assert torch.equal(first, draw((1, 2)))  # seeded by the generators, not the global RNG
    assert torch.equal(draw((1, 3))[0], first[0]) and not torch.equal(draw((1, 3))[1], first[1])
    generators = [torch.Generator().manual_seed(s) for s in (1, 2)]
    own = pipe(prompts, num_inference_steps=4, guidance_scale=1.0, generator=generators, output_type="pt").images
    assert torch.allclose(first, own, atol=1e-5)  # what the fine-tuner trains on is what the pipeline draws


def test_x0_formulas_match_the_ddim_scheduler():
    from diffusers import DDIMScheduler

    x_t, output = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    for kind, formula in (("epsilon", x0_from_epsilon), ("v_prediction", x0_from_v)):
        scheduler = DDIMScheduler(prediction_type=kind, clip_sample=False)
        scheduler.set_timesteps(10)
        t = scheduler.timesteps[3]
        expected = scheduler.step(output, t, x_t).pred_original_sample
        assert torch.allclose(formula(x_t, output, scheduler.alphas_cumprod[t]), expected, atol=1e-5)
    # the training target inverts the same parameterisation
    x0, noise, abar = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([0.3, 0.9])
    v = vp_target(x0, noise, abar, "v_prediction")
    assert torch.allclose(x0_from_v(vp_noisy(x0, noise, abar), v, abar), x0, atol=1e-5)


def test_config_errors_name_the_field_and_the_fix(tmp_path):
    with pytest.raises(ItercompError, match="grad_mode='ddpo'"):
        FeedbackConfig(grad_mode="ddpo")
    with pytest.raises(ItercompError, match=r"window.grad_step_range.*30-39"):
        FeedbackConfig(window=WindowConfig(grad_step_range=(0.9, 0.5)))
    with pytest.raises(ItercompError, match="needs regulariser_data"):
        FeedbackConfig(pretrain_loss_weight=0.1)
    with pytest.raises(ItercompError, match="draft_k=50 exceeds"):
        FeedbackConfig(grad_mode="draft", window={"draft_k": 50})
    FeedbackConfig(grad_mode="refl", window={"draft_k": 50})  # a section is checked against the steps when in use
    with pytest.raises(ItercompError, match=r"grpo.group_size must be >= 2"):
        GRPOConfig(group_size=1)
    with pytest.raises(ItercompError, match=r"grpo.train_steps=4 must be in 1..3"):
        FeedbackConfig(grad_mode="grpo", num_inference_steps=4, grpo=GRPOConfig(train_steps=4))
    with pytest.raises(ItercompError, match=r"dpo: unknown keys \['dpo_beta'\]; valid keys are \['beta'"):
        FeedbackConfig(grad_mode="dpo", dpo={"dpo_beta": 10.0})
    weights = FeedbackConfig(reward_weights="attribute_binding=1,spatial_relationship=0.5").reward_weights
    assert weights == {"attribute_binding": 1.0, "spatial_relationship": 0.5}
    with pytest.raises(ItercompError, match="aspect=weight"):
        FeedbackConfig(reward_weights="attribute_binding")
    with pytest.raises(ItercompError, match=r"lr_schedule='linear'; use one of constant, cosine"):
        FeedbackConfig(lr_schedule="linear")
    with pytest.raises(ItercompError, match=r"min_lr_ratio must be in \[0, 1\]"):
        FeedbackConfig(lr_schedule="cosine", min_lr_ratio=3)


def test_mode_sections_round_trip_through_yaml_and_flags(tmp_path):
    from itercomp.config import save_config

    cfg = FeedbackConfig(
        grad_mode="grpo",
        grpo=GRPOConfig(group_size=8, train_steps=3),
        dpo=DPOConfig(beta=50.0, online_pairs=False, preference_pairs="r.jsonl"),
        window=WindowConfig(grad_step_range=(0.5, 1.0)),
    )
    save_config(cfg, tmp_path / "saved.yaml")
    saved = yaml.safe_load((tmp_path / "saved.yaml").read_text())
    assert saved["grpo"]["group_size"] == 8 and saved["window"]["grad_step_range"] == [0.5, 1.0]
    assert load_config(FeedbackConfig, ["--config", str(tmp_path / "saved.yaml")]) == cfg
    (tmp_path / "nested.yaml").write_text("grad_mode: grpo\ngrpo: {group_size: 6}\n")
    argv = ["--config", str(tmp_path / "nested.yaml"), "--grpo.train-steps", "2", "--window.draft_k", "3"]
    again = load_config(FeedbackConfig, argv)
    assert again.grpo == GRPOConfig(group_size=6, train_steps=2) and again.window.draft_k == 3
    with pytest.warns(DeprecationWarning, match="'lr' is deprecated, use 'learning_rate'"):
        assert load_config(FeedbackConfig, ["--lr", "3e-4"]).learning_rate == 3e-4


class OwnSamplesMode(FeedbackMode):
    """The smallest mode: the denoising loss on the model's own samples, the reward only logged."""

    def describe(self) -> str:
        return "own samples"

    def sample(self, prompts, rng, step, micro):
        generators = seeded_generators(rng, len(prompts))
        images, rewards = sample_and_score(
            self.adapter, self.reward_fn, prompts, generators, self.config, self.accelerator
        )
        return MicroBatch(prompts, {"images": images.clamp(0, 1)}, rewards=rewards)

    def loss(self, batch, rng):
        generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
        return self.adapter.pretrain_loss(batch.data["images"], batch.prompts, generator), batch.rewards


def test_a_new_mode_is_one_class_and_one_registration(tmp_path):
    register_mode("own_samples", OwnSamplesMode, section="select", differentiates_reward=False)
    try:
        FeedbackRunConfig(reward="oracle", grad_mode="own_samples")  # a black box serves it
        pipe = shapes_pipeline()
        before = snapshot(pipe.transformer)
        metrics = finetune(pipe, OracleReward(), PROMPTS[:2], config(tmp_path, grad_mode="own_samples", eval_prompts=0))
        assert metrics["steps"] == 2 and all(np.isfinite(h["loss"]) for h in metrics["history"])
        assert any(not torch.equal(before[k], v) for k, v in pipe.transformer.state_dict().items())
    finally:
        MODES.pop("own_samples")
    with pytest.raises(ItercompError, match="grad_mode='own_samples' is unknown; use one of refl, draft"):
        FeedbackConfig(grad_mode="own_samples")


def test_shipped_configs_load_and_sdxl_has_the_paper_settings():
    sdxl = load_config(FeedbackRunConfig, ["--config", str(ROOT / "recipes/configs/reward_ft_sdxl.yaml")])
    assert sdxl.pretrained == "stabilityai/stable-diffusion-xl-base-1.0"
    assert sdxl.num_inference_steps == 40 and sdxl.grad_mode == "refl"
    assert refl_step_bounds(sdxl.num_inference_steps, sdxl.window.grad_step_range) == (30, 39)
    assert sdxl.learning_rate == 1e-5 and sdxl.window.reward_hinge == 2.0 and sdxl.window.reward_loss_scale == 1e-3
    assert sdxl.use_lora and sdxl.max_steps == 200 and sdxl.max_grad_norm == 1.0 and sdxl.guidance_scale == 1.0
    assert sdxl.reward_weights == dict.fromkeys(REWARD_ASPECTS, 1.0)
    shapes = load_config(
        FeedbackRunConfig,
        ["--config", str(ROOT / "recipes/configs/reward_ft_shapes.yaml"), "--max_steps", "7"],
    )
    assert shapes.pretrained is None and shapes.max_steps == 7
    assert shapes.learning_rate == FeedbackConfig.learning_rate == 1e-4  # the default, not restated in the YAML
    assert shapes.window.grad_guidance_scale == 3.0


def test_unsupported_pipeline_is_a_clear_error():
    class OtherPipeline:
        pass

    with pytest.raises(ItercompError, match="does not support OtherPipeline.*StableDiffusionXLPipeline"):
        make_adapter(OtherPipeline())


# ---- the adapters reproduce each pipeline's own sampling ---------------------------------------------------


@pytest.mark.parametrize("kind", (*KINDS, "flux_guidance"))
def test_adapter_sampling_matches_the_pipeline(kind):
    """The adapter's full chain (x0 at the last step, decoded) gives the pipeline's own images: encoding,
    noise, schedule, guidance, x0 and decoding are those of the real sampler."""
    torch.set_num_threads(1)
    pipe = tiny(kind)
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval()  # the tiny text encoders have dropout
    guidance = {"flux": 1.0, "flux_guidance": 3.5}.get(kind, 2.0)  # Flux without an embedding: true CFG only
    adapter = make_adapter(pipe, None if kind.startswith("shapes") else 32, SEQUENCE.get(kind))
    call = {} if kind.startswith("shapes") else {"height": 32, "width": 32}
    if kind in SEQUENCE:
        call["max_sequence_length"] = SEQUENCE[kind]
    if kind == "sana":
        call.update(use_resolution_binning=False, complex_human_instruction=None)
    prompts = PROMPTS[:2]
    generators = [torch.Generator().manual_seed(s) for s in (1, 2)]
    expected = pipe(
        prompts, num_inference_steps=4, guidance_scale=guidance, generator=generators, output_type="pt", **call
    )
    expected = expected.images
    with torch.no_grad():
        cond = adapter.encode(prompts, guidance=guidance != 1)
        latents = adapter.initial_latents([torch.Generator().manual_seed(s) for s in (1, 2)])
        adapter.set_timesteps(4)
        images = adapter.decode(denoise(adapter, latents, cond, range(4), guidance, score_last=True))
    assert images.shape == expected.shape == (2, 3, 32, 32)
    # An x0-predicting DiT: the adapter scores the model's own x0 at the last step; the pipeline's last Euler
    # step (to sigma 0 from 0.001, velocity clipped at MIN_SIGMA) stops just short of it.
    assert torch.allclose(images, expected, atol=1e-2 if kind == "shapes" else 1e-4)


# ---- fine-tuning each family ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_finetune_changes_the_denoiser_only(kind, tmp_path):
    torch.set_num_threads(1)
    pipe = tiny(kind)
    adapter = make_adapter(pipe, None if kind.startswith("shapes") else 32)
    before_denoiser = snapshot(adapter.denoiser)
    frozen = {name: snapshot(m) for name, m in adapter.frozen_modules().items()}
    assert frozen, "a pipeline with no frozen part"
    # every window on some family, and the black-box modes (select, dpo, grpo) on latent ones
    modes = {"flux": "draft", "sana": "alignprop", "stable_diffusion_xl": "select", "sd_v_prediction": "dpo"}
    mode = {**modes, "stable_diffusion_3": "grpo"}.get(kind, "refl")
    checkpointing = kind in ("shapes_velocity", "sd_v_prediction", "flux")  # and recomputed activations on some
    sections = {"window": WindowConfig(draft_k=2), "grpo": GRPOConfig(kl_beta=0.1)}
    cfg = config(tmp_path, kind, grad_mode=mode, gradient_checkpointing=checkpointing, **sections)
    metrics = finetune(pipe, channel_reward, PROMPTS, cfg)

    assert metrics["steps"] == 2 and metrics["skipped_steps"] == 0
    assert all(np.isfinite(h["loss"]) for h in metrics["history"])
    after = adapter.denoiser.state_dict()
    changed = [k for k, v in before_denoiser.items() if v.is_floating_point() and not torch.equal(v, after[k])]
    floating = [k for k, v in before_denoiser.items() if v.is_floating_point()]
    assert len(changed) >= 0.9 * len(floating), f"{len(changed)} of {len(floating)} denoiser tensors changed"
    for name, module in adapter.frozen_modules().items():
        assert all(torch.equal(v, module.state_dict()[k]) for k, v in frozen[name].items()), name
        assert all(not p.requires_grad and p.grad is None for p in module.parameters()), name
    assert (tmp_path / "run" / "pipeline" / "model_index.json").is_file()
    assert set(metrics["eval"]["before"]) == set(REWARD_ASPECTS) == set(metrics["eval"]["after"])


def test_lora_trains_adapters_only_and_round_trips(tmp_path):
    torch.set_num_threads(1)
    pipe = tiny("stable_diffusion")
    base = snapshot(pipe.unet)
    cfg = config(tmp_path, "stable_diffusion", use_lora=True, lora_rank=2, lora_alpha=4.0, ema_decay=0.0)
    finetune(pipe, channel_reward, PROMPTS, cfg)

    merged = pipe.unet.state_dict()
    assert set(merged) == set(base)  # LoRA merged away: a plain UNet again
    targets = ("to_q", "to_k", "to_v", "to_out.0")
    deltas = {k: merged[k] - base[k] for k in base if k.endswith(".weight") and k.rsplit(".", 1)[0].endswith(targets)}
    assert deltas and any(d.abs().max() > 0 for d in deltas.values())
    # each change is rank <= r (up to float rounding of W + BA - W)
    assert all(torch.linalg.matrix_rank(d, rtol=1e-3) <= 2 for d in deltas.values())
    untouched = [k for k in base if k not in deltas]
    assert all(torch.equal(base[k], merged[k]) for k in untouched)

    # lora/ loads into a fresh copy of the base model with diffusers' own loader and gives the merged outputs
    fresh = tiny("stable_diffusion")
    fresh.load_lora_weights(tmp_path / "run" / "lora")
    x, t, text = torch.randn(1, 4, 16, 16), torch.tensor([500]), torch.randn(1, 5, 32)
    with torch.no_grad():
        assert torch.allclose(fresh.unet(x, t, text).sample, pipe.unet(x, t, text).sample, atol=1e-4)
    from diffusers import StableDiffusionPipeline

    saved = StableDiffusionPipeline.from_pretrained(tmp_path / "run" / "pipeline")
    assert torch.equal(saved.unet.state_dict()["conv_in.weight"], merged["conv_in.weight"])


def test_lora_on_the_shapes_dit_round_trips_through_peft_files(tmp_path):
    from itercomp.finetune.lora import load_lora, merge_lora

    torch.set_num_threads(1)
    pipe = shapes_pipeline()
    finetune(pipe, channel_reward, PROMPTS, config(tmp_path, use_lora=True, lora_rank=2, ema_decay=0.0))
    fresh = shapes_pipeline()
    load_lora(fresh, "transformer", tmp_path / "run" / "lora")
    merge_lora(fresh.transformer)
    for k, v in pipe.transformer.state_dict().items():
        assert torch.allclose(v, fresh.transformer.state_dict()[k], atol=1e-6), k


def test_non_finite_gradient_step_is_skipped_and_counted(tmp_path):
    torch.set_num_threads(1)
    calls = []

    def flaky(images, prompts):
        calls.append(1)
        rewards = channel_reward(images, prompts)
        if len(calls) == 2:  # the second optimizer step sees a NaN reward
            rewards["attribute_binding"] = rewards["attribute_binding"] * float("nan")
        return rewards

    pipe = shapes_pipeline()
    metrics = finetune(pipe, flaky, PROMPTS, config(tmp_path, max_steps=3, eval_prompts=0, checkpoint_every=1))
    assert metrics["steps"] == 3 and metrics["skipped_steps"] == 1
    assert [h["skipped"] for h in metrics["history"]] == [False, True, False]
    assert all(torch.isfinite(p).all() for p in pipe.transformer.parameters())


# ---- precision --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_lora", [False, True])
def test_a_bfloat16_pipeline_trains_through_float32_master_weights(tmp_path, use_lora):
    """At a real fine-tuning learning rate a bf16 weight cannot move (1e-5 is below its resolution): the trained
    weights become float32, change and stay finite, and the saved pipeline samples finite images."""
    from diffusers import StableDiffusionPipeline

    torch.set_num_threads(1)
    pipe = tiny("stable_diffusion").to(torch.bfloat16)
    before = {k: v.float() for k, v in snapshot(pipe.unet).items()}
    cfg = config(tmp_path, "stable_diffusion", learning_rate=1e-5, max_steps=2, ema_decay=0.0, mixed_precision="bf16",
                 cpu=True, use_lora=use_lora, lora_rank=2, eval_prompts=0)  # fmt: skip
    metrics = finetune(pipe, channel_reward, PROMPTS, cfg)
    assert metrics["skipped_steps"] == 0 and all(h["grad_norm"] > 0 for h in metrics["history"])
    after = pipe.unet.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k].float())]
    assert changed and all(torch.isfinite(v).all() for v in after.values())
    if not use_lora:
        assert pipe.unet.dtype == torch.float32 and len(changed) == len(before)
    assert pipe.vae.dtype == pipe.text_encoder.dtype == torch.bfloat16  # the frozen modules stay half precision
    saved = StableDiffusionPipeline.from_pretrained(tmp_path / "run" / "pipeline").to(torch.float32)
    images = saved(PROMPTS[:1], num_inference_steps=2, height=32, width=32, output_type="np").images
    assert np.isfinite(images).all()


def test_a_float16_pipeline_is_refused_without_a_precision_that_can_train_it(tmp_path):
    torch.set_num_threads(1)
    with pytest.raises(ItercompError, match="set mixed_precision=fp16"):
        finetune(tiny("stable_diffusion").to(torch.float16), channel_reward, PROMPTS,
                 config(tmp_path, "stable_diffusion", cpu=True))  # fmt: skip
    with pytest.raises(ItercompError, match="no autocast on cpu.*set mixed_precision=bf16"):
        finetune(tiny("stable_diffusion").to(torch.float16), channel_reward, PROMPTS,
                 config(tmp_path, "stable_diffusion", cpu=True, mixed_precision="fp16"))  # fmt: skip
    assert not (tmp_path / "run" / "pipeline").exists()
    # bf16 autocast casts the frozen float16 modules to bfloat16 and trains the float32 copy
    pipe = tiny("stable_diffusion").to(torch.float16)
    finetune(pipe, channel_reward, PROMPTS, config(tmp_path, "stable_diffusion", cpu=True, mixed_precision="bf16",
                                                   max_steps=1, eval_prompts=0))  # fmt: skip
    assert pipe.unet.dtype == torch.float32 and all(torch.isfinite(p).all() for p in pipe.unet.parameters())


def test_a_zero_gradient_under_a_non_zero_loss_is_skipped_and_a_run_of_only_those_is_not_saved(tmp_path):
    torch.set_num_threads(1)

    def flat(images, prompts):  # a reward that ignores the images: loss > 0, gradient exactly zero
        return {a: torch.zeros(len(prompts)) + 0.0 * images.sum() for a in REWARD_ASPECTS}

    with pytest.raises(ItercompError, match="all 2 steps were skipped"):
        finetune(shapes_pipeline(), flat, PROMPTS, config(tmp_path, max_steps=2, eval_prompts=0))
    assert not (tmp_path / "run" / "pipeline").exists()


def test_weights_that_turn_non_finite_stop_the_run_before_anything_is_saved(tmp_path):
    torch.set_num_threads(1)
    with pytest.raises(ItercompError, match="became non-finite at step 1"):
        finetune(shapes_pipeline(), channel_reward, PROMPTS,
                 config(tmp_path, max_steps=2, eval_prompts=0, learning_rate=float("inf")))  # fmt: skip
    assert not (tmp_path / "run" / "pipeline").exists()


def test_max_minutes_stops_after_the_step_that_spends_them(tmp_path):
    torch.set_num_threads(1)
    metrics = finetune(shapes_pipeline(), channel_reward, PROMPTS,
                       config(tmp_path, max_steps=50, max_minutes=1e-6, eval_prompts=0))  # fmt: skip
    assert metrics["steps"] == 1 and (tmp_path / "run" / "pipeline" / "model_index.json").is_file()
    assert json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())["step"] == 1


def test_resume_continues_at_the_saved_step(tmp_path):
    """Weights, optimizer and the learning-rate schedule (a cosine decay over 3 steps to a quarter) continue."""
    torch.set_num_threads(1)
    schedule = {"lr_schedule": "cosine", "lr_decay_steps": 3, "min_lr_ratio": 0.25, "eval_prompts": 0}
    straight = shapes_pipeline()
    cfg = config(tmp_path / "a", max_steps=4, **schedule)
    full = finetune(straight, channel_reward, PROMPTS, cfg)
    expected = [cfg.learning_rate * f for f in (1.0, 0.25 + 0.75 * 0.75, 0.25 + 0.75 * 0.25, 0.25)]
    assert [h["learning_rate"] for h in full["history"]] == pytest.approx(expected)

    cut = shapes_pipeline()
    finetune(cut, channel_reward, PROMPTS, config(tmp_path / "b", max_steps=2, checkpoint_every=1, **schedule))
    state = json.loads((tmp_path / "b" / "run" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 2
    resumed = shapes_pipeline()  # a fresh process: base weights, then the checkpoint
    again = finetune(resumed, channel_reward, PROMPTS, config(tmp_path / "b", max_steps=4, **schedule))
    assert [h["step"] for h in again["history"]] == [1, 2, 3, 4]
    assert [h["learning_rate"] for h in again["history"]] == pytest.approx(expected)
    for a, b in zip(full["history"], again["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    for (name, p), q in zip(straight.transformer.named_parameters(), resumed.transformer.parameters()):
        assert torch.allclose(p, q, atol=1e-6), name


def test_regulariser_adds_a_real_denoising_loss(tmp_path):
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(6, 32, 32, 3), dtype=np.uint8)
    pairs = ArrayPairs(images, [PROMPTS[i % 3] for i in range(6)])
    for kind in ("shapes", "stable_diffusion", "flux"):  # pixel flow, VP latents, packed flow latents
        pipe = tiny(kind)
        adapter = make_adapter(pipe, None if kind == "shapes" else 32, SEQUENCE.get(kind))
        pipe.text_encoder.eval()
        adapter.denoiser.requires_grad_(True)
        batch, prompts = pairs.sample(2, rng)
        loss = adapter.pretrain_loss(batch, prompts, torch.Generator().manual_seed(0))
        loss.backward()
        grads = [p.grad for p in adapter.denoiser.parameters()]
        assert torch.isfinite(loss) and loss > 0, kind
        assert sum(g is not None and g.abs().sum() > 0 for g in grads) >= 0.8 * len(grads), kind

    weight = 0.5
    cfg = config(tmp_path, pretrain_loss_weight=weight, regulariser_data="unused: data passed in", eval_prompts=0)
    metrics = finetune(shapes_pipeline(), channel_reward, PROMPTS, cfg, regulariser_data=pairs)
    for h in metrics["history"]:
        assert h["pretrain_loss"] > 0
        assert h["loss"] == pytest.approx(h["reward_loss"] + weight * h["pretrain_loss"], rel=1e-5)


def test_folder_pairs_read_jsonl_world_sample_and_caption_layouts(tmp_path):
    red = np.zeros((8, 8, 3), dtype=np.uint8)
    red[..., 0] = 230
    (tmp_path / "a").mkdir()
    Image.fromarray(red).save(tmp_path / "a" / "x.png")
    (tmp_path / "a" / "prompts.jsonl").write_text(json.dumps({"image": "x.png", "prompt": "a red square"}) + "\n")
    (tmp_path / "b" / "images").mkdir(parents=True)
    Image.fromarray(red).save(tmp_path / "b" / "images" / "p1_s0.png")
    (tmp_path / "b" / "prompts.jsonl").write_text(json.dumps({"id": "p1", "prompt": "a red square"}) + "\n")
    (tmp_path / "c").mkdir()
    Image.fromarray(red).save(tmp_path / "c" / "y.png")
    (tmp_path / "c" / "y.txt").write_text("a red square\n")
    for name in "abc":
        images, prompts = FolderPairs(tmp_path / name).sample(2, np.random.default_rng(0))
        assert images.shape == (2, 3, 8, 8) and prompts == ["a red square"] * 2
        assert images[:, 0].max().item() == pytest.approx(230 / 255)
    with pytest.raises(ItercompError, match="no \\(image, prompt\\) pairs"):
        FolderPairs(tmp_path / "a" / "..")


def test_mean_reward_rises_in_the_shapes_world(tmp_path):
    """25 ReFL steps (learning rate 1e-2: the tiny x0-predicting model moves little at 1e-3) on a tiny random
    shapes model with reward = mean red: the fixed evaluation batch (same prompts, same noise) scores higher
    afterwards."""
    torch.set_num_threads(1)

    def redness(images, prompts):
        r = images[:, 0].mean((1, 2))
        return dict.fromkeys(REWARD_ASPECTS, r)

    cfg = config(
        tmp_path, max_steps=25, batch_size=4, eval_prompts=3, ema_decay=0.0, guidance_scale=2.0, learning_rate=1e-2
    )
    metrics = finetune(shapes_pipeline(), redness, PROMPTS, cfg)
    before, after = metrics["eval"]["before"], metrics["eval"]["after"]
    assert after["attribute_binding"] > before["attribute_binding"] + 0.1
    losses = [h["loss"] for h in metrics["history"]]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_select_mode_makes_the_shapes_model_redder(tmp_path):
    """Select mode with reward = mean red: training the denoising loss on the reddest of 4 samples per prompt
    raises the fixed evaluation batch's reward, without any reward gradient. The modes that rank samples run on
    the velocity-predicting tiny model, whose random samples differ from seed to seed (the x0-predicting one
    draws nearly the same image for every seed at this size, which leaves nothing to rank)."""
    torch.set_num_threads(1)

    def redness(images, prompts):
        return dict.fromkeys(REWARD_ASPECTS, images[:, 0].mean((1, 2)).detach())  # no gradient to follow

    cfg = config(
        tmp_path,
        grad_mode="select",
        select=SelectConfig(samples_per_prompt=4),
        max_steps=25,
        batch_size=4,
        eval_prompts=3,
        ema_decay=0.0,
        learning_rate=1e-2,
    )
    metrics = finetune(shapes_pipeline("velocity"), redness, PROMPTS, cfg)
    before, after = metrics["eval"]["before"], metrics["eval"]["after"]
    assert after["attribute_binding"] > before["attribute_binding"] + 0.05
    assert all(h["grad_steps"] == [] and np.isfinite(h["loss"]) for h in metrics["history"])


@pytest.mark.parametrize("mode", ("grpo", "dpo", "awm", "awm-nft"))
def test_black_box_modes_make_the_shapes_model_redder(mode, tmp_path, monkeypatch):
    """GRPO (every stochastic step trained, KL to the start), Diffusion-DPO (best vs worst of 4 samples drawn in 2
    steps) and advantage-weighted matching (groups of 8 in 2 steps; weighted, and DiffusionNFT's objective) with
    reward = mean red and no gradient through it raise the fixed evaluation batch's reward; the evaluation keeps
    the config's own steps."""
    import itercomp.finetune.sampling as sampling

    torch.set_num_threads(1)
    steps_used = []
    original = sampling.sample_and_score

    def recording(adapter, reward_fn, prompts, generators, config, accelerator):
        steps_used.append(config.num_inference_steps)
        return original(adapter, reward_fn, prompts, generators, config, accelerator)

    monkeypatch.setattr(sampling, "sample_and_score", recording)
    module = mode.split("-")[0]
    monkeypatch.setattr(f"itercomp.finetune.modes.{module}.sample_and_score", recording, raising=False)

    def redness(images, prompts):
        return dict.fromkeys(REWARD_ASPECTS, images[:, 0].mean((1, 2)).detach())

    settings = {
        "grpo": {"grpo": GRPOConfig(group_size=8, noise_level=1.0), "max_steps": 60, "learning_rate": 1e-3},
        "dpo": {
            "dpo": DPOConfig(samples_per_prompt=4, beta=100.0, sample_steps=2),
            "max_steps": 20,
            "learning_rate": 1e-2,
        },
        "awm": {"awm": AWMConfig(group_size=8, sample_steps=2), "max_steps": 20, "learning_rate": 1e-2},
        "awm-nft": {  # the old policy is the moving average
            "awm": AWMConfig(group_size=8, sample_steps=2, objective="nft"),
            "max_steps": 20,
            "learning_rate": 1e-2,
            "ema_decay": 0.5,
        },
    }
    cfg = config(tmp_path, grad_mode=module, batch_size=2, eval_prompts=3, **{"ema_decay": 0.0, **settings[mode]})
    metrics = finetune(shapes_pipeline("velocity"), redness, PROMPTS, cfg)
    before, after = metrics["eval"]["before"], metrics["eval"]["after"]
    assert after["attribute_binding"] > before["attribute_binding"] + 0.05
    assert all(np.isfinite(h["loss"]) for h in metrics["history"])
    if module == "grpo":  # every stochastic step of the 4-step chain is trained
        assert all(h["grad_steps"] == [0, 1, 2] for h in metrics["history"])
    else:  # the training samples in 2 steps, the evaluations in the config's 4
        assert set(steps_used) == {2, cfg.num_inference_steps} and cfg.num_inference_steps == 4


def test_grpo_needs_a_rectified_flow_pipeline(tmp_path):
    with pytest.raises(ItercompError, match="not a rectified-flow pipeline.*dpo"):
        finetune(
            tiny("stable_diffusion"), channel_reward, PROMPTS, config(tmp_path, "stable_diffusion", grad_mode="grpo")
        )


# ---- entry points ------------------------------------------------------------------------------------------


def test_missing_base_model_names_itercomp_pretrain(tmp_path, monkeypatch):
    import itercomp.finetune.job as job

    monkeypatch.setattr(job, "SHIPPED_BASE", tmp_path / "no-base")
    with pytest.raises(ItercompError, match="itercomp pretrain"):
        job.load_pipeline(None)
    with pytest.raises(ItercompError, match="not a pipeline folder"):
        job.load_pipeline(str(tmp_path))


def test_cli_finetune_runs_in_process(tmp_path):
    from itercomp.cli import main

    shapes_pipeline().save_pretrained(tmp_path / "base")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    argv = ["finetune", "--pretrained", str(tmp_path / "base"), "--prompts", str(prompts)]
    argv += ["--output_dir", str(tmp_path / "out"), "--max_steps", "1", "--num_inference_steps", "3"]
    argv += ["--batch_size", "2", "--eval_prompts", "2", "--threads", "1", "--reward_weights", "attribute_binding=1"]
    assert main(argv) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["steps"] == 1 and set(metrics["eval"]["after"]) == {"attribute_binding"}
    assert (tmp_path / "out" / "pipeline" / "transformer" / "config.json").is_file()
    assert "reward_weights" in (tmp_path / "out" / "feedback_config.yaml").read_text()
    # a user error is one line and exit code 2
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "itercomp.cli",
            "finetune",
            "--pretrained",
            str(tmp_path / "missing"),
            "--max_steps",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_two_process_recipe_run(tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` on CPU (gloo) with the shipped reward models: both ranks
    train (world size 2), their final weights agree, and the fine-tuned pipeline is written."""
    shapes_pipeline().save_pretrained(tmp_path / "base")
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    command = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    command += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29541"]
    command += [str(ROOT / "recipes" / "reward_ft.py"), "--config", str(ROOT / "recipes/configs/reward_ft_shapes.yaml")]
    command += ["--pretrained", str(tmp_path / "base"), "--output_dir", str(tmp_path / "out"), "--cpu"]
    command += ["--max_steps", "2", "--num_inference_steps", "4", "--batch_size", "2", "--eval_prompts", "4"]
    command += ["--prompts_per_aspect", "4", "--grad_mode", "draft", "--window.draft_k", "2", "--checkpoint_every", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 2 and metrics["images_per_step"] == 4
    ranks = metrics["processes"]
    assert sorted(p["rank"] for p in ranks) == [0, 1] and all(p["micro_batches"] == 2 for p in ranks)
    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert (tmp_path / "out" / "pipeline" / "transformer" / "diffusion_pytorch_model.safetensors").is_file()
    assert set(metrics["eval"]["before"]) == set(REWARD_ASPECTS)


def test_cli_builds_its_help_without_torch():
    code = (
        "import argparse, sys\n"
        "from itercomp.commands import finetune\n"
        "finetune.register(argparse.ArgumentParser())\n"
        "assert 'torch' not in sys.modules, 'torch imported at parse time'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr


def test_preference_pairs_from_rankings_feed_dpo(tmp_path):
    """Every ordered pair of a rankings.jsonl (the shapes test prompts left out) becomes a (preferred, other) pair, and DPO
    trains on them alone with online_pairs off."""
    from itercomp.finetune.preferences import PreferencePairs
    from itercomp.prompts import split_for
    from itercomp.records import Candidate, Ranking

    prompts = {s: next(p for p in (f"a red circle and a {c} square" for c in ("blue", "green", "white", "yellow", "purple")) if split_for(p) == s) for s in ("train", "test")}  # fmt: skip
    # A prompt outside the shapes world trains whatever its hash bucket: its held-out prompts are the caller's.
    prompts["other"] = next(p for p in (f"a photo of {n} dogs" for n in range(100)) if split_for(p) == "test")
    rows = []
    for split, prompt in prompts.items():
        candidates = []
        for k, value in enumerate((250, 120, 10)):
            path = tmp_path / f"{split}{k}.png"
            Image.fromarray(np.full((32, 32, 3), value, np.uint8)).save(path)
            candidates.append(Candidate(f"{split}{k}", "g", k, path.name, ""))
        order = [c.image_id for c in candidates]
        rows.append(Ranking(f"p-{split}", prompt, "attribute_binding", candidates, order, "simulated").to_dict())
    (tmp_path / "rankings.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    pairs = PreferencePairs.from_rankings(tmp_path / "rankings.jsonl")
    # C(3, 2) pairs of each prompt that may train, none of the shapes test prompt
    assert len(pairs) == 6 and set(pairs.prompts) == {prompts["train"], prompts["other"]}
    preferred, other, _ = pairs.sample(16, np.random.default_rng(0))
    assert bool((preferred.mean((1, 2, 3)) > other.mean((1, 2, 3))).all())  # brighter is ranked first
    ranked_only = DPOConfig(online_pairs=False, preference_pairs=str(tmp_path / "rankings.jsonl"))
    cfg = config(tmp_path, grad_mode="dpo", dpo=ranked_only)
    metrics = finetune(shapes_pipeline(), channel_reward, PROMPTS, cfg)
    assert metrics["steps"] == 2 and all(np.isfinite(h["loss"]) for h in metrics["history"])
    with pytest.raises(ItercompError, match="needs dpo.preference_pairs"):
        FeedbackConfig(grad_mode="dpo", dpo=DPOConfig(online_pairs=False))

    # The same rankings' winners (the brightest image of the train prompt) feed select mode on their own.
    from itercomp.finetune.preferences import RankedWinners

    winners = RankedWinners.from_rankings(tmp_path / "rankings.jsonl")
    assert winners.prompts == [prompts["train"], prompts["other"]]
    assert winners.images[0].mean().item() == pytest.approx(250 / 255)
    pipe = shapes_pipeline()
    before = snapshot(pipe.transformer)
    cfg = config(tmp_path / "select", grad_mode="select",
                 select=SelectConfig(online=False, winners=str(tmp_path / "rankings.jsonl")))  # fmt: skip
    metrics = finetune(pipe, channel_reward, PROMPTS, cfg)
    assert all(np.isfinite(h["loss"]) and h["rewards"] == {} for h in metrics["history"])
    assert any(not torch.equal(before[k], v) for k, v in pipe.transformer.state_dict().items())
    with pytest.raises(ItercompError, match="needs select.winners"):
        FeedbackConfig(grad_mode="select", select=SelectConfig(online=False))


@pytest.mark.parametrize("kind", ["stable_diffusion", "stable_diffusion_xl", "stable_diffusion_3", "flux", "sana"])
def test_the_text_cache_encodes_each_prompt_once_and_gives_the_batch_encodings(kind):
    from itercomp.finetune.text_cache import NULL

    torch.set_num_threads(1)
    pipe = tiny(kind)
    for module in pipe.components.values():  # as the trainer sets them: no dropout in the frozen text encoders
        if isinstance(module, torch.nn.Module):
            module.eval()
    plain = make_adapter(pipe, 32, SEQUENCE.get(kind))
    cached = make_adapter(pipe, 32, SEQUENCE.get(kind))
    cached.use_text_cache(64)
    for prompts, guidance in ((PROMPTS[:2], True), (PROMPTS[1:], True), (PROMPTS[::-1], False), (PROMPTS, True)):
        a, b = plain.encode(prompts, guidance), cached.encode(prompts, guidance)
        assert a.guided == b.guided and a.batched.keys() == b.batched.keys()
        for name in a.batched:
            assert torch.allclose(a.batched[name].float(), b.batched[name].float(), atol=1e-5), (kind, name)
    cache = cached.text_cache
    assert cache.encoded == len(PROMPTS) and set(cache.rows) == {*PROMPTS, NULL}  # each once, the null prompt too
    cache.limit = 1  # a tiny bound: only what the last batch needed stays
    cached.encode(PROMPTS[:1], False)
    assert len(cache.rows) == 1


def test_the_shapes_language_model_is_encoded_per_batch():
    adapter = make_adapter(shapes_pipeline())
    adapter.use_text_cache(64)
    assert adapter.text_cache is None  # padded to each batch's longest prompt: rows of other batches do not fit

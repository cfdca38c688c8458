import json

import numpy as np
import pytest
import torch

from itercomp.errors import ItercompError
from itercomp.models.dit import CompositionDiT
from itercomp.models.layout_expert import LayoutBank, mean_renders, with_layout_expert
from itercomp.world.scene import parse

SMALL = dict(hidden_size=32, num_heads=2, text_dim=32, num_layers=2, conv_channels=(8, 16))


def _inputs(timesteps):
    torch.manual_seed(1)
    b = len(timesteps)
    hidden = (None, *(torch.randn(b, 5, 32) for _ in range(2)))  # the embeddings need not be given
    return torch.randn(b, 3, 32, 32), torch.tensor(timesteps, dtype=torch.float32), hidden, torch.ones(b, 5).bool()


def test_rows_at_or_above_the_boundary_go_to_the_expert_and_round_trip(tmp_path):
    torch.manual_seed(0)
    trunk, expert = CompositionDiT(**SMALL), CompositionDiT(**SMALL)
    for model in (trunk, expert):  # zero-initialised outputs would make both return zeros
        torch.nn.init.normal_(model.conv_out[-1].weight, std=0.1)
    model = with_layout_expert(trunk, expert, boundary=0.9)
    sample, t, hidden, mask = _inputs([1000.0, 900.0, 899.0, 300.0])
    out = model(sample, t, hidden, mask)
    with torch.no_grad():
        high = expert(sample[:2], t[:2], tuple(None if h is None else h[:2] for h in hidden), mask[:2])
        low = trunk(sample[2:], t[2:], tuple(None if h is None else h[2:] for h in hidden), mask[2:])
    assert torch.allclose(out[:2], high, atol=1e-6) and torch.allclose(out[2:], low, atol=1e-6)
    assert not torch.allclose(out[:2], trunk(sample[:2], t[:2], hidden[:1] + tuple(h[:2] for h in hidden[1:]),
                                              mask[:2]))  # fmt: skip
    out.square().sum().backward()  # both parts get gradients through the routing
    assert trunk.conv_out[-1].weight.grad is None  # (the originals were copied, not shared)
    assert model.layout_dit.conv_out[-1].weight.grad.abs().sum() > 0 and model.conv_out[-1].weight.grad.abs().sum() > 0

    model.save_pretrained(tmp_path / "dit")
    loaded = CompositionDiT.from_pretrained(tmp_path / "dit")
    assert loaded.config.layout_boundary == 0.9 and loaded.layout_dit is not None
    assert torch.allclose(loaded(sample, t, hidden, mask), out, atol=1e-6)


def test_layout_expert_settings_are_checked():
    with pytest.raises(ValueError, match="layout_boundary"):
        CompositionDiT(**SMALL, layout_boundary=0.0)
    with pytest.raises(ValueError, match="of its own"):
        CompositionDiT(**SMALL, layout_expert={**SMALL, "layout_expert": SMALL})
    from itercomp.models.config import PretrainConfig

    with pytest.raises(ItercompError, match="layout_boundary"):
        PretrainConfig(layout_boundary=1.5)
    with pytest.raises(ItercompError, match="layout_expert_steps"):
        PretrainConfig(layout_expert_steps=-1)


def test_caption_means_put_each_colour_on_its_side(tmp_path):
    from itercomp.models.config import PretrainConfig

    means, seeds = mean_renders([parse("a red circle to the left of a blue square")], renders=16, canvas=32)
    assert (seeds >= 0).all()
    means = means.astype(float)
    red, blue = means[0, :, :, 0], means[0, :, :, 2]
    columns = np.arange(32)
    assert (red.sum(0) * columns).sum() / red.sum() < (blue.sum(0) * columns).sum() / blue.sum()
    cfg = PretrainConfig(layout_captions=40, layout_renders=2)
    bank = LayoutBank.sample(cfg, cache=tmp_path / "means.npz")
    again = LayoutBank.sample(cfg, cache=tmp_path / "means.npz")  # read back, not rendered again
    assert torch.equal(again.means, bank.means) and (again.seeds == bank.seeds).all()
    n = len(bank.scenes)
    assert 30 < n <= 40 and len(bank) == 2 * n == len(bank.means) and bank.means.shape[1:] == (3, 32, 32)
    assert any(len(s.objects) == 1 for s in bank.scenes)  # the stream's one-object scenes too
    assert torch.equal(bank.means[n:], bank.means[:n].flip(-1))  # the mirrors' means are the mirrored means
    assert torch.equal(bank.render(n + 5, 3, canvas=32), bank.render(5, 3, canvas=32).flip(-1))
    # every row renders, whatever k: only seeds whose layout fits are drawn
    assert all(bank.render(i, k, canvas=32).shape == (3, 32, 32) for i in range(n) for k in (0, 10**9 + 7))


def test_pretrain_adds_the_layout_expert_to_a_finished_run_and_exports_it(tmp_path, monkeypatch):
    from test_base_model import _tiny_run_config

    from itercomp.models import pretrain

    cfg = _tiny_run_config(tmp_path, conditionings=("deep_fusion",), text_whitening=True)
    pretrain.run_pretrain(cfg)
    run = tmp_path / "run"
    assert "base" in json.loads((run / "eval_test.json").read_text())
    from itercomp.models import evaluate

    measured, original = [], evaluate.evaluate_pipeline
    monkeypatch.setattr(
        evaluate, "evaluate_pipeline", lambda pipe, *a, **k: measured.append(pipe) or original(pipe, *a, **k)
    )
    added = _tiny_run_config(tmp_path, **{**cfg.__dict__, "layout_expert_steps": 2, "layout_captions": 4,
                                          "layout_renders": 2})  # fmt: skip
    result = pretrain.run_pretrain(added, resume=True)  # a finished run takes the expert without retraining
    assert "layout_expert" in result["timings"] and (run / "layout_expert" / "done").is_file()
    member = pretrain.load_member(run / "members" / "base").transformer
    assert member.layout_dit is not None and member.config.layout_boundary == 0.9
    # the expert reads the trunk's whitened LM states; the member's evaluation was measured again
    assert torch.equal(member.layout_dit.text_whitening_matrix, member.text_whitening_matrix)
    assert len(measured) == 1 and measured[0].transformer.layout_dit is not None and "base" in result["eval"]
    # Resumed again with the same settings, nothing is retrained; with other expert settings it is, and the member
    # is rebuilt with the new expert.
    from itercomp.models import layout_expert

    monkeypatch.setattr(
        layout_expert.LayoutBank, "sample", lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained"))
    )
    pretrain.run_pretrain(added, resume=True)
    monkeypatch.undo()
    longer = _tiny_run_config(tmp_path, **{**added.__dict__, "layout_expert_steps": 3})
    pretrain.run_pretrain(longer, resume=True)
    history = json.loads((run / "layout_expert" / "history.json").read_text())
    assert history["settings"]["layout_expert_steps"] == 3
    rebuilt = pretrain.load_member(run / "members" / "base").transformer
    assert not torch.equal(rebuilt.layout_dit.conv_in.weight, member.layout_dit.conv_in.weight)
    assert torch.equal(rebuilt.conv_in.weight, member.conv_in.weight)  # the trunk is the run's, untouched
    member = rebuilt

    exported = pretrain.load_member(pretrain.export_weights(run, tmp_path / "weights")[0]).transformer
    assert torch.equal(exported.layout_dit.text_whitening_matrix, member.layout_dit.text_whitening_matrix)
    images = pretrain.load_member(tmp_path / "weights" / "base")(
        ["a red circle above a blue square"], num_inference_steps=2, output_type="np"
    ).images
    assert images.shape == (1, 32, 32, 3)

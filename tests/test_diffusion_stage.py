"""The one diffusion stage and its injected conditionings, apart from any trained stage: an unconditional
model (no conditioning), the null condition and its dropping, batching by output pixels, and the
upgrade of checkpoints written by the three classes it replaced (real ones, made by that code)."""

from __future__ import annotations

import pytest
import torch

from t2i_lightning.diffusion import (
    SELF_CONDITION_PROB,
    SelfConditionedSampling,
    classifier_free_guidance,
    min_snr_weights,
    training_inputs,
    x0_from_v,
)
from t2i_lightning.nn.unet import ConditionalUNet
from t2i_lightning.stages.conditioning import ImageEmbedding
from t2i_lightning.stages.diffusion import DiffusionStage, per_batch

MICRO_UNET = dict(
    image_size=16, base_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(), groups=8,
    head_channels=16,
)  # fmt: skip


def test_an_unconditional_stage_trains_and_samples_without_a_conditioning():
    torch.manual_seed(0)
    stage = DiffusionStage(ConditionalUNet(**MICRO_UNET, cond_dim=0, learn_variance=True))
    batch = {"image": torch.rand(3, 3, 16, 16) * 2 - 1, "key": ["a", "b", "c"]}
    losses = stage._losses(batch, 0.0)
    assert set(losses) == {"loss", "simple", "vlb"} and torch.isfinite(losses["loss"]).all()
    losses["loss"].mean().backward()
    assert all(p.grad is not None for p in stage.net.parameters() if p.requires_grad)
    assert not stage.conditions_on_text and not stage.conditions_on_embedding and stage.clip_identity == {}
    draw = lambda seed: stage.sample(n=2, steps=3, progress=False, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    images = draw(0)
    assert images.shape == (2, 3, 16, 16) and images.abs().max() <= 1 and torch.equal(images, draw(0))
    assert not torch.equal(images, draw(1))
    with pytest.raises(ValueError, match="unconditional"):
        stage.sample(torch.randn(2, 8), steps=3, progress=False)
    with pytest.raises(ValueError, match="sample count"):
        stage.sample(steps=3, progress=False)


def test_the_stage_weighs_l_simple_by_min_snr_gamma_or_p2_but_not_both():
    net = ConditionalUNet(**MICRO_UNET, cond_dim=0, learn_variance=True)
    batch = {"image": torch.rand(4, 3, 16, 16) * 2 - 1, "key": list("abcd")}

    def losses(**weighting):
        stage = DiffusionStage(net, parameterization="v", **weighting)
        torch.manual_seed(0)  # the same t and noise for each weighting
        torch.rand(4)  # _losses draws the dropped rows first, then t
        t = torch.randint(0, stage.schedule.num_steps, (4,))
        torch.manual_seed(0)
        return stage, t, stage._losses(batch, 0.0)

    _, _, plain = losses()
    stage, t, weighted = losses(min_snr_gamma=5.0)
    torch.testing.assert_close(weighted["simple"], plain["simple"])
    expected = plain["simple"] * min_snr_weights(stage.schedule, t, 5.0, "v") + 1e-3 * plain["vlb"]
    torch.testing.assert_close(weighted["loss"], expected)
    assert not torch.allclose(weighted["loss"], plain["loss"])
    with pytest.raises(ValueError, match="at most one"):
        DiffusionStage(net, p2_gamma=1.0, min_snr_gamma=5.0)


def test_the_image_embedding_null_is_learned_or_fixed_and_dropping_replaces_exactly_the_dropped_rows():
    net = ConditionalUNet(**MICRO_UNET, cond_dim=8)
    learned, zeros = DiffusionStage(net, ImageEmbedding()), DiffusionStage(net, ImageEmbedding(null_cond="zeros"))
    assert "conditioning.null_embedding" in dict(learned.named_parameters())
    assert "conditioning.null_embedding" not in dict(zeros.named_parameters())
    assert "conditioning.null_embedding" in zeros.state_dict()
    conditioning = learned.conditioning
    with torch.no_grad():
        conditioning.null_embedding.fill_(7.0)
    cond = torch.randn(4, 8)
    dropped = conditioning.drop(cond, torch.tensor([True, False, False, True]))
    assert torch.equal(dropped[[1, 2]], cond[[1, 2]]) and (dropped[[0, 3]] == 7.0).all()
    with pytest.raises(ValueError, match="drop_prob"):
        ImageEmbedding(drop_prob=1.0)
    with pytest.raises(ValueError, match="null_cond"):
        ImageEmbedding(null_cond="random")
    with pytest.raises(ValueError, match="cond_dim > 0"):
        DiffusionStage(ConditionalUNet(**MICRO_UNET, cond_dim=0), ImageEmbedding())
    with pytest.raises(ValueError, match="Unknown sampler"):
        DiffusionStage(net, ImageEmbedding(), sampler="euler")


def test_per_image_options_are_cut_to_each_batch_and_the_rest_passed_whole():
    options = {"levels": torch.arange(5), "names": ["a", "b", "c", "d", "e"], "level": 0.1, "word": "abcde", "none": None}
    cut = per_batch(options, slice(1, 3), 5)
    assert torch.equal(cut["levels"], torch.tensor([1, 2])) and cut["names"] == ["b", "c"]
    assert cut["level"] == 0.1 and cut["word"] == "abcde" and cut["none"] is None


def test_the_optimizer_holds_every_parameter_once_in_the_order_of_the_classes_it_replaced():
    """The conditioning's own parameters, the network's, then the conditioning's modules' (the upsampler's
    predictor): the order old checkpoints' optimizer states are laid out in (a resumed upgraded decoder
    and text decoder train bit for bit as the old code does: docs/experiments.md)."""
    from t2i_lightning.nn.sr_unet import SuperResUNet
    from t2i_lightning.stages.low_res_image import LowResImage

    decoder = DiffusionStage(ConditionalUNet(**MICRO_UNET, cond_dim=8), ImageEmbedding())
    names = [name for name, _ in decoder.optimizer_parameters()]
    assert names[0] == "conditioning.null_embedding" and all(n.startswith("net.") for n in names[1:])
    sr = dict(image_size=32, base_channels=16, channel_mult=(1, 2), groups=8)
    upsampler = DiffusionStage(SuperResUNet(**sr), LowResImage(residual=True, predictor=SuperResUNet(**sr, learn_variance=False, noisy_input=False)))
    names = [name for name, _ in upsampler.optimizer_parameters()]
    first_predictor = names.index(next(n for n in names if n.startswith("conditioning.predictor.")))
    assert all(n.startswith("net.") for n in names[:first_predictor])
    assert all(n.startswith("conditioning.predictor.") for n in names[first_predictor:])
    for stage in (decoder, upsampler, DiffusionStage(ConditionalUNet(**MICRO_UNET, cond_dim=0))):
        assert sorted(n for n, _ in stage.optimizer_parameters()) == sorted(n for n, _ in stage.named_parameters())


def test_self_conditioning_trains_on_its_own_detached_estimate_and_samples_from_the_step_before():
    torch.manual_seed(0)
    net = ConditionalUNet(**MICRO_UNET, cond_dim=0, learn_variance=True, self_condition=True)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 500])
    assert torch.equal(net(x, t), net(x, t, None, torch.zeros_like(x)))
    assert not torch.allclose(net(x, t), net(x, t, None, torch.ones_like(x)))
    with pytest.raises(ValueError, match="not self-conditioned"):
        ConditionalUNet(**MICRO_UNET, cond_dim=0)(x, t, None, x)

    # Training (Algorithm 1): zeros, or with probability 1/2 the x̂_0 of a forward that read zeros.
    stage = DiffusionStage(net, parameterization="v")
    schedule, v = stage.schedule, torch.full_like(x, 0.5)
    read = []

    def constant_v(xt, t, cond, estimate):
        read.append(estimate)
        return v

    constant_v.self_condition = True
    assert training_inputs(ConditionalUNet(**MICRO_UNET, cond_dim=0), schedule, x, t, None, "v") == ()
    for seed in range(6):
        (estimate,) = training_inputs(constant_v, schedule, x, t, None, "v", torch.Generator().manual_seed(seed))
        refined = torch.rand((), generator=torch.Generator().manual_seed(seed)) < SELF_CONDITION_PROB
        torch.testing.assert_close(estimate, x0_from_v(schedule, x, t, v) if refined else torch.zeros_like(x))
    assert all(torch.equal(e, torch.zeros_like(x)) for e in read) and 0 < len(read) < 6
    batch = {"image": torch.rand(3, 3, 16, 16) * 2 - 1, "key": ["a", "b", "c"]}
    for _ in range(2):
        stage._losses(batch, 0.0)["loss"].mean().backward()
    assert all(p.grad is not None for p in stage.net.parameters() if p.requires_grad)

    # Sampling (Algorithm 2): each call reads the x̂_0 of the guided output before it, both guidance halves alike.
    read.clear()

    def zero_v(xt, t, cond, estimate):
        read.append(estimate)
        return torch.zeros(len(xt), 6, *xt.shape[2:])  # v and a learned variance

    sampling = SelfConditionedSampling(zero_v, schedule, "v", channels=3)
    guided = sampling.follow(classifier_free_guidance(sampling, torch.ones(2, 4), torch.zeros(2, 4), 3.0, eps_channels=3))
    guided(x, t)
    guided(x, t)
    assert [len(e) for e in read] == [4, 4] and torch.equal(read[0], torch.zeros(4, 3, 16, 16))
    previous = x0_from_v(schedule, x, t, torch.zeros_like(x))
    torch.testing.assert_close(read[1], torch.cat([previous, previous]))
    estimates = []
    hook = net.register_forward_pre_hook(lambda module, args: estimates.append(args[3]))
    draw = lambda seed: stage.sample(n=2, steps=3, progress=False, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    images = draw(0)
    hook.remove()
    assert len(estimates) == 3 and not estimates[0].any() and all(e.abs().sum() > 0 for e in estimates[1:])
    assert images.shape == (2, 3, 16, 16) and torch.equal(images, draw(0)) and not torch.equal(images, draw(1))

"""Checks of t2i_lightning.diffusion against closed forms computed independently here."""

from __future__ import annotations

import math

import pytest
import torch

from t2i_lightning.diffusion import (
    GuidanceNorms,
    ImageGuidance,
    NoiseSchedule,
    annealed_langevin,
    bayes_guided_score,
    classifier_free_guidance,
    cosine_alpha_bar,
    cosine_betas,
    ddim_sample,
    ddpm_sample,
    discretized_gaussian_log_likelihood,
    dsm_loss,
    dynamic_threshold,
    eps_from_v,
    eps_from_x0,
    gaussian_blur,
    geometric_sigmas,
    gradient_guidance,
    hybrid_loss,
    linear_betas,
    min_snr_weights,
    network_in_precision,
    noise_augment,
    normal_kl,
    p2_weights,
    p_mean_variance,
    predict_x0_eps,
    q_posterior,
    q_sample,
    simple_loss,
    static_threshold,
    v_from_x0_eps,
    vlb_terms,
    x0_from_eps,
    x0_from_v,
)

F64 = torch.float64


def _full(value: int, n: int) -> torch.Tensor:
    return torch.full((n,), value, dtype=torch.long)


def _phi(z: float) -> float:
    """Standard normal CDF."""
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


# --------------------------------------------------------------------------------------------- schedules


def test_cosine_alphas_cumprod_matches_closed_form():
    T, s = 1000, 0.008
    schedule = NoiseSchedule(cosine_betas(T, s=s))

    def f(t):
        return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2

    expected = torch.tensor([f(i + 1) / f(0) for i in range(T)], dtype=F64)
    clipped = int((schedule.betas >= 0.999).nonzero()[0])
    assert clipped >= T - 2  # only the singular end of the schedule is clipped
    torch.testing.assert_close(schedule.alphas_cumprod[:clipped], expected[:clipped], rtol=1e-10, atol=0)
    assert schedule.betas.max() <= 0.999 and schedule.betas.dtype == F64


def test_linear_endpoints_and_scaling():
    betas = linear_betas(1000)
    assert betas.dtype == F64 and betas.shape == (1000,)
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    half = linear_betas(500)
    assert half[0].item() == pytest.approx(2e-4) and half[-1].item() == pytest.approx(0.04)


def test_derived_quantities():
    schedule = NoiseSchedule.from_name("cosine", 10)
    b = schedule.betas.tolist()
    abar = [math.prod(1 - x for x in b[: i + 1]) for i in range(10)]
    torch.testing.assert_close(schedule.alphas_cumprod, torch.tensor(abar, dtype=F64))
    assert schedule.alphas_cumprod_prev[0] == 1
    torch.testing.assert_close(schedule.snr, torch.tensor([a / (1 - a) for a in abar], dtype=F64))
    tilde = [b[i] * (1 - abar[i - 1]) / (1 - abar[i]) for i in range(1, 10)]
    torch.testing.assert_close(schedule.posterior_variance[1:], torch.tensor(tilde, dtype=F64))
    assert schedule.posterior_variance[0] == 0
    assert schedule.posterior_log_variance_clipped[0].item() == pytest.approx(math.log(tilde[0]))
    assert schedule.original_num_steps == 10 and schedule.timesteps.tolist() == list(range(10))


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_shifted_schedule_divides_snr_by_shift_squared(name):
    # simple diffusion (Hoogeboom et al. 2023): logSNR'(t) = logSNR(t) - 2 log(shift), i.e. SNR' = SNR / shift^2
    base = NoiseSchedule.from_name(name)
    for shift in (2.0, 0.5):
        shifted = NoiseSchedule.from_name(name, shift=shift)
        kept = slice(0, 995)  # away from the cosine's clipped end
        torch.testing.assert_close(shifted.snr[kept], base.snr[kept] / shift**2, rtol=1e-9, atol=0)
        assert shifted.betas.max() <= 0.999 and shifted.num_steps == 1000
    assert NoiseSchedule.from_name(name, shift=1.0).betas.equal(base.betas)
    assert (NoiseSchedule.from_name(name, shift=4.0).alphas_cumprod < base.alphas_cumprod).all()  # more noise everywhere


def test_schedule_shift_must_be_positive():
    with pytest.raises(ValueError, match="shift must be > 0"):
        NoiseSchedule.from_name("cosine", shift=0.0)


def test_from_name_unknown_lists_valid_names():
    with pytest.raises(ValueError, match="cosine.*linear"):
        NoiseSchedule.from_name("sigmoid")


def test_respace_ddim_exact_count_and_alphas():
    base = NoiseSchedule.from_name("cosine")
    sub = base.respace("ddim50")
    assert sub.num_steps == 50 and sub.original_num_steps == 1000
    assert sub.timesteps.tolist() == list(range(0, 1000, 20))
    torch.testing.assert_close(sub.alphas_cumprod, base.alphas_cumprod[sub.timesteps], rtol=1e-12, atol=0)
    assert base.respace("ddim30").num_steps == 30


def test_respace_even_includes_ends_and_sections():
    base = NoiseSchedule.from_name("linear")
    even = base.respace("50")
    assert even.num_steps == 50 and even.timesteps[0] == 0 and even.timesteps[-1] == 999
    assert base.respace(50).timesteps.equal(even.timesteps)
    sections = base.respace("10,5").timesteps.tolist()
    assert len(sections) == 15
    assert sections[0] == 0 and sections[9] == 499 and sections[10] == 500 and sections[-1] == 999
    assert all(i < 500 for i in sections[:10]) and all(i >= 500 for i in sections[10:])
    explicit = base.respace([999, 0, 500])
    assert explicit.timesteps.tolist() == [0, 500, 999]
    torch.testing.assert_close(
        explicit.alphas_cumprod, base.alphas_cumprod[[0, 500, 999]], rtol=1e-12, atol=0
    )


def test_respace_composes():
    base = NoiseSchedule.from_name("linear")
    twice = base.respace("100").respace("10")
    assert twice.num_steps == 10 and twice.original_num_steps == 1000
    assert set(twice.timesteps.tolist()) <= set(base.respace("100").timesteps.tolist())
    torch.testing.assert_close(twice.alphas_cumprod, base.alphas_cumprod[twice.timesteps], rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    "spec", ["0", "1001", "abc", "ddim999", "ddim0", "10,x", "", [], [-1], [1000], [3, 3]]
)
def test_respace_bad_specs(spec):
    with pytest.raises(ValueError, match="respace"):
        NoiseSchedule.from_name("linear").respace(spec)


# ---------------------------------------------------------------------------------- forward process


def test_q_sample_moments():
    schedule = NoiseSchedule.from_name("linear")
    generator = torch.Generator().manual_seed(0)
    n, x0 = 200_000, 0.7
    for step in (0, 250, 999):
        t = _full(step, n)
        xt = q_sample(
            schedule, torch.full((n,), x0, dtype=F64), t, torch.randn(n, generator=generator, dtype=F64)
        )
        abar = schedule.alphas_cumprod[step].item()
        assert xt.mean().item() == pytest.approx(math.sqrt(abar) * x0, abs=4.5 * math.sqrt((1 - abar) / n))
        assert xt.var().item() == pytest.approx(1 - abar, rel=0.02)


def test_q_posterior_against_bayes():
    """q(x_{t-1}|x_t,x_0) ∝ N(x_{t-1}; √ᾱ_{t-1} x0, 1-ᾱ_{t-1}) · N(x_t; √α_t x_{t-1}, β_t): precisions add."""
    schedule = NoiseSchedule.from_name("cosine", 50)
    b = schedule.betas.tolist()
    steps = [1, 7, 30, 49]
    x0 = torch.tensor([0.3, -0.8, 0.1, 0.9], dtype=F64)
    xt = torch.tensor([1.2, -0.1, 0.4, -0.5], dtype=F64)
    mean, var, log_var = q_posterior(schedule, x0, xt, torch.tensor(steps))
    for j, step in enumerate(steps):
        abar_prev = math.prod(1 - x for x in b[:step])
        alpha = 1 - b[step]
        precision = 1 / (1 - abar_prev) + alpha / b[step]
        expected_mean = (
            math.sqrt(abar_prev) * x0[j].item() / (1 - abar_prev) + math.sqrt(alpha) * xt[j].item() / b[step]
        )
        assert mean[j].item() == pytest.approx(expected_mean / precision, rel=1e-10)
        assert var[j].item() == pytest.approx(1 / precision, rel=1e-10)
        assert log_var[j].item() == pytest.approx(math.log(1 / precision), rel=1e-10)
    torch.testing.assert_close(var, schedule.posterior_variance[steps])
    mean0, var0, _ = q_posterior(schedule, x0[:1], xt[:1], torch.tensor([0]))  # ᾱ_{-1} = 1: x_{-1} = x_0
    assert mean0.item() == pytest.approx(x0[0].item(), abs=1e-12) and var0.item() == 0


# ---------------------------------------------------------------------------------- parameterization


def test_parameterization_round_trips():
    schedule = NoiseSchedule.from_name("cosine")
    generator = torch.Generator().manual_seed(1)
    x0 = torch.randn(6, 2, 3, 3, generator=generator, dtype=F64)
    eps = torch.randn(6, 2, 3, 3, generator=generator, dtype=F64)
    t = torch.tensor([0, 1, 200, 500, 900, 980])
    xt = q_sample(schedule, x0, t, eps)
    v = v_from_x0_eps(schedule, t, x0, eps)
    tol = {"rtol": 0, "atol": 1e-10}
    torch.testing.assert_close(x0_from_eps(schedule, xt, t, eps), x0, **tol)
    torch.testing.assert_close(eps_from_x0(schedule, xt, t, x0), eps, **tol)
    torch.testing.assert_close(x0_from_v(schedule, xt, t, v), x0, **tol)
    torch.testing.assert_close(eps_from_v(schedule, xt, t, v), eps, **tol)
    a = schedule.sqrt_alphas_cumprod[t].reshape(-1, 1, 1, 1)
    torch.testing.assert_close(v, a * eps - (1 - a**2).sqrt() * x0, **tol)
    for name, prediction in (("eps", eps), ("x0", x0), ("v", v)):
        got_x0, got_eps = predict_x0_eps(schedule, xt, t, prediction, name)
        torch.testing.assert_close(got_x0, x0, **tol)
        torch.testing.assert_close(got_eps, eps, **tol)
    with pytest.raises(ValueError, match="parameterization"):
        predict_x0_eps(schedule, xt, t, eps, "score")


def test_p_mean_variance_variance_choices_and_x0_transform():
    schedule = NoiseSchedule.from_name("cosine", 100)
    generator = torch.Generator().manual_seed(11)
    xt = torch.randn(3, 2, 2, 2, generator=generator, dtype=F64)
    eps = torch.randn(3, 2, 2, 2, generator=generator, dtype=F64)
    t = torch.tensor([0, 50, 99])
    fixed = p_mean_variance(schedule, eps, xt, t)
    torch.testing.assert_close(fixed.variance.expand_as(xt)[:, 0, 0, 0], schedule.posterior_variance[t])
    torch.testing.assert_close(fixed.log_variance[:, 0, 0, 0], schedule.posterior_log_variance_clipped[t])
    mean, _, _ = q_posterior(schedule, x0_from_eps(schedule, xt, t, eps), xt, t)
    torch.testing.assert_close(fixed.mean, mean)
    # learned range, Improved DDPM eq. 15: raw = +1 → log β_t, raw = −1 → log β̃_t (clipped), 0 → midpoint
    raw_var = torch.tensor([1.0, -1.0, 0.0], dtype=F64).reshape(3, 1, 1, 1).expand_as(xt)
    learned = p_mean_variance(schedule, torch.cat([eps, raw_var], dim=1), xt, t, learn_variance=True)
    log_beta, log_tilde = schedule.betas[t].log(), schedule.posterior_log_variance_clipped[t]
    expected = torch.stack([log_beta[0], log_tilde[1], (log_beta[2] + log_tilde[2]) / 2])
    torch.testing.assert_close(learned.log_variance[:, 0, 0, 0], expected)
    torch.testing.assert_close(learned.variance, learned.log_variance.exp())
    torch.testing.assert_close(learned.mean, fixed.mean)
    # x0_transform: ε̂ and the mean follow the transformed x̂_0
    clamped = p_mean_variance(schedule, eps, xt, t, x0_transform=lambda x0: x0.clamp(-0.2, 0.2))
    assert clamped.x0.abs().max() <= 0.2
    torch.testing.assert_close(clamped.eps, eps_from_x0(schedule, xt, t, clamped.x0))
    torch.testing.assert_close(clamped.mean, q_posterior(schedule, clamped.x0, xt, t)[0])
    with pytest.raises(ValueError, match="channels"):
        p_mean_variance(schedule, eps, xt, t, learn_variance=True)


# ---------------------------------------------------------------------------------- losses


def test_normal_kl():
    zero, one = torch.zeros(3, dtype=F64), torch.ones(3, dtype=F64)
    assert normal_kl(one, zero, one, zero).abs().max() == 0
    assert normal_kl(zero, zero, one, zero)[0].item() == pytest.approx(0.5)  # (μ1-μ2)²/2
    # KL(N(0,1) || N(0,4)) = log(2) + 1/8 - 1/2
    assert normal_kl(zero, zero, zero, torch.full((3,), math.log(4.0), dtype=F64))[0].item() == pytest.approx(
        math.log(2) + 1 / 8 - 1 / 2
    )


@pytest.mark.parametrize("mean,scale", [(0.1, 0.3), (-0.9, 0.05), (0.5, 2.0)])
def test_discretized_likelihood_is_a_distribution_over_256_bins(mean, scale):
    x = torch.linspace(-1, 1, 256, dtype=F64)
    log_p = discretized_gaussian_log_likelihood(
        x, torch.full_like(x, mean), torch.full_like(x, math.log(scale))
    )
    assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-6)
    k = round((mean + 1) * 127.5) + 1  # an interior bin next to the mean, by hand
    expected = _phi((x[k].item() + 1 / 255 - mean) / scale) - _phi((x[k].item() - 1 / 255 - mean) / scale)
    assert log_p[k].exp().item() == pytest.approx(expected, rel=1e-6)


def test_vlb_terms_by_hand():
    schedule = NoiseSchedule.from_name("cosine", 10)
    b = schedule.betas.tolist()
    x0 = torch.tensor([[0.2, -0.4]], dtype=F64)
    xt = torch.tensor([[0.5, 0.1]], dtype=F64)
    mean = torch.tensor([[0.3, 0.0]], dtype=F64)
    log_var = torch.tensor([[-3.0, -2.5]], dtype=F64)

    step = 3
    abar = math.prod(1 - x for x in b[: step + 1])
    abar_prev = abar / (1 - b[step])
    c1 = b[step] * math.sqrt(abar_prev) / (1 - abar)
    c2 = math.sqrt(1 - b[step]) * (1 - abar_prev) / (1 - abar)
    var_q = b[step] * (1 - abar_prev) / (1 - abar)
    kls = []
    for d in range(2):
        mu_q = c1 * x0[0, d].item() + c2 * xt[0, d].item()
        var_p = math.exp(log_var[0, d].item())
        kls.append(
            0.5 * math.log(var_p / var_q) + (var_q + (mu_q - mean[0, d].item()) ** 2) / (2 * var_p) - 0.5
        )
    got = vlb_terms(schedule, x0, xt, torch.tensor([step]), mean, log_var)
    assert got.shape == (1,) and got.item() == pytest.approx(sum(kls) / 2 / math.log(2), rel=1e-10)

    edge = torch.tensor([[-1.0, 0.2]], dtype=F64)  # t = 0: discretized decoder, outer bin extends to -inf
    s = [math.exp(0.5 * v) for v in log_var[0].tolist()]
    p_edge = _phi((-1 + 1 / 255 - 0.3) / s[0])
    p_mid = _phi((0.2 + 1 / 255 - 0.0) / s[1]) - _phi((0.2 - 1 / 255 - 0.0) / s[1])
    got0 = vlb_terms(schedule, edge, xt, torch.tensor([0]), mean, log_var)
    assert got0.item() == pytest.approx(-(math.log(p_edge) + math.log(p_mid)) / 2 / math.log(2), rel=1e-6)


def _hybrid_case(learn_variance=True, requires_grad=True):
    schedule = NoiseSchedule.from_name("cosine", 100)
    generator = torch.Generator().manual_seed(2)
    x0 = torch.rand(3, 2, 4, 4, generator=generator) * 2 - 1
    noise = torch.randn(3, 2, 4, 4, generator=generator)
    t = torch.tensor([40, 0, 99])
    xt = q_sample(schedule, x0, t, noise)
    channels = 4 if learn_variance else 2
    raw = (torch.randn(3, channels, 4, 4, generator=generator) * 0.5).requires_grad_(requires_grad)
    return schedule, x0, noise, t, xt, raw


def test_hybrid_loss_stop_gradient_and_composition():
    schedule, x0, noise, t, xt, raw = _hybrid_case()
    out = hybrid_loss(schedule, raw, x0, xt, t, noise)
    assert {k: v.shape for k, v in out.items()} == {"simple": (3,), "vlb": (3,), "loss": (3,)}
    torch.testing.assert_close(out["simple"], ((raw[:, :2] - noise) ** 2).mean(dim=(1, 2, 3)))
    torch.testing.assert_close(out["loss"], out["simple"] + 1e-3 * out["vlb"])
    with torch.no_grad():
        pred = p_mean_variance(schedule, raw, xt, t, learn_variance=True)
        torch.testing.assert_close(
            out["vlb"], 100 * vlb_terms(schedule, x0, xt, t, pred.mean, pred.log_variance)
        )
    (grad,) = torch.autograd.grad(out["vlb"].sum(), raw)
    assert grad[:, :2].abs().max() == 0  # the mean prediction gets no gradient from L_vlb
    assert (grad[:, 2:].abs().flatten(1).amax(dim=1) > 0).all()  # every sample's variance channels do
    (grad_simple,) = torch.autograd.grad(out["simple"].sum(), raw)
    assert grad_simple[:, 2:].abs().max() == 0 and grad_simple[:, :2].abs().max() > 0


def test_hybrid_loss_weights_fixed_variance_and_targets():
    schedule, x0, noise, t, xt, raw = _hybrid_case(learn_variance=False)
    weights = torch.tensor([0.5, 2.0, 1.0])
    out = hybrid_loss(schedule, raw, x0, xt, t, noise, learn_variance=False, weights=weights)
    torch.testing.assert_close(out["loss"], out["simple"] * weights)
    assert not out["vlb"].requires_grad and torch.isfinite(out["vlb"]).all() and (out["vlb"] > 0).all()
    v = v_from_x0_eps(schedule, t, x0, noise)
    for name, target in (("eps", noise), ("x0", x0), ("v", v)):
        perfect = torch.cat([target, torch.zeros_like(target)], dim=1)
        assert (
            hybrid_loss(schedule, perfect, x0, xt, t, noise, parameterization=name)["simple"].abs().max()
            < 1e-10
        )
    with pytest.raises(ValueError, match="channels"):
        hybrid_loss(schedule, raw, x0, xt, t, noise, learn_variance=True)
    half = hybrid_loss(schedule, raw.bfloat16(), x0, xt, t, noise, learn_variance=False)  # bf16 network
    assert all(v.dtype == torch.float32 for v in half.values())


def test_p2_weights():
    schedule = NoiseSchedule.from_name("linear")
    t = torch.tensor([0, 10, 500, 999])
    assert p2_weights(schedule, t, gamma=0.0).equal(torch.ones(4))
    abar = schedule.alphas_cumprod[t]
    expected = (1 / (0.5 + abar / (1 - abar)) ** 1.5).float()
    torch.testing.assert_close(p2_weights(schedule, t, gamma=1.5, k=0.5), expected)


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
def test_min_snr_weights_weigh_every_parameterization_as_the_x0_error_times_min_snr_gamma(parameterization):
    """Oracle: for one x̂₀ written in each parameterization, weight · L_simple = min(SNR, γ) · ‖x̂₀ − x₀‖²."""
    torch.manual_seed(0)
    schedule, gamma = NoiseSchedule.from_name("cosine"), 5.0
    t = torch.tensor([0, 30, 200, 400, 600, 800, 950, 999])
    x0, noise = torch.randn(8, 3, 4, 4), torch.randn(8, 3, 4, 4)
    xt = q_sample(schedule, x0, t, noise)
    x0_hat = x0 + 0.1 * torch.randn_like(x0)
    eps_hat = eps_from_x0(schedule, xt, t, x0_hat)
    predicted = {"eps": (eps_hat, noise), "x0": (x0_hat, x0),
                 "v": (v_from_x0_eps(schedule, t, x0_hat, eps_hat), v_from_x0_eps(schedule, t, x0, noise))}  # fmt: skip
    prediction, target = predicted[parameterization]
    weighted = min_snr_weights(schedule, t, gamma, parameterization) * simple_loss(prediction, target)
    snr = schedule.snr[t].clamp(max=gamma).float()
    torch.testing.assert_close(weighted, snr * simple_loss(x0_hat, x0), rtol=2e-3, atol=1e-9)
    assert min_snr_weights(schedule, t, gamma, parameterization).dtype == torch.get_default_dtype()
    with pytest.raises(ValueError, match="parameterization"):
        min_snr_weights(schedule, t, gamma, "score")


def test_dsm_loss():
    generator = torch.Generator().manual_seed(3)
    z = torch.randn(4, 3, 2, 2, generator=generator, dtype=F64)
    sigma = torch.tensor([0.01, 0.1, 1.0, 10.0], dtype=F64)
    assert dsm_loss(-z / sigma.reshape(-1, 1, 1, 1), z, sigma).abs().max() < 1e-12  # the exact target score
    score = torch.randn(4, 3, 2, 2, generator=generator, dtype=F64)
    expected = [0.5 * ((sigma[i] * score[i] + z[i]) ** 2).sum().item() for i in range(4)]
    torch.testing.assert_close(dsm_loss(score, z, sigma), torch.tensor(expected, dtype=F64))


# ---------------------------------------------------------------------------------- guidance


def _toy_model(calls):
    """2 prediction channels x + a, 2 variance channels 10·a; a comes from the conditioning."""

    def model(x, t, cond):
        calls.append((x.shape[0], t.clone()))
        a = (cond["a"] if isinstance(cond, dict) else cond).reshape(-1, 1, 1, 1)
        return torch.cat([x + a, (10 * a).expand_as(x)], dim=1)

    return model


def test_classifier_free_guidance():
    x = torch.randn(3, 2, 4, 4)
    t = torch.tensor([5, 6, 7])
    cond, null = {"a": torch.tensor([2.0, 2.0, 2.0])}, {"a": torch.zeros(3)}
    calls = []
    model = _toy_model(calls)
    conditional = model(x, t, cond)
    calls.clear()
    for scale in (1.0, 3.0):
        out = classifier_free_guidance(model, cond, null, scale, eps_channels=2)(x, t)
        torch.testing.assert_close(out[:, :2], x + 2 * scale)  # u + s(c - u) with u = x, c = x + 2
        assert out[:, 2:].eq(20).all()  # the variance channels come from the conditional half
        if scale == 1.0:
            torch.testing.assert_close(out, conditional, rtol=0, atol=0)
    assert [c[0] for c in calls] == [6, 6] and calls[0][1].tolist() == [5, 6, 7, 5, 6, 7]
    tensor_out = classifier_free_guidance(model, torch.full((3,), 2.0), torch.zeros(3), 2.0)(x, t)
    torch.testing.assert_close(tensor_out, torch.cat([x + 4, torch.full_like(x, 40)], dim=1))  # all channels
    calls.clear()
    separate = classifier_free_guidance(model, cond, null, 3.0, eps_channels=2, batched=False)(x, t)
    torch.testing.assert_close(separate, classifier_free_guidance(model, cond, null, 3.0, eps_channels=2)(x, t))
    assert [c[0] for c in calls[:2]] == [3, 3]  # two forwards of the plain batch, then the batched one of 6


def test_thresholding():
    inside = torch.rand(2, 3, 8, 8) * 2 - 1
    assert dynamic_threshold(inside).equal(inside)
    magnitudes = torch.arange(1, 1001, dtype=torch.float32) / 100  # |x| = 0.01 … 10.0
    signs = torch.where(torch.arange(1000) % 2 == 0, 1.0, -1.0)
    x = torch.stack([magnitudes * signs, torch.full((1000,), 0.5)])
    out = dynamic_threshold(x)
    s = 9.95 + 0.005 * 0.01  # 0.995 quantile with linear interpolation: position 994.005 of 0..999
    torch.testing.assert_close(out[0], (magnitudes * signs).clamp(-s, s) / s)
    assert out[0].abs().max().item() == pytest.approx(1.0) and out[1].eq(0.5).all()
    torch.testing.assert_close(
        static_threshold(torch.tensor([-3.0, 0.2, 1.5])), torch.tensor([-1.0, 0.2, 1.0])
    )


def test_image_guidance():
    T, z = 1000, torch.ones(1, 1, 2, 2)
    x = torch.randn(2, 1, 2, 2)
    t = torch.tensor([T - 1, 250])
    assert ImageGuidance(z, 0.0)(x, t, T).equal(x)
    moved = ImageGuidance(z, 0.5)(x, t, T)
    torch.testing.assert_close(moved[0], x[0] + 0.5 * (T - 1) / T * (1 - x[0]))
    torch.testing.assert_close(moved[1], x[1] + 0.5 * 0.25 * (1 - x[1]))
    torch.testing.assert_close(ImageGuidance(z, 0.5, "constant")(x, t, T), x + 0.5 * (1 - x))
    torch.testing.assert_close(ImageGuidance(z, 1.0, "cosine")(x, _full(500, 2), T), x + 0.5 * (1 - x))
    with pytest.raises(ValueError, match="decay"):
        ImageGuidance(z, 1.0, "exp")


def test_gradient_guidance():
    a = torch.tensor([[0.5, -1.0, 2.0]])
    cond_fn = gradient_guidance(lambda x, t: -0.5 * ((x - a) ** 2).sum(dim=1), scale=3.0)
    x = torch.randn(4, 3)
    with torch.no_grad():  # samplers run without autograd
        got = cond_fn(x, torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(got, 3.0 * (a - x))


# ---------------------------------------------------------------------------------- samplers

MU, SIGMA = 0.3, 0.5


def _oracle(base: NoiseSchedule, schedule: NoiseSchedule | None = None):
    """The exact denoiser for data x0 ~ N(μ, σ²) i.i.d. per dimension.

    x_t = a x0 + b ε with a = √ᾱ_t, b = √(1−ᾱ_t) is jointly Gaussian with ε: E[x_t] = aμ,
    Var x_t = a²σ² + b², Cov(ε, x_t) = b, so E[ε | x_t] = b (x_t − aμ) / (a²σ² + b²).
    With ``schedule`` (a respacing of ``base``) it also outputs the learned-range raw value of the exact
    reverse variance of that chain: by total variance, Var(x_{i−1} | x_i) = β̃_i + c1_i² Var(x0 | x_i),
    with c1 the x0 coefficient of the posterior mean and Var(x0 | x_i) = σ² b² / (a²σ² + b²); then
    v = (log Var − log β̃_i)/(log β_i − log β̃_i) and raw = 2v − 1 (Improved DDPM eq. 15).
    """

    def model_fn(x, t):
        abar = base.alphas_cumprod[t].to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        total = abar * SIGMA**2 + 1 - abar
        eps = (1 - abar).sqrt() * (x - abar.sqrt() * MU) / total
        if schedule is None:
            return eps
        i = torch.searchsorted(schedule.timesteps, t)

        def at(arr):
            return arr[i].reshape(-1, 1)

        var = (
            at(schedule.posterior_variance)
            + at(schedule.posterior_mean_coef1) ** 2 * SIGMA**2 * (1 - abar) / total
        )
        low, high = at(schedule.posterior_log_variance_clipped), at(schedule.log_betas)
        raw = (2 * (var.log() - low) / (high - low) - 1).clamp(-1, 1)
        return torch.cat([eps, raw.to(x.dtype).expand_as(eps)], dim=1)

    return model_fn


@pytest.mark.parametrize(
    "sampler,schedule_name,spec,learned",
    [
        (ddpm_sample, "linear", None, False),  # all 1000 steps, fixed β̃ variance
        (ddim_sample, "cosine", "ddim50", False),  # η = 0
        (ddpm_sample, "cosine", "50", True),  # 50 respaced steps need the exact (learned) variance:
    ],  # with β̃ instead the std comes out about 7% low
    ids=["ddpm-1000-linear", "ddim-50-cosine", "ddpm-50-learned-cosine"],
)
def test_gaussian_oracle_reproduces_data_distribution(sampler, schedule_name, spec, learned):
    base = NoiseSchedule.from_name(schedule_name)
    schedule = base if spec is None else base.respace(spec)
    generator = torch.Generator().manual_seed(4)
    noise = torch.randn(4096, 1, generator=generator)
    model_fn = _oracle(base, schedule if learned else None)
    x = sampler(model_fn, schedule, noise, learn_variance=learned, generator=generator, progress=False)
    assert x.shape == noise.shape and x.dtype == torch.float32
    assert x.mean().item() == pytest.approx(MU, abs=0.03)
    assert x.std().item() == pytest.approx(SIGMA, rel=0.05)


def test_ddim_eta_one_is_ddpm_with_posterior_variance():
    """DDIM eq. 16 with η = 1 gives σ_t² = β̃_t, i.e. the DDPM reverse step (same noise draws)."""
    schedule = NoiseSchedule.from_name("cosine").respace("20")
    model_fn = _oracle(NoiseSchedule.from_name("cosine"))
    noise = torch.randn(64, 1, generator=torch.Generator().manual_seed(5))
    ddpm = ddpm_sample(model_fn, schedule, noise, generator=torch.Generator().manual_seed(6), progress=False)
    ddim = ddim_sample(
        model_fn, schedule, noise, eta=1.0, generator=torch.Generator().manual_seed(6), progress=False
    )
    torch.testing.assert_close(ddim, ddpm, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("sampler", [ddpm_sample, ddim_sample])
def test_sampler_calls_progress_and_intermediates(sampler, capsys):
    schedule = NoiseSchedule.from_name("linear", 100).respace("ddim10")
    seen, guided_T = [], []

    def model_fn(x, t):
        seen.append(t.clone())
        return torch.zeros_like(x)

    def spy_guidance(x, t, T):
        guided_T.append((t.clone(), T))
        return x

    noise = torch.randn(3, 2, 4, 4, dtype=F64)
    x, inter = sampler(
        model_fn, schedule, noise, image_guidance=spy_guidance, progress=False, return_intermediates=True
    )
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert x.dtype == torch.float32 and len(inter) == 10 and all(i.shape == noise.shape for i in inter)
    assert [s.tolist() for s in seen] == [[i] * 3 for i in range(90, -1, -10)]
    assert all(s.dtype == torch.long for s in seen)
    assert [T for _, T in guided_T] == [100] * 10 and guided_T[0][0].tolist() == [90] * 3
    sampler(model_fn, schedule, noise, progress=True)
    assert capsys.readouterr().err != ""


def test_cond_fn_shift_is_exact_on_two_steps():
    """Kept steps t = 500, 100 (ᾱ: A1, A0), a model predicting ε = 0 and cond_fn ≡ c, same noise draws.

    DDPM: step 1 adds Σ·c with Σ = β̃'_1 = (1 − A1/A0)(1 − A0)/(1 − A1); step 0 has Σ = 0 and maps
    x ↦ x/√A0. DDIM: each step uses ε' = −√(1−ᾱ)c, x̂0 = (x + (1−ᾱ)c)/√ᾱ, so step 1 shifts by
    √A0 (1−A1) c/√A1 − √(1−A0−σ²)√(1−A1) c, and step 0 (ᾱ_prev = 1) maps x ↦ (x + (1−A0)c)/√A0.
    """
    base = NoiseSchedule.from_name("linear")
    schedule = base.respace([100, 500])
    A0, A1 = base.alphas_cumprod[100].item(), base.alphas_cumprod[500].item()
    c = 0.5
    noise = torch.randn(16, 1, generator=torch.Generator().manual_seed(9))

    def run(sampler, cond_fn, **kwargs):
        return sampler(
            lambda x, t: torch.zeros_like(x), schedule, noise, cond_fn=cond_fn,
            generator=torch.Generator().manual_seed(10), progress=False, **kwargs,
        )  # fmt: skip

    push = lambda x, t: torch.full_like(x, c)  # noqa: E731
    for sampler, kwargs in ((ddpm_sample, {}), (ddim_sample, {"eta": 0.5})):
        diff = run(sampler, push, **kwargs) - run(sampler, None, **kwargs)
        if sampler is ddpm_sample:
            expected = (1 - A1 / A0) * (1 - A0) / (1 - A1) * c / math.sqrt(A0)
        else:
            sigma2 = 0.25 * (1 - A0) / (1 - A1) * (1 - A1 / A0)  # η² (1−A0)/(1−A1) (1 − A1/A0), DDIM eq. 16
            step1 = math.sqrt(A0) * (1 - A1) * c / math.sqrt(A1) - math.sqrt((1 - A0 - sigma2) * (1 - A1)) * c
            expected = (step1 + (1 - A0) * c) / math.sqrt(A0)
        torch.testing.assert_close(diff, torch.full_like(diff, expected), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("sampler", [ddpm_sample, ddim_sample])
def test_sampler_x0_transform(sampler):
    base = NoiseSchedule.from_name("cosine")
    noise = torch.randn(256, 1, generator=torch.Generator().manual_seed(7))
    seen = []

    def transform(x0):
        seen.append(x0.abs().max().item())
        return x0.clamp(-0.1, 0.1)

    out = sampler(_oracle(base), base.respace("25"), noise, x0_transform=transform, progress=False)
    assert len(seen) == 25 and max(seen) > 0.1  # the transform saw every x̂_0 and had work to do
    assert out.abs().max().item() <= 0.1 + 1e-4  # the last step returns the transformed x̂_0


# --- conditioning augmentation (cascaded models) ------------------------------------------------


def test_noise_augment_level_zero_is_a_no_op_and_moments_follow_the_cosine_alpha_bar():
    torch.manual_seed(0)
    x = torch.rand(3, 3, 8, 8) * 2 - 1
    noise = torch.randn_like(x)
    assert torch.equal(noise_augment(x, 0.0, noise), x)
    mixed = noise_augment(x, torch.tensor([0.0, 0.5, 0.0]), noise)
    assert torch.equal(mixed[0], x[0]) and torch.equal(mixed[2], x[2]) and not torch.equal(mixed[1], x[1])
    s = 0.008
    for u in (0.1, 0.3, 1.0):
        alpha_bar = math.cos((u + s) / (1 + s) * math.pi / 2) ** 2 / math.cos(s / (1 + s) * math.pi / 2) ** 2
        assert cosine_alpha_bar(torch.tensor(u, dtype=F64)).item() == pytest.approx(alpha_bar, rel=1e-12)
        x0 = torch.full((20000, 1), 0.6)
        out = noise_augment(x0, u, torch.randn_like(x0))
        assert out.mean().item() == pytest.approx(math.sqrt(alpha_bar) * 0.6, abs=0.02)
        assert out.var().item() == pytest.approx(1 - alpha_bar, abs=0.02)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        noise_augment(x, 1.5, noise)


def test_gaussian_blur_against_a_direct_convolution():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 12, 12)
    assert torch.equal(gaussian_blur(x, 0.0), x)
    blurred = gaussian_blur(x, torch.tensor([0.0, 1.0]))
    assert torch.equal(blurred[0], x[0])
    offsets = torch.arange(-3, 4, dtype=torch.float32)  # radius ceil(3 sigma) = 3
    kernel = torch.exp(-0.5 * offsets**2)
    kernel = kernel / kernel.sum()
    padded = torch.nn.functional.pad(x[1:], (3, 3, 3, 3), mode="reflect")
    direct = torch.nn.functional.conv2d(padded, (kernel[:, None] * kernel[None]).expand(3, 1, 7, 7), groups=3)
    torch.testing.assert_close(blurred[1:], direct, rtol=1e-5, atol=1e-6)
    constant = torch.full((1, 3, 9, 9), 0.25)
    torch.testing.assert_close(gaussian_blur(constant, 2.0), constant)  # the kernel sums to 1


# --- score models: DSM, annealed Langevin, Bayes-rule guidance ------------------------------------


def test_dsm_loss_of_the_optimal_score_of_gaussian_data_has_its_closed_form():
    """x ~ N(mu, s^2 I): p_sigma = N(mu, (s^2 + sigma^2) I), so s*(x) = -(x - mu)/(s^2 + sigma^2) and
    E ½‖σ s*(x + σz) + z‖² = ½ d s²/(s² + σ²); any other score does worse."""
    generator = torch.Generator().manual_seed(0)
    n, d, mu, s = 40000, 4, 0.5, 0.7
    x = mu + s * torch.randn(n, d, generator=generator, dtype=F64)
    z = torch.randn(n, d, generator=generator, dtype=F64)
    for sigma in (0.05, 0.5, 2.0):
        noisy = x + sigma * z
        optimal = -(noisy - mu) / (s**2 + sigma**2)
        loss = dsm_loss(optimal, z, torch.full((n,), sigma, dtype=F64)).mean().item()
        assert loss == pytest.approx(0.5 * d * s**2 / (s**2 + sigma**2), rel=0.02)
        worse = dsm_loss(optimal * 1.2, z, torch.full((n,), sigma, dtype=F64)).mean().item()
        assert worse > loss


def _mixture_score(weights, means, std):
    """The exact score of a 1-D Gaussian mixture perturbed by N(0, σ²)."""

    def score(x, sigma):
        var = std**2 + sigma[:, None] ** 2  # B x 1
        flat = x.reshape(x.shape[0], 1)
        log_p = torch.log(weights)[None] - 0.5 * (flat - means[None]) ** 2 / var - 0.5 * torch.log(var)
        responsibility = torch.softmax(log_p, dim=1)
        return (responsibility * (means[None] - flat) / var).sum(dim=1).reshape(x.shape)

    return score


def test_annealed_langevin_with_the_exact_score_recovers_mixture_weights():
    """Song & Ermon 2019 sec. 3.2.2 / fig. 3: annealing recovers the 1:4 weights; a chain at the lowest
    level alone keeps the split of its starting points (both modes equally), since it cannot cross."""
    weights, means = torch.tensor([0.2, 0.8]), torch.tensor([-5.0, 5.0])
    score = _mixture_score(weights, means, 1.0)
    start = torch.rand(4000, 1, generator=torch.Generator().manual_seed(0)) * 16 - 8
    sigmas = geometric_sigmas(20.0, 0.5, 10)  # ε/(2σ_L²) = 0.1: each step contracts, none overshoots
    annealed = annealed_langevin(score, sigmas, start, eps=0.05, steps_per_level=60, final_denoise=False,
                                 generator=torch.Generator().manual_seed(1), progress=False)  # fmt: skip
    assert (annealed < 0).float().mean().item() == pytest.approx(0.2, abs=0.05)
    assert annealed[annealed > 0].std().item() == pytest.approx(math.sqrt(1 + 0.5**2), abs=0.08)  # p at σ_L
    frozen = annealed_langevin(score, sigmas[-1:], start, eps=0.05, steps_per_level=60 * 10, final_denoise=False,
                               generator=torch.Generator().manual_seed(1), progress=False)  # fmt: skip
    assert (frozen < 0).float().mean().item() == pytest.approx(0.5, abs=0.05)


def test_annealed_langevin_step_sizes_follow_algorithm_1():
    """With a zero score every step only adds √α_i z, so the variance after the run is Σ_i T α_i."""
    sigmas = geometric_sigmas(2.0, 0.5, 3)
    eps, steps = 0.01, 50
    out = annealed_langevin(lambda x, sigma: torch.zeros_like(x), sigmas, torch.zeros(20000, 1), eps=eps,
                            steps_per_level=steps, final_denoise=False, generator=torch.Generator().manual_seed(0),
                            progress=False)  # fmt: skip
    expected = sum(steps * eps * float(s) ** 2 / float(sigmas[-1]) ** 2 for s in sigmas)
    assert out.var().item() == pytest.approx(expected, rel=0.03)


def test_bayes_guided_score_adds_the_scaled_likelihood_gradient():
    x = torch.randn(3, 2, 4, 4, dtype=F64)
    sigma = torch.full((3,), 0.5, dtype=F64)
    target = torch.randn(3, 2, 4, 4, dtype=F64)

    def score_fn(x, sigma):
        return -x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2)

    def log_likelihood(x, sigma):  # log N(target; x, I) up to a constant: gradient target - x
        return -0.5 * ((x - target) ** 2).flatten(1).sum(1)

    calls = []
    counted = lambda x, sigma: calls.append(1) or log_likelihood(x, sigma)  # noqa: E731
    assert torch.equal(bayes_guided_score(score_fn, counted, 0.0)(x, sigma), score_fn(x, sigma)) and not calls
    norms = GuidanceNorms({}, {})
    guided = bayes_guided_score(score_fn, log_likelihood, 2.0, norms=norms)(x, sigma)
    torch.testing.assert_close(guided, score_fn(x, sigma) + 2.0 * (target - x))
    assert norms.summary()[0]["sigma"] == 0.5 and norms.summary()[0]["guidance_norm"] > 0
    linear = bayes_guided_score(score_fn, log_likelihood, 2.0, schedule="linear", sigma_range=(2.0, 0.02))(x, sigma)
    torch.testing.assert_close(linear, score_fn(x, sigma) + 2.0 * 0.25 * (target - x))
    with pytest.raises(ValueError, match="schedule"):
        bayes_guided_score(score_fn, log_likelihood, 1.0, schedule="cubic")
    with pytest.raises(ValueError, match=">= 0"):
        bayes_guided_score(score_fn, log_likelihood, -1.0)


def test_geometric_sigmas():
    sigmas = geometric_sigmas(2.0, 0.02, 10)
    assert sigmas[0].item() == pytest.approx(2.0) and sigmas[-1].item() == pytest.approx(0.02)
    ratios = sigmas[1:] / sigmas[:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, 0.01 ** (1 / 9)))
    with pytest.raises(ValueError):
        geometric_sigmas(0.02, 2.0, 10)


def test_network_in_bfloat16_returns_float32_and_leaves_the_sampler_arithmetic_in_float32():
    """The network runs under bfloat16 autocast and hands back float32; "32-true" is the network itself;
    the guidance wrapped around it combines float32 outputs (ε_c + (s − 1)(ε_c − ε_u) in float32)."""
    seen = []

    def net(x, t, cond):
        product = torch.nn.functional.linear(x, torch.eye(x.shape[-1]))  # a matrix product: autocast casts it
        seen.append(product.dtype)
        return product * cond[:, None]

    assert network_in_precision(net, "32-true") is net
    wrapped = network_in_precision(net, "bf16-mixed")
    x, t, cond = torch.randn(4, 8), torch.zeros(4, dtype=torch.long), torch.rand(4) + 0.5
    out = wrapped(x, t, cond)
    assert seen == [torch.bfloat16] and out.dtype == torch.float32
    assert torch.allclose(out, x * cond[:, None], rtol=1e-2) and not torch.equal(out, x * cond[:, None])
    null = torch.ones(4)
    guided = classifier_free_guidance(wrapped, cond, null, 3.0)(x, t)
    c, u = wrapped(x, t, cond), wrapped(x, t, null)
    assert guided.dtype == torch.float32 and torch.equal(guided, c + 2.0 * (c - u))
    with pytest.raises(ValueError, match="bf16-mixed"):
        network_in_precision(net, "16-mixed")


def test_schedule_arrays_are_converted_once_per_dtype_and_device_and_released_with_the_schedule():
    import gc

    from t2i_lightning.diffusion.schedules import _COPIES, device_copy, extract

    schedule = NoiseSchedule.from_name("cosine", 50)
    like, t = torch.zeros(3, 2, 4, 4), torch.tensor([0, 17, 49])
    first = extract(schedule.sqrt_alphas_cumprod, t, like)
    torch.testing.assert_close(first, schedule.sqrt_alphas_cumprod.float()[t].reshape(3, 1, 1, 1), rtol=0, atol=0)
    copy = device_copy(schedule.sqrt_alphas_cumprod, torch.float32, torch.device("cpu"))
    assert copy is device_copy(schedule.sqrt_alphas_cumprod, torch.float32, torch.device("cpu"))  # one conversion
    assert copy.dtype == torch.float32 and device_copy(schedule.sqrt_alphas_cumprod, torch.float64, "cpu").dtype == torch.float64
    before = len(_COPIES)
    del schedule, copy
    gc.collect()
    assert len(_COPIES) < before  # the copies go with the schedule

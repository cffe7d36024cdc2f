"""Self-conditioning (Chen, Zhang & Hinton 2023, "Analog Bits", sec. 3.2, Algorithms 1 and 2): the
denoiser also reads an estimate x̂_0 of the clean sample, ``net(x_t, t, cond, x0_estimate)``.

In training, half of the batches get zeros and half the x̂_0 of a first forward with zeros, without
gradient (Algorithm 1: the network learns to refine its own estimate, at the cost of one more forward every
other step). In sampling each step reads the x̂_0 of the step before (zeros at the first; Algorithm 2), so
the sampler keeps what it has already committed to, such as an object's outline, instead of re-deciding it
from x_t alone at every step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .parameterization import predict_x0_eps
from .schedules import NoiseSchedule

SELF_CONDITION_PROB = 0.5
"""Share of training batches that read the network's own first estimate (Chen et al. 2023, sec. 3.2)."""


def estimate_x0(
    schedule: NoiseSchedule, raw: Tensor, xt: Tensor, t: Tensor, parameterization: str, channels: int
) -> Tensor:
    """x̂_0 from a network output whose first ``channels`` channels are the prediction (a learned variance
    may follow), in x_t's dtype."""
    return predict_x0_eps(schedule, xt.float(), t, raw[:, :channels].float(), parameterization)[0].to(xt.dtype)


def training_inputs(
    net: Callable[..., Tensor], schedule: NoiseSchedule, xt: Tensor, t: Tensor, cond: object,
    parameterization: str, generator: torch.Generator | None = None,
) -> tuple[Tensor, ...]:  # fmt: skip
    """What a training forward of ``net`` reads after (x_t, t, cond): nothing for a network without
    ``self_condition``; else the x̂_0 of Algorithm 1, zeros or, with probability ``SELF_CONDITION_PROB``,
    the estimate of a forward that read zeros, detached."""
    if not getattr(net, "self_condition", False):
        return ()
    zeros = torch.zeros_like(xt)
    if torch.rand((), generator=generator) >= SELF_CONDITION_PROB:
        return (zeros,)
    with torch.no_grad():
        return (estimate_x0(schedule, net(xt, t, cond, zeros), xt, t, parameterization, xt.shape[1]).detach(),)


def sampling_denoiser(
    net: Callable[..., Tensor], module: torch.nn.Module, schedule: NoiseSchedule, parameterization: str
) -> tuple[Callable[..., Tensor], Callable[[Callable], Callable]]:
    """(what the model function calls as ``net(x_t, t, cond)``, what wraps the model function) for one
    sampling run of ``net``, the network ``module`` in its sampling precision: ``net`` and no wrapping
    without ``self_condition``, else a :class:`SelfConditionedSampling` and its :meth:`~SelfConditionedSampling.follow`."""
    if not getattr(module, "self_condition", False):
        return net, lambda model_fn: model_fn
    sampling = SelfConditionedSampling(net, schedule, parameterization, module.in_channels)
    return sampling, sampling.follow


class SelfConditionedSampling:
    """A self-conditioned network made into the ``net(x_t, t, cond)`` of the samplers and of classifier-free
    guidance: every call reads the current estimate (zeros before the first step), repeated to the call's
    rows (the two halves of batched guidance read the same one), and :meth:`follow` wraps the model
    function the sampler calls so that its output, guided where it is, sets the estimate of the next step.

    Use one instance per sampling run: it holds the run's estimate.
    """

    def __init__(self, net: Callable[..., Tensor], schedule: NoiseSchedule, parameterization: str, channels: int):
        self.net, self.schedule, self.parameterization, self.channels = net, schedule, parameterization, channels
        self.estimate: Tensor | None = None

    def __call__(self, x: Tensor, t: Tensor, cond: object) -> Tensor:
        if self.estimate is None:
            estimate = torch.zeros_like(x[:, : self.channels])
        else:
            estimate = self.estimate.repeat(len(x) // len(self.estimate), 1, 1, 1).to(x.dtype)
        return self.net(x, t, cond, estimate)

    def follow(self, model_fn: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
        """``model_fn`` that also keeps x̂_0 of each output (``t`` the original training step) as the estimate."""

        def step(x: Tensor, t: Tensor) -> Tensor:
            raw = model_fn(x, t)
            self.estimate = estimate_x0(self.schedule, raw, x, t, self.parameterization, self.channels)
            return raw

        return step

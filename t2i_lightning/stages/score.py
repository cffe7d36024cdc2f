"""Score stage: an unconditional noise-conditional score network (NCSN) trained by denoising score matching.

Song & Ermon 2019 ("NCSN", sec. 4.2): noise levels σ_1 > … > σ_L geometric (the study's σ from 1 to
0.01 for data in [0, 1], L = 10, is σ from 2 to 0.02 here because images are in [−1, 1]; see
:func:`t2i_lightning.diffusion.geometric_sigmas`); each batch draws a level per image uniformly and
minimises the DSM loss with λ(σ) = σ², ½‖σ·s(x + σz, σ) + z‖² (their eq. 6, whose expectation over
the uniform level is the (1/L)Σ of eq. 6). EMA weights (:class:`~t2i_lightning.training.ema.FusedEMA`, on Lightning's ``WeightAveraging``) are in
the checkpoint and used at every validation. Sampling is annealed Langevin dynamics
(:func:`t2i_lightning.diffusion.annealed_langevin`), optionally guided by a frozen noise-conditioned
captioner through Bayes' rule (:func:`t2i_lightning.diffusion.bayes_guided_score`); the captioner is
an argument of :meth:`ScoreStage.sample`, never a submodule.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from ..diffusion import GuidanceNorms, annealed_langevin, bayes_guided_score, dsm_loss, geometric_sigmas
from ..training.stage_training import GENERATIVE, StageTraining, fixed_seed


class ScoreStage(StageTraining, pl.LightningModule):
    """Args:
    net: the score network ``net(x, sigma)`` (:class:`t2i_lightning.nn.score_unet.ScoreUNet`).
    sigma_max, sigma_min, num_levels: the geometric noise levels (2, 0.02, 10 for data in [−1, 1]).
    eps, steps_per_level, final_denoise: default annealed Langevin settings (Algorithm 1's ε and T).
        NCSN's ε = 2e-5 with σ_L = 0.01 on [0, 1] data is ε/σ_L² = 0.2; the same step relative to the
        noise here (σ_L = 0.02 on [−1, 1]) is ε = 8e-5, the default.
    lr, weight_decay, warmup_steps, lr_decay: AdamW with warmup then "linear" or "cosine" decay.
    ema_decay, ema_start_step: EMA of the weights.
    samples: a sample-grid callback, run at each validation with the EMA weights.
    """

    def __init__(
        self,
        net: nn.Module,
        sigma_max: float = 2.0,
        sigma_min: float = 0.02,
        num_levels: int = 10,
        eps: float = 8e-5,
        steps_per_level: int = 100,
        final_denoise: bool = True,
        lr: float = GENERATIVE.lr,
        weight_decay: float = GENERATIVE.weight_decay,
        warmup_steps: int = GENERATIVE.warmup_steps,
        lr_decay: str = GENERATIVE.lr_decay,
        ema_decay: float = GENERATIVE.ema_decay,
        ema_start_step: int = GENERATIVE.ema_start_step,
        samples: pl.Callback | None = None,
    ):
        super().__init__()
        with warnings.catch_warnings():  # the net's config is kept on purpose: load_from_checkpoint rebuilds it
            warnings.filterwarnings("ignore", message=r".*is an instance of `nn.Module`.*")
            self.save_hyperparameters(ignore=["samples"])
        self.net = net
        self.samples = samples
        self.register_buffer("sigmas", geometric_sigmas(sigma_max, sigma_min, num_levels).float(), persistent=False)

    # --- training -----------------------------------------------------------------------------

    def _loss(self, batch: dict[str, Any]) -> torch.Tensor:
        x = batch["image"]
        sigma = self.sigmas[torch.randint(0, len(self.sigmas), (x.shape[0],), device=x.device)]
        noise = torch.randn_like(x)
        return dsm_loss(self.net(x + sigma.reshape(-1, 1, 1, 1) * noise, sigma), noise, sigma)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch).mean()
        self.log("train/dsm", loss, prog_bar=True, batch_size=len(batch["key"]))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        with fixed_seed(batch_idx):  # the same levels and noise at every validation: comparable curves
            self.log("val/dsm", self._loss(batch).mean(), prog_bar=True, batch_size=len(batch["key"]), sync_dist=True)

    # --- sampling -----------------------------------------------------------------------------

    def sample(
        self,
        n: int,
        *,
        captioner: nn.Module | None = None,
        prompt: str | Sequence[str] | None = None,
        guidance: float = 0.0,
        schedule: str = "constant",
        eps: float | None = None,
        steps_per_level: int | None = None,
        final_denoise: bool | None = None,
        image_size: int | None = None,
        generator: torch.Generator | None = None,
        progress: bool = True,
        norms: GuidanceNorms | None = None,
    ) -> torch.Tensor:
        """``n`` images in [-1, 1] by annealed Langevin dynamics from uniform noise in [-1, 1] (NCSN sec. 4.3).

        ``prompt`` is one caption for every image or a list of ``n``, one per image.
        With ``guidance`` λ > 0 the score is that of p(x | prompt) by Bayes' rule, with the frozen
        ``captioner``'s log p(prompt | x_σ, σ) (:class:`t2i_lightning.nn.captioner.NoisyCaptioner`);
        ``schedule`` shapes λ over σ. ``norms`` collects both terms' norms per level. The Langevin
        settings default to the stage's.
        """
        hp = self.hparams
        if n <= 0:
            raise ValueError(f"n must be positive, got {n}")
        size = image_size or self.net.image_size
        score_fn: Any = lambda x, sigma: self.net(x, sigma)  # noqa: E731
        prompts = [prompt] * n if isinstance(prompt, str) else list(prompt or [])
        if prompts and len(prompts) != n:
            raise ValueError(f"Give one prompt or one per image ({n}), got {len(prompts)}")
        if guidance and (captioner is None or not prompts or not all(p.strip() for p in prompts)):
            raise ValueError("Guided sampling needs a captioner and a non-empty prompt")
        if captioner is not None and prompts:
            token_ids = captioner.tokenize(prompts).to(self.device)
            score_fn = bayes_guided_score(
                score_fn, lambda x, sigma: captioner.log_likelihood(x, sigma, token_ids), guidance,
                schedule=schedule, sigma_range=(hp.sigma_max, hp.sigma_min), norms=norms,
            )  # fmt: skip
        noise = torch.rand((n, self.net.in_channels, size, size), generator=generator, device=self.device) * 2 - 1
        return annealed_langevin(
            score_fn, self.sigmas, noise, eps=eps or hp.eps, steps_per_level=steps_per_level or hp.steps_per_level,
            final_denoise=hp.final_denoise if final_denoise is None else final_denoise, generator=generator,
            progress=progress,
        ).clamp(-1, 1)  # fmt: skip

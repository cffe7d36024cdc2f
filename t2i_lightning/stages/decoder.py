"""Decoder stage: a diffusion U-Net that draws 64px images from CLIP image embeddings (unCLIP-lite).

Training (the study; Nichol & Dhariwal 2021): x_0 from the image shards, the standardised CLIP
image embedding of the same key from the mirrored embedding shards as the condition, replaced by
the null condition with probability ``cond_drop_prob`` for classifier-free guidance (Ho &
Salimans 2021); t uniform; the hybrid loss L_simple + λ·L_vlb with learned variance, optionally P2
weighted (Choi et al. 2022). EMA weights come from :class:`~t2i_lightning.training.ema.FusedEMA`
(Lightning's ``WeightAveraging`` with torch's fused update): the checkpoint's ``state_dict`` and every validation (hence every sample grid) use them.

All the diffusion math is in :mod:`t2i_lightning.diffusion`; this file unpacks batches, calls it
and logs.
"""

from __future__ import annotations

import warnings
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.nn import functional as F

from ..diffusion import (
    DEFAULT_CFG_SCALE,
    SAMPLERS,
    ImageGuidance,
    NoiseSchedule,
    classifier_free_guidance,
    dynamic_threshold,
    hybrid_loss,
    network_in_precision,
    p2_weights,
    q_sample,
    static_threshold,
)
from ..training.stage_training import GENERATIVE, StageTraining, fixed_seed
from .embedding_stats import EmbeddingStatsMixin

NULL_CONDITIONS = ("learned", "zeros")


class DecoderStage(EmbeddingStatsMixin, StageTraining, pl.LightningModule):
    """Args:
    net: the denoiser, ``net(x_t, t, cond)`` (``t2i_lightning.nn.unet.ConditionalUNet``).
    stats: ``stats.json`` of the embedding directory; its image-side mean/std standardise the
        condition and are kept as buffers, so the checkpoint alone needs no side files.
    schedule, timesteps: noise schedule ("cosine" or "linear") and its length T.
    schedule_shift: the schedule's log-SNR moved by −2·log(shift) (simple diffusion, Hoogeboom et al. 2023;
        1 = unshifted): more of the steps at the noise levels where an image's layout is decided.
    parameterization: what the network predicts: "eps" (default), "x0" or "v".
    vlb_weight: λ of the hybrid loss (0.001); only used with a learned variance.
    p2_gamma, p2_k: P2 weighting of L_simple (γ = 0 turns it off).
    cond_drop_prob: probability of replacing the condition by the null one (0.2).
    null_cond: "learned" (a trained vector) or "zeros".
    lr, weight_decay, warmup_steps, lr_decay: AdamW, warmup then "linear" (the study) or "cosine" decay.
    ema_decay, ema_start_step: EMA of the weights (copied from the raw weights at the start step).
    samples: a sample-grid callback (``t2i_lightning.callbacks.sample_grid.DecoderSampleGrid``),
        run at each validation with the EMA weights; not saved in the checkpoint.
    """

    def __init__(
        self,
        net: nn.Module,
        stats: str | None = None,
        schedule: str = "cosine",
        timesteps: int = 1000,
        schedule_shift: float = 1.0,
        parameterization: str = "eps",
        vlb_weight: float = 1e-3,
        p2_gamma: float = 0.0,
        p2_k: float = 1.0,
        cond_drop_prob: float = 0.2,
        null_cond: str = "learned",
        lr: float = GENERATIVE.lr,
        weight_decay: float = GENERATIVE.weight_decay,
        warmup_steps: int = GENERATIVE.warmup_steps,
        lr_decay: str = GENERATIVE.lr_decay,
        ema_decay: float = GENERATIVE.ema_decay,
        ema_start_step: int = GENERATIVE.ema_start_step,
        samples: pl.Callback | None = None,
    ):
        super().__init__()
        if null_cond not in NULL_CONDITIONS:
            raise ValueError(f"null_cond must be one of {NULL_CONDITIONS}, got {null_cond!r}")
        if not 0.0 <= cond_drop_prob < 1.0:
            raise ValueError(f"cond_drop_prob must be in [0, 1), got {cond_drop_prob}")
        with warnings.catch_warnings():  # the net's config is kept on purpose: load_from_checkpoint rebuilds it
            warnings.filterwarnings("ignore", message=r".*is an instance of `nn.Module`.*")
            self.save_hyperparameters(ignore=["samples"])
        self.net = net
        self.samples = samples
        # Kept as attributes: a subclass without these arguments (the upsampler) has no hparams for them.
        self.cond_drop_prob, self.p2 = cond_drop_prob, (p2_gamma, p2_k)
        self.schedule = NoiseSchedule.from_name(schedule, timesteps, schedule_shift)
        self.init_conditioning(stats, null_cond)

    # --- conditioning -------------------------------------------------------------------------

    conditions_on_text = False  # True for a stage whose ``sample`` takes captions (no translator)

    def init_conditioning(self, stats: str | None, null_cond: str) -> None:
        """Create what the conditioning hooks below need: the null embedding and the embedding statistics."""
        self.register_null("null_embedding", torch.zeros(self.net.cond_dim), null_cond)
        self.init_embedding_stats(stats, {"img": self.net.cond_dim})

    def register_null(self, name: str, value: torch.Tensor, null_cond: str) -> None:
        """A null-condition tensor: trained (a parameter) when ``null_cond`` is "learned", else a fixed buffer."""
        if null_cond == "learned":
            self.register_parameter(name, nn.Parameter(value))
        else:
            self.register_buffer(name, value)

    def load_stats(self, stats: dict) -> None:
        if stats["dim"] != self.net.cond_dim:
            raise ValueError(f"Embeddings have dim {stats['dim']} but the U-Net takes cond_dim {self.net.cond_dim}")
        self.copy_stats(stats, ("img",))

    # A subclass conditioned on something else (e.g. text tokens: stages/text_decoder.py) overrides
    # these four, and init_conditioning for the parameters they need.

    def condition(self, image_embedding: torch.Tensor) -> torch.Tensor:
        """What ``sample`` is given (raw CLIP image embeddings, or translated ones) -> the network's condition."""
        return (image_embedding.to(self.device).float() - self.mean_img) / self.std_img

    def batch_condition(self, batch: dict[str, Any]) -> torch.Tensor:
        """The condition of a training batch: its images' own CLIP image embeddings."""
        return self.condition(batch["img_emb"])

    def null_condition(self, n: int) -> torch.Tensor:
        """The condition that stands for "no condition" (classifier-free guidance's unconditional model)."""
        return self.null_embedding.expand(n, -1)

    def drop_condition(self, cond: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        """``cond`` with the rows where ``drop`` is True replaced by the null condition."""
        return torch.where(drop[:, None], self.null_condition(len(drop)).to(cond.dtype), cond)

    # --- training -----------------------------------------------------------------------------

    def diffusion_target(self, batch: dict[str, Any], cond: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """What the diffusion process runs on, the batch's images (a subclass may diffuse a residual),
        and per-sample losses of any other trained part of the stage, added to the total: with a
        U-Net that has a layout head (``layout_size`` g), its MSE to the images' g x g area averages."""
        image = batch["image"]
        size = getattr(self.net, "layout_size", 0)
        if not size:
            return image, {}
        error = self.net.layout(cond).float() - F.adaptive_avg_pool2d(image.float(), size)
        return image, {"layout": error.pow(2).mean(dim=(1, 2, 3))}

    def _losses(self, batch: dict[str, Any], drop_prob: float) -> dict[str, torch.Tensor]:
        image = batch["image"]
        n = image.shape[0]
        drop = torch.rand(n, device=image.device) < drop_prob
        cond = self.drop_condition(self.batch_condition(batch), drop)
        x0, extra = self.diffusion_target(batch, cond)
        t = torch.randint(0, self.schedule.num_steps, (n,), device=x0.device)
        noise = torch.randn_like(x0)
        xt = q_sample(self.schedule, x0, t, noise)
        hp = self.hparams
        weights = p2_weights(self.schedule, t, *self.p2) if self.p2[0] else None
        losses = hybrid_loss(
            self.schedule, self.net(xt, t, cond), x0, xt, t, noise,
            parameterization=hp.parameterization, vlb_weight=hp.vlb_weight,
            learn_variance=self.net.learn_variance, weights=weights,
        )  # fmt: skip
        for name, value in extra.items():
            losses[name], losses["loss"] = value, losses["loss"] + value
        return losses

    def _log_losses(self, losses: dict[str, torch.Tensor], name: str, n: int) -> torch.Tensor:
        means = {key: value.mean() for key, value in losses.items()}
        self.log(f"{name}/loss", means["loss"], prog_bar=True, batch_size=n, sync_dist=name != "train")
        self.log_dict(
            {f"{name}/{key}": value for key, value in means.items() if key != "loss"},
            batch_size=n, sync_dist=name != "train",
        )  # fmt: skip
        return means["loss"]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._log_losses(self._losses(batch, self.cond_drop_prob), "train", len(batch["key"]))

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        with fixed_seed(batch_idx):  # the same t and noise every validation: comparable curves
            self._log_losses(self._losses(batch, 0.0), "val", len(batch["key"]))

    # --- sampling -----------------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self,
        conditioning: Any,
        *,
        n: int | None = None,
        image_size: int | None = None,
        sampler: str = "ddim",
        steps: int | str = 50,
        cfg_scale: float = DEFAULT_CFG_SCALE,
        cfg_batched: bool = True,
        threshold: float | None = 0.995,
        eta: float = 0.0,
        image_guidance: ImageGuidance | None = None,
        generator: torch.Generator | None = None,
        progress: bool = True,
        precision: str = "32-true",
    ) -> torch.Tensor:
        """Images in [-1, 1] (B x 3 x S x S), one per row of ``conditioning`` (raw CLIP image
        embeddings here; what :meth:`condition` takes in a subclass), or ``n`` unconditional ones
        when it is None.

        ``steps``: respacing ("50", "ddim50", a list, or an int); "all" uses every training step.
        ``cfg_scale``: classifier-free guidance scale (1 = conditional only, no guidance);
        ``cfg_batched``: its two halves in one forward (default) or two.
        ``threshold``: dynamic-thresholding percentile (Imagen), or None for static clipping to [-1, 1].
        ``precision``: "bf16-mixed" runs the U-Net under bfloat16 autocast, the sampler and the guidance
        in float32 (:func:`t2i_lightning.diffusion.network_in_precision`); "32-true" (default) all float32.
        """
        if cfg_scale < 0:
            raise ValueError(f"cfg_scale must be >= 0, got {cfg_scale}")
        if conditioning is None and not n:
            raise ValueError("Give a condition for each image or a sample count n")
        n = len(conditioning) if conditioning is not None else n
        size = image_size or self.net.image_size
        null = self.null_condition(n)
        cond = self.condition(conditioning) if conditioning is not None else null
        net = network_in_precision(self.net, precision)
        model_fn = classifier_free_guidance(
            net, cond, null, cfg_scale, eps_channels=self.net.in_channels, batched=cfg_batched
        ) if conditioning is not None and cfg_scale != 1.0 else (lambda x, t: net(x, t, cond))  # fmt: skip
        return self.draw(
            model_fn, (n, self.net.in_channels, size, size), sampler=sampler, steps=steps, threshold=threshold,
            eta=eta, image_guidance=image_guidance, generator=generator, progress=progress,
        )  # fmt: skip

    def draw(
        self,
        model_fn: Any,
        shape: tuple[int, ...],
        *,
        sampler: str = "ddim",
        steps: int | str = 50,
        threshold: float | None = 0.995,
        eta: float = 0.0,
        image_guidance: ImageGuidance | None = None,
        offset: torch.Tensor | None = None,
        scale: float = 1.0,
        generator: torch.Generator | None = None,
        progress: bool = True,
    ) -> torch.Tensor:
        """Run ``sampler`` with ``model_fn(x_t, t)`` from Gaussian noise of ``shape`` over the respaced
        schedule, thresholding x̂_0, and return the images clamped to [-1, 1].

        ``offset``, ``scale``: when the process runs on the scaled residual scale·(image − offset)
        (residual diffusion), the image offset + x̂_0/scale is what is thresholded and
        offset + sample/scale what is returned."""
        if sampler not in SAMPLERS:
            raise ValueError(f"Unknown sampler {sampler!r}; use one of {', '.join(SAMPLERS)}")
        schedule = self.schedule if str(steps) == "all" else self.schedule.respace(
            f"ddim{steps}" if sampler == "ddim" and str(steps).isdigit() else steps
        )  # fmt: skip
        noise = torch.randn(shape, generator=generator, device=self.device, dtype=torch.float32)
        extra = {"eta": eta} if sampler == "ddim" else {}
        to_image = (lambda x0: dynamic_threshold(x0, threshold)) if threshold else static_threshold
        base = 0.0 if offset is None else offset.to(self.device, torch.float32)
        sample = SAMPLERS[sampler](
            model_fn, schedule, noise,
            parameterization=self.hparams.parameterization, learn_variance=self.net.learn_variance,
            x0_transform=to_image if offset is None else (lambda x0: scale * (to_image(base + x0 / scale) - base)),
            image_guidance=image_guidance, generator=generator, progress=progress, **extra,
        )  # fmt: skip
        return (base + sample / scale).clamp(-1, 1)

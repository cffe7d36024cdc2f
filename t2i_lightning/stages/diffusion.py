"""The diffusion stage: one LightningModule for every DDPM-family model of the pipeline.

Training (Ho et al. 2020; Nichol & Dhariwal 2021): x_0 from the batch (or what the conditioning makes of
it, e.g. a residual), t uniform, the hybrid loss L_simple + λ·L_vlb with learned variance, optionally P2
(Choi et al. 2022) or Min-SNR-γ (Hang et al. 2023) weighted; the condition comes from the injected
:class:`~t2i_lightning.stages.conditioning.Conditioning`, replaced by its null condition with its
``drop_prob`` for classifier-free guidance (Ho & Salimans 2021). EMA weights come from
:class:`~t2i_lightning.training.ema.FusedEMA`: the checkpoint's ``state_dict`` and every validation use them.
Sampling: respaced DDPM or DDIM, classifier-free guidance, dynamic or static thresholding, image guidance,
in batches of at most the conditioning's ``max_batch_pixels`` output pixels; self-conditioning
(:mod:`t2i_lightning.diffusion.self_conditioning`) where the network has ``self_condition``.

The conditioning (stages/decoder.yaml: the CLIP image embedding; decoder_text.yaml: text tokens;
upsampler.yaml: the low-resolution image), the ``space`` (None: pixels; a
:class:`~t2i_lightning.stages.latent_space.LatentSpace`: an autoencoder's latents) and the ``net`` are
injected. The diffusion math is in :mod:`t2i_lightning.diffusion`; this file unpacks batches, calls it and logs.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from ..diffusion import (
    DEFAULT_CFG_SCALE,
    SAMPLERS,
    ImageGuidance,
    NoiseSchedule,
    classifier_free_guidance,
    draw_samples,
    hybrid_loss,
    min_snr_weights,
    network_in_precision,
    p2_weights,
    q_sample,
    sampling_denoiser,
    training_inputs,
)
from ..training.stage_training import GENERATIVE, StageTraining, fixed_seed
from .conditioning import Conditioning
from .latent_space import LatentSpace

STAGE_DEFAULT = "stage"
"""``sample``'s default for settings the stage holds (``threshold``, ``max_batch_pixels``), where None means something."""


class DiffusionStage(StageTraining, pl.LightningModule):
    """Args:
    net: the denoiser, ``net(x_t, t, cond)`` (``t2i_lightning.nn``: ``ConditionalUNet``,
        ``TextConditionalUNet``, ``SuperResUNet``, ...).
    conditioning: what ``net`` is conditioned on (:mod:`t2i_lightning.stages.conditioning`), or None
        for an unconditional model.
    schedule, timesteps: noise schedule ("cosine" or "linear") and its length T.
    schedule_shift: the schedule's log-SNR moved by −2·log(shift) (simple diffusion, Hoogeboom et al.
        2023; 1 = unshifted): more of the steps at the noise levels where an image's layout is decided.
    parameterization: what the network predicts: "eps" (default), "x0" or "v".
    vlb_weight: λ of the hybrid loss (0.001); only used with a learned variance.
    p2_gamma, p2_k: P2 weighting of L_simple (γ = 0 turns it off).
    min_snr_gamma: Min-SNR-γ weighting of L_simple instead (0 turns it off; Hang et al. 2023 take 5).
    sampler, steps, threshold: the default sampling settings (see :meth:`sample`).
    lr, weight_decay, warmup_steps, lr_decay: AdamW, warmup then "linear" (the study) or "cosine" decay.
    ema_decay, ema_start_step: EMA of the weights (copied from the raw weights at the start step).
    samples: a sample-grid callback (``t2i_lightning.callbacks``), run at each validation with the EMA
        weights; not saved in the checkpoint.
    space: where the diffusion runs: None for pixels, or a
        :class:`~t2i_lightning.stages.latent_space.LatentSpace` (samples are decoded to images).
    """

    def __init__(
        self,
        net: nn.Module,
        conditioning: Conditioning | None = None,
        schedule: str = "cosine",
        timesteps: int = 1000,
        schedule_shift: float = 1.0,
        parameterization: str = "eps",
        vlb_weight: float = 1e-3,
        p2_gamma: float = 0.0,
        p2_k: float = 1.0,
        min_snr_gamma: float = 0.0,
        sampler: str = "ddim",
        steps: int | str = 50,
        threshold: float | None = 0.995,
        lr: float = GENERATIVE.lr,
        weight_decay: float = GENERATIVE.weight_decay,
        warmup_steps: int = GENERATIVE.warmup_steps,
        lr_decay: str = GENERATIVE.lr_decay,
        ema_decay: float = GENERATIVE.ema_decay,
        ema_start_step: int = GENERATIVE.ema_start_step,
        samples: pl.Callback | None = None,
        space: LatentSpace | None = None,
    ):
        super().__init__()
        if sampler not in SAMPLERS:
            raise ValueError(f"Unknown sampler {sampler!r}; use one of {', '.join(SAMPLERS)}")
        if p2_gamma and min_snr_gamma:
            raise ValueError("p2_gamma and min_snr_gamma are two weightings of one loss: set at most one")
        with warnings.catch_warnings():  # the net's config is kept on purpose: load_from_checkpoint rebuilds it
            warnings.filterwarnings("ignore", message=r".*is an instance of `nn.Module`.*")
            self.save_hyperparameters(ignore=["samples"])
        self.net, self.conditioning = net, conditioning
        if conditioning is not None:
            conditioning.bind(net)
        self.samples, self.space = samples, space
        if space is not None:
            space.bind(net)
        self.schedule = NoiseSchedule.from_name(schedule, timesteps, schedule_shift)

    # --- what the stage is conditioned on (read by the pipeline, the commands and the callbacks) ------

    @property
    def conditions_on_text(self) -> bool:
        """Whether ``sample`` takes captions (the Imagen-like decoder: no translator in front)."""
        return self.conditioning is not None and self.conditioning.takes_text

    @property
    def conditions_on_embedding(self) -> bool:
        """Whether the network reads CLIP image embeddings (``sample`` needs them)."""
        return self.conditioning is not None and self.conditioning.takes_embedding

    @property
    def image_size(self) -> int:
        """The side of the images ``sample`` returns by default: the network's, times the autoencoder's factor in latents."""
        return self.net.image_size * (self.space.factor if self.space is not None else 1)

    @property
    def clip_identity(self) -> dict[str, Any]:
        """The CLIP whose embeddings the stage was trained on ({} when none)."""
        return self.conditioning.clip_identity if self.conditioning is not None else {}

    def optimizer_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """The conditioning's own parameters (null vectors), the network's, then the conditioning's modules':
        the order of the classes this stage replaced, so their checkpoints' optimizer states carry over."""
        conditioning = self.conditioning
        if conditioning is None:
            yield from self.named_parameters()
            return
        yield from (("conditioning." + name, p) for name, p in conditioning.named_parameters(recurse=False))
        yield from (("net." + name, p) for name, p in self.net.named_parameters())
        own = {id(p) for _, p in conditioning.named_parameters(recurse=False)}
        yield from (("conditioning." + name, p) for name, p in conditioning.named_parameters() if id(p) not in own)

    def _injected(self) -> list[nn.Module]:
        return [part for part in (self.conditioning, self.space) if part is not None]

    def on_fit_start(self) -> None:
        for part in self._injected():
            part.on_fit_start()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        for part in self._injected():
            part.on_save_checkpoint(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        for part in self._injected():
            part.on_load_checkpoint(checkpoint)

    # --- training -----------------------------------------------------------------------------

    def _losses(self, batch: dict[str, Any], drop_prob: float) -> dict[str, torch.Tensor]:
        if self.space is not None:  # the conditioning's target is then the scaled latent
            batch = {**batch, "image": self.space.x0(batch)}
        image, n = batch["image"], len(batch["image"])
        drop = torch.rand(n, device=image.device) < drop_prob
        conditioning, cond, x0, extra = self.conditioning, None, image, {}
        if conditioning is not None:
            cond = conditioning.drop(conditioning.from_batch(batch, self.device), drop)
            x0, extra = conditioning.target(batch, cond, self.net)
        t = torch.randint(0, self.schedule.num_steps, (n,), device=x0.device)
        noise = torch.randn_like(x0)
        xt = q_sample(self.schedule, x0, t, noise)
        hp = self.hparams
        weights = min_snr_weights(self.schedule, t, hp.min_snr_gamma, hp.parameterization) if hp.min_snr_gamma else (
            p2_weights(self.schedule, t, hp.p2_gamma, hp.p2_k) if hp.p2_gamma else None)
        prediction = self.net(xt, t, cond, *training_inputs(self.net, self.schedule, xt, t, cond, hp.parameterization))
        losses = hybrid_loss(
            self.schedule, prediction, x0, xt, t, noise,
            parameterization=hp.parameterization, vlb_weight=hp.vlb_weight,
            learn_variance=self.net.learn_variance, weights=weights,
        )  # fmt: skip
        for name, value in extra.items():
            losses[name], losses["loss"] = value, losses["loss"] + value
        return losses

    def _log_losses(self, losses: dict[str, torch.Tensor], name: str, n: int) -> torch.Tensor:
        means = {key: value.mean() for key, value in losses.items()}
        self.log(f"{name}/loss", means["loss"], prog_bar=True, batch_size=n, sync_dist=name != "train")
        others = {f"{name}/{key}": value for key, value in means.items() if key != "loss"}
        self.log_dict(others, batch_size=n, sync_dist=name != "train")
        return means["loss"]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        drop_prob = self.conditioning.drop_prob if self.conditioning is not None else 0.0
        return self._log_losses(self._losses(batch, drop_prob), "train", len(batch["key"]))

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        with fixed_seed(batch_idx):  # the same t and noise every validation: comparable curves
            self._log_losses(self._losses(batch, 0.0), "val", len(batch["key"]))

    # --- sampling -----------------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self,
        inputs: Any = None,
        *,
        n: int | None = None,
        image_size: int | None = None,
        sampler: str | None = None,
        steps: int | str | None = None,
        cfg_scale: float = DEFAULT_CFG_SCALE,
        cfg_batched: bool = True,
        threshold: float | None | str = STAGE_DEFAULT,
        eta: float = 0.0,
        image_guidance: ImageGuidance | None = None,
        generator: torch.Generator | None = None,
        progress: bool = True,
        precision: str = "32-true",
        max_batch_pixels: int | None | str = STAGE_DEFAULT,
        **condition_options: Any,
    ) -> torch.Tensor:
        """Images in [-1, 1] (B x C x H x W), one per row of ``inputs`` (what the conditioning encodes:
        raw CLIP image embeddings, captions, low-resolution images), or ``n`` unconditional ones when it is None.

        ``sampler``, ``steps``, ``threshold`` default to the stage's. ``steps``: respacing ("50",
        "ddim50", a list, or an int); "all" uses every training step. ``cfg_scale``: classifier-free
        guidance scale (1 = conditional only, no guidance; a conditioning without a null condition is
        never guided); ``cfg_batched``: its two halves in one forward (default) or two. ``threshold``: a
        dynamic-thresholding percentile (Imagen), or None for static clipping to [-1, 1]. ``precision``:
        "bf16-mixed" runs the network under bfloat16 autocast, the sampler and the guidance in float32
        (:func:`t2i_lightning.diffusion.network_in_precision`); "32-true" (default) all float32.
        ``max_batch_pixels``: the images are drawn in batches of at most that many output pixels (at least
        one image; None: all at once), one after the other from ``generator``, so memory stays flat in
        the number of images; defaults to the conditioning's. ``condition_options`` go to the
        conditioning's ``encode`` (e.g. the upsampler's ``aug_level`` and ``image_embeddings``), cut
        to each batch's rows where they hold one value per image.
        """
        if cfg_scale < 0:
            raise ValueError(f"cfg_scale must be >= 0, got {cfg_scale}")
        if inputs is None and not n:
            raise ValueError("Give a condition for each image or a sample count n")
        if inputs is not None and self.conditioning is None:
            raise ValueError("This diffusion model is unconditional: give a sample count n, not inputs")
        conditioning, hp = self.conditioning, self.hparams
        n = len(inputs) if inputs is not None else n
        size = conditioning.output_size(inputs, self.net) if inputs is not None and conditioning is not None else None
        if self.space is not None:  # ``image_size`` is the decoded images'; image guidance pulls towards their latents
            image_size = self.space.latent_side(image_size) if image_size else None
            image_guidance = self.space.guidance_in_latents(image_guidance, self.device)
        size = size or (image_size or self.net.image_size,) * 2
        if max_batch_pixels == STAGE_DEFAULT:
            max_batch_pixels = conditioning.max_batch_pixels if conditioning is not None else None
        settings = dict(
            sampler=sampler or hp.sampler, steps=steps or hp.steps, eta=eta, image_guidance=image_guidance,
            threshold=hp.threshold if threshold == STAGE_DEFAULT else threshold, generator=generator, progress=progress,
        )  # fmt: skip
        net = network_in_precision(self.net, precision)

        def draw_rows(rows: slice) -> torch.Tensor:
            count = len(range(n)[rows])
            null = conditioning.null(count) if conditioning is not None and conditioning.guided else None
            if inputs is None:
                cond, offset, scale = null, None, 1.0
            else:
                options = per_batch(condition_options, rows, n)
                cond = conditioning.encode(inputs[rows], device=self.device, generator=generator, **options)
                offset, scale = conditioning.offset(inputs[rows], cond, self.net)
            denoiser, follow = sampling_denoiser(net, self.net, self.schedule, hp.parameterization)
            model_fn = classifier_free_guidance(
                denoiser, cond, null, cfg_scale, eps_channels=self.net.in_channels, batched=cfg_batched
            ) if inputs is not None and null is not None and cfg_scale != 1.0 else (lambda x, t: denoiser(x, t, cond))  # fmt: skip
            return self.draw(follow(model_fn), (count, self.net.in_channels, *size), offset=offset, scale=scale, **settings)

        per = n if max_batch_pixels is None else max(1, max_batch_pixels // (size[0] * size[1]))
        drawn = torch.cat([draw_rows(slice(i, i + per)) for i in range(0, n, per)])
        return drawn if self.space is None else self.space.decode(drawn)

    def draw(self, model_fn: Any, shape: tuple[int, ...], **settings: Any) -> torch.Tensor:
        """Images of ``shape`` drawn with ``model_fn(x_t, t)`` (:func:`t2i_lightning.diffusion.draw_samples`
        with this stage's schedule, parameterization and device; ``settings``: sampler, steps, threshold,
        eta, image_guidance, offset, scale, generator, progress)."""
        bounded = self.space is None or self.space.bounded
        return draw_samples(
            model_fn, self.schedule, shape, parameterization=self.hparams.parameterization,
            learn_variance=self.net.learn_variance, device=self.device, bounded=bounded, **settings,
        )  # fmt: skip


def per_batch(options: dict[str, Any], rows: slice, n: int) -> dict[str, Any]:
    """``options`` with every per-image value (a tensor or sequence of ``n`` rows) cut to ``rows``."""
    return {
        key: value[rows] if isinstance(value, torch.Tensor | Sequence) and not isinstance(value, str)
        and len(value) == n else value
        for key, value in options.items()
    }  # fmt: skip

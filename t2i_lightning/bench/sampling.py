"""Sampling: DDIM with few steps vs ancestral DDPM over every training step, classifier-free
guidance in one batched forward vs two forwards, and DDIM with the U-Net under bfloat16 autocast vs
float32.

Everything runs side by side in one process on the same decoder, the same conditions and the same
guidance settings (dynamic thresholding, scale 3). The decoder is a checkpoint, or, when none is
given, the U-Net of a stage config with random weights (timing does not depend on the weights).
With a checkpoint the conditions are the true CLIP image embeddings of validation images, and each
sampler's quality is the coarse colour error of its reconstructions against their sources, relative
to random pairs (:func:`t2i_lightning.metrics.colour.reconstruction_colour_report`: lower is better).
On an accelerator (``device``) the clock is read after the device has finished.
"""

from __future__ import annotations

import time

import torch

from ..diffusion import DEFAULT_CFG_SCALE
from ..eval.decoder_report import validation_references
from ..metrics.colour import reconstruction_colour_report
from ..nn.unet import ConditionalUNet
from ..stages.conditioning import ImageEmbedding
from ..stages.diffusion import DiffusionStage
from .clock import synchronize
from .stage_config import stage_config_section


def decoder_for_bench(checkpoint: str | None, config: str = "stages/decoder.yaml") -> DiffusionStage:
    """The decoder of ``checkpoint``, or a randomly initialised one with ``config``'s U-Net."""
    if checkpoint:
        return DiffusionStage.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True)
    net_args = stage_config_section(config, "model", "init_args", "net", "init_args")
    stage = DiffusionStage(ConditionalUNet(**net_args), ImageEmbedding())
    stage.conditioning.stats_loaded = True
    return stage


def _timed(sample, device: torch.device) -> tuple[torch.Tensor, float]:
    synchronize(device)
    start = time.perf_counter()
    images = sample()
    synchronize(device)
    return images, time.perf_counter() - start


def bench_sampling(
    checkpoint: str | None = None, n: int = 4, ddim_steps: int = 50, ddpm_steps: str = "all", cfg_scale: float = DEFAULT_CFG_SCALE,
    config: str = "stages/decoder.yaml", references: tuple[str, str] | None = None, device: torch.device | str = "cpu",
) -> dict:  # fmt: skip
    """Seconds per image of DDIM-``ddim_steps`` and DDPM-``ddpm_steps`` for ``n`` images and their ratio;
    DDIM with guidance in two forwards against one batched forward; with ``references`` (the image
    shards and the embedding directory the checkpoint's CLIP made of them), each sampler's
    reconstruction colour-error ratio on the first ``n`` validation images."""
    device = torch.device(device)
    stage = decoder_for_bench(checkpoint, config).eval().to(device)
    batch = validation_references(*references, stage.net.image_size, n) if references is not None else None
    if batch is not None:
        conditioning = batch["img_emb"]
    else:
        stats = stage.conditioning
        conditioning = torch.randn(n, stage.net.cond_dim, device=device) * stats.std_img + stats.mean_img
    result = {"n": n, "image_size": stage.net.image_size, "threads": torch.get_num_threads(), "device": str(device),
              "weights": checkpoint or f"random ({config})", "quality_measured": batch is not None}  # fmt: skip

    def sample(sampler: str, steps: int | str, batched: bool = True, precision: str = "32-true") -> torch.Tensor:
        return stage.sample(conditioning, sampler=sampler, steps=steps, cfg_scale=cfg_scale, cfg_batched=batched,
                            progress=False, generator=torch.Generator(device).manual_seed(0),
                            precision=precision)  # fmt: skip

    runs = (("ddim", "ddim", ddim_steps, "32-true"), ("ddpm", "ddpm", ddpm_steps, "32-true"),
            ("ddim_bf16", "ddim", ddim_steps, "bf16-mixed"))  # fmt: skip
    for name, sampler, steps, precision in runs:
        images, seconds = _timed(lambda: sample(sampler, steps, precision=precision), device)  # noqa: B023 (called at once)
        result[f"{name}_steps"] = stage.schedule.num_steps if steps == "all" else int(steps)
        result[f"{name}_s_per_image"] = seconds / n
        if batch is not None:
            result[f"{name}_colour_error_ratio"] = reconstruction_colour_report(batch["image"], images.cpu())["ratio"]
    result["ratio"] = result["ddpm_s_per_image"] / result["ddim_s_per_image"]
    result["bf16_speedup"] = result["ddim_s_per_image"] / result["ddim_bf16_s_per_image"]
    _, separate = _timed(lambda: sample("ddim", ddim_steps, batched=False), device)
    result["cfg_two_forwards_s_per_image"] = separate / n
    result["cfg_batched_speedup"] = result["cfg_two_forwards_s_per_image"] / result["ddim_s_per_image"]
    return result

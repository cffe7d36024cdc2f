"""Sampling time per image: DDIM with few steps vs ancestral DDPM over every training step.

Both samplers run side by side in one process on the same decoder, the same embeddings and the
same guidance settings (classifier-free guidance in one batched forward, dynamic thresholding),
so their ratio is the speed-up of respacing. The decoder is a checkpoint, or, when none is given,
the U-Net of a stage config with random weights (timing does not depend on the weights).
"""

from __future__ import annotations

import time

import torch
import yaml

from ..nn.unet import ConditionalUNet
from ..stages.decoder import DecoderStage


def decoder_for_bench(checkpoint: str | None, config: str = "stages/decoder.yaml") -> DecoderStage:
    """The decoder of ``checkpoint``, or a randomly initialised one with ``config``'s U-Net."""
    if checkpoint:
        return DecoderStage.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=False)
    with open(config) as stream:
        net_args = yaml.safe_load(stream)["model"]["init_args"]["net"]["init_args"]
    stage = DecoderStage(ConditionalUNet(**net_args))
    stage.stats_loaded = True
    return stage


def bench_sampling(
    checkpoint: str | None = None, n: int = 4, ddim_steps: int = 50, ddpm_steps: str = "all", cfg_scale: float = 3.0
) -> dict:
    """Seconds per image of DDIM-``ddim_steps`` and DDPM-``ddpm_steps`` for ``n`` images, and their ratio."""
    stage = decoder_for_bench(checkpoint).eval()
    embeddings = torch.randn(n, stage.net.cond_dim) * stage.std_img + stage.mean_img
    result = {"n": n, "image_size": stage.net.image_size, "threads": torch.get_num_threads()}
    for name, sampler, steps in (("ddim", "ddim", ddim_steps), ("ddpm", "ddpm", ddpm_steps)):
        start = time.perf_counter()
        stage.sample(embeddings, sampler=sampler, steps=steps, cfg_scale=cfg_scale, progress=False,
                     generator=torch.Generator().manual_seed(0))  # fmt: skip
        result[f"{name}_steps"] = stage.schedule.num_steps if steps == "all" else int(steps)
        result[f"{name}_s_per_image"] = (time.perf_counter() - start) / n
    result["ratio"] = result["ddpm_s_per_image"] / result["ddim_s_per_image"]
    return result

"""Latent vs pixel decoder: the training step at equal batch, side by side (issue 37's >= 3x target).

Both decoders are their stage configs' U-Nets with random weights (``stages/decoder.yaml``: 64px pixels in
2 x 2 patches; ``stages/decoder_latent.yaml``: the autoencoder's latents, shape recorded in the result),
trained by the same bare loop (:func:`t2i_lightning.bench.training.bare_loop_seconds`: loss, backward,
clipping, AdamW, EMA) on in-memory batches of the same size, alternated so that the machine's state is shared. The latents are
precomputed (``make encode-latents``), so the autoencoder costs nothing per step; both decode nothing.
"""

from __future__ import annotations

import torch

from ..nn.unet import ConditionalUNet
from ..stages.conditioning import ImageEmbedding
from ..stages.diffusion import DiffusionStage
from ..stages.latent_space import LatentSpace
from .sampling import decoder_for_bench
from .stage_config import stage_config_section, trainer_setting
from .training import bare_loop_seconds, random_batches


def latent_decoder_for_bench(config: str = "stages/decoder_latent.yaml") -> DiffusionStage:
    """A randomly initialised latent decoder with ``config``'s U-Net (a unit scale factor: the step's cost
    does not depend on it)."""
    net_args = stage_config_section(config, "model", "init_args", "net", "init_args")
    stage = DiffusionStage(ConditionalUNet(**net_args), ImageEmbedding(), space=LatentSpace())
    stage.conditioning.stats_loaded = True
    return stage


def latent_batches(stage: DiffusionStage, count: int, batch_size: int, seed: int = 0) -> list[dict]:
    """``count`` batches of random standard-normal latents (the network's input shape) and embeddings."""
    generator = torch.Generator().manual_seed(seed)
    net = stage.net
    return [
        {**batch, "latent": torch.randn(batch_size, net.in_channels, net.image_size, net.image_size, generator=generator)}
        for batch in random_batches(stage, count, batch_size, seed)
    ]


def bench_latent_step(
    steps: int = 30, warmup: int = 5, batch_size: int | None = None, pixel_config: str = "stages/decoder.yaml",
    latent_config: str = "stages/decoder_latent.yaml", rounds: int = 2,
) -> dict:  # fmt: skip
    """Images per second of a training step of each decoder (float32 and bf16 autocast), ``rounds`` times
    alternated, best of each; ``batch_size`` defaults to the pixel config's."""
    batch_size = batch_size or stage_config_section(pixel_config, "data", "init_args", "batch_size")
    clip = trainer_setting(pixel_config, "gradient_clip_val")
    pixel, latent = decoder_for_bench(None, pixel_config), latent_decoder_for_bench(latent_config)
    pixel_batches, latent_data = random_batches(pixel, steps, batch_size), latent_batches(latent, steps, batch_size)
    timed = (steps - warmup) * batch_size
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, stage, batches in (("pixel", pixel, pixel_batches), ("latent", latent, latent_data)):
            for bf16 in (False, True):
                key = f"{name}{'_bf16' if bf16 else ''}"
                rate = timed / bare_loop_seconds(stage, batches, warmup, clip, bf16=bf16)
                best[key] = max(best.get(key, 0.0), rate)
    return {
        "batch_size": batch_size, "steps": steps,
        **{f"{key}_img_per_s": value for key, value in best.items()},
        "speedup": best["latent"] / best["pixel"], "bf16_speedup": best["latent_bf16"] / best["pixel_bf16"],
        "pixel_config": pixel_config, "latent_config": latent_config,
        "latent_shape": [latent.net.in_channels, latent.net.image_size, latent.net.image_size],
    }  # fmt: skip

"""The upsampler against bicubic on whole validation images: PSNR, SSIM, edge sharpness, seconds per image.

``t2i evaluate-upsampler`` (``make evaluate-upsampler``): the first ``n`` validation images at the
high resolution are the ground truth; their downsampled versions (the training operator,
:func:`t2i_lightning.data.superres.downsample`) go through bicubic upsampling and through the
upsampler at each requested noise-augmentation level and step count, with the same seed. The rows
are printed as a table and written as JSON (atomically).
"""

from __future__ import annotations

import os
import time

import torch

from ..data.superres import SuperResDataModule
from ..metrics.superres import superres_scores
from ..nn.sr_unet import upsample_bicubic
from ..stages.diffusion import DiffusionStage


def _timed(upsample, *args, **kwargs) -> tuple[torch.Tensor, float]:
    """``upsample(*args, **kwargs)`` on the CPU, and the seconds it took."""
    start = time.perf_counter()
    out = upsample(*args, **kwargs).cpu()
    return out, time.perf_counter() - start


def upsampler_report(
    upsampler: DiffusionStage,
    data: str,
    n: int = 32,
    aug_levels: list[float] | None = None,
    steps: list[int] | None = None,
    sampler: str | None = None,
    seed: int = 0,
    precision: str = "32-true",
) -> dict:
    """Scores of bicubic and of the upsampler (one row per augmentation level and step count), its U-Net
    sampling at ``precision`` ("32-true" or "bf16-mixed")."""
    hp, conditioning = upsampler.hparams, upsampler.conditioning
    factor, stats = upsampler.net.factor, conditioning.stats_path
    datamodule = SuperResDataModule(
        train=None, val=data, image_size=upsampler.net.image_size, factor=factor, crop=None, num_workers=0,
        embeddings=os.path.dirname(stats) if upsampler.conditions_on_embedding and stats else None,
    )  # fmt: skip
    refs = datamodule.reference_pairs(n)
    truth, low_res, embeddings = refs["image"], refs["low_res"], refs.get("img_emb")
    count = len(truth)
    bicubic, seconds = _timed(upsample_bicubic, low_res, factor)
    table = [{"method": "bicubic", **superres_scores(truth, bicubic), "s_per_image": seconds / count}]
    sampler = sampler or hp.sampler
    for level in aug_levels or [conditioning.aug_level]:
        for step_count in steps or [int(hp.steps)]:
            generator = torch.Generator(device=upsampler.device).manual_seed(seed)
            out, seconds = _timed(  # the stage draws in batches of equal pixels
                upsampler.sample, low_res, image_embeddings=embeddings, aug_level=level, sampler=sampler,
                steps=step_count, generator=generator, progress=False, precision=precision,
            )  # fmt: skip
            table.append({"method": "upsampler", "aug_level": level, "sampler": sampler, "steps": step_count,
                          **superres_scores(truth, out), "s_per_image": seconds / count})  # fmt: skip
    return {"images": count, "size": list(truth.shape[-2:]), "factor": factor, "data": data,
            "threads": torch.get_num_threads(), "precision": precision, "rows": table}  # fmt: skip


def format_report(report: dict) -> str:
    """The rows as a text table."""
    lines = [
        f"{report['images']} validation images of {report['size'][0]}x{report['size'][1]} from {report['data']} "
        f"(x{report['factor']}, {report['threads']} torch threads, U-Net {report.get('precision', '32-true')})",
        f"{'method':<10} {'aug':>5} {'sampler':>7} {'steps':>5} {'PSNR dB':>8} {'SSIM':>6} {'sharpness':>9} {'s/image':>8}",
    ]
    for row in report["rows"]:
        lines.append(
            f"{row['method']:<10} {row.get('aug_level', ''):>5} {row.get('sampler', ''):>7} {row.get('steps', ''):>5} "
            f"{row['psnr']:>8.2f} {row['ssim']:>6.3f} {row['sharpness']:>9.3f} {row['s_per_image']:>8.3f}"
        )
    return "\n".join(lines)

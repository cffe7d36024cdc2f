"""What a :class:`~t2i_lightning.stages.diffusion.DiffusionStage`'s network is conditioned on.

A conditioning is an ``nn.Module`` injected into the stage (its ``conditioning`` argument, a class path
in the stage config): it turns what ``sample`` is given and what a training batch holds into the
network's ``cond``, supplies the null condition that classifier-free guidance (Ho & Salimans 2021)
trains by dropping the condition with probability ``drop_prob``, and keeps whatever it needs (the
embedding statistics, the learned null vectors, a frozen text encoder) in its own state. The stage
does the diffusion; the decoder, the text decoder and the upsampler differ only by their network,
their conditioning and their configs:

- :class:`ImageEmbedding` (this file): the standardised CLIP image embedding (unCLIP-lite's decoder);
- :class:`~t2i_lightning.stages.text_tokens.TextTokens`: a frozen text encoder's token sequence (Imagen-like);
- :class:`~t2i_lightning.stages.low_res_image.LowResImage`: a noise-augmented low-resolution image,
  optionally with the residual over its upsampling as the diffused target (the upsampler);
- none (``conditioning: null``): an unconditional diffusion model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..registry import make_command
from .embedding_stats import EmbeddingStatsMixin

NULL_CONDITIONS = ("learned", "zeros")


class Conditioning(nn.Module):
    """The interface the stage calls. ``drop_prob`` > 0 (or ``guided``) means classifier-free guidance:
    the subclass then implements :meth:`null`. Hooks a subclass may leave alone: :meth:`target` (the
    images themselves), :meth:`offset` (none), :meth:`output_size` (the network's), the checkpoint hooks."""

    guided = True
    """Whether the condition has a null counterpart: dropped in training, guided when sampling."""
    takes_text = False
    """True when ``sample`` takes captions (no translator in front)."""
    takes_embedding = False
    """True when the network reads CLIP image embeddings (``sample`` needs them)."""
    max_batch_pixels: int | None = None
    """Output pixels per forward pass when sampling (None: all images at once)."""

    def __init__(self, drop_prob: float = 0.0, null_cond: str = "learned"):
        super().__init__()
        if null_cond not in NULL_CONDITIONS:
            raise ValueError(f"null_cond must be one of {NULL_CONDITIONS}, got {null_cond!r}")
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
        self.drop_prob, self.null_cond = drop_prob, null_cond
        self.clip_identity: dict[str, Any] = {}
        """The CLIP whose embeddings the condition reads ({} when none)."""

    def bind(self, net: nn.Module) -> None:
        """Check that ``net`` takes this condition and create what depends on its sizes (the stage calls it once)."""

    def register_null(self, name: str, value: torch.Tensor) -> None:
        """A null-condition tensor: trained (a parameter) when ``null_cond`` is "learned", else a fixed buffer."""
        if self.null_cond == "learned":
            self.register_parameter(name, nn.Parameter(value))
        else:
            self.register_buffer(name, value)

    def encode(self, inputs: Any, *, device: torch.device, generator: torch.Generator | None = None, **options) -> Any:
        """What ``sample`` is given -> the network's condition on ``device``."""
        raise NotImplementedError

    def from_batch(self, batch: dict[str, Any], device: torch.device) -> Any:
        """The condition of a training batch."""
        raise NotImplementedError

    def null(self, n: int) -> Any:
        """The condition that stands for "no condition" (classifier-free guidance's unconditional model)."""
        raise NotImplementedError(f"{type(self).__name__} has no null condition")

    def drop(self, cond: Any, drop: torch.Tensor) -> Any:
        """``cond`` with the rows where ``drop`` is True replaced by the null condition (key by key for a dict)."""
        if not self.guided:
            return cond
        null = self.null(len(drop))
        if isinstance(cond, dict):
            return {key: _where_rows(drop, null[key], value) for key, value in cond.items()}
        return _where_rows(drop, null, cond)

    def target(self, batch: dict[str, Any], cond: Any, net: nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """What the diffusion process runs on (the batch's images) and per-sample losses of any other
        trained part of the conditioning (none)."""
        return batch["image"], {}

    def offset(self, inputs: Any, cond: Any, net: nn.Module) -> tuple[torch.Tensor | None, float]:
        """When the process runs on scale·(image − offset) (a residual), the offset and the scale; (None, 1) otherwise."""
        return None, 1.0

    def output_size(self, inputs: Any, net: nn.Module) -> tuple[int, int] | None:
        """The output's height and width for ``inputs``, or None for the network's image size."""
        return None

    def on_fit_start(self) -> None:
        """Refuse to train without what the condition needs (e.g. the embeddings' statistics)."""

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        pass

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        pass


def _where_rows(drop: torch.Tensor, null: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return torch.where(drop.reshape(-1, *[1] * (value.ndim - 1)), null.to(value.dtype), value)


class ImageEmbedding(EmbeddingStatsMixin, Conditioning):
    """The CLIP image embedding, standardised by the embedding directory's statistics (unCLIP-lite's decoder).

    Args:
    stats: ``stats.json`` of the embedding directory; its image-side mean/std standardise the condition
        and are kept as buffers, so the checkpoint alone needs no side files.
    drop_prob: probability of replacing the condition by the null one in training (the study: 0.2).
    null_cond: "learned" (a trained vector, the default) or "zeros".
    """

    takes_embedding = True

    def __init__(self, stats: str | None = None, drop_prob: float = 0.2, null_cond: str = "learned"):
        super().__init__(drop_prob, null_cond)
        self.stats_path = stats
        self.dim = 0

    def bind(self, net: nn.Module) -> None:
        self.dim = net.cond_dim
        if not self.dim:
            raise ValueError("ImageEmbedding needs a network that takes an embedding (cond_dim > 0)")
        self.register_null("null_embedding", torch.zeros(self.dim))
        self.init_embedding_stats(self.stats_path, {"img": self.dim})

    def load_stats(self, stats: dict) -> None:
        if stats["dim"] != self.dim:
            raise ValueError(
                f"Embeddings have dim {stats['dim']} but the U-Net takes cond_dim {self.dim}: pass "
                f"--model.init_args.net.init_args.cond_dim {stats['dim']} ({make_command('decoder')} reads it from stats.json)"
            )
        self.copy_stats(stats, ("img",))

    def encode(self, inputs: torch.Tensor, *, device: torch.device, generator=None, **options) -> torch.Tensor:
        """Raw CLIP image embeddings (true or translated), B x dim -> standardised."""
        return (inputs.to(device).float() - self.mean_img) / self.std_img

    def from_batch(self, batch: dict[str, Any], device: torch.device) -> torch.Tensor:
        """A training batch's images' own CLIP image embeddings."""
        return self.encode(batch["img_emb"], device=device)

    def null(self, n: int) -> torch.Tensor:
        return self.null_embedding.expand(n, -1)

    def target(self, batch: dict[str, Any], cond: torch.Tensor, net: nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The images, and with a U-Net that has a layout head (``layout_size`` g) its per-sample MSE to
        the images' g x g area averages (read from the embedding)."""
        image = batch["image"]
        size = getattr(net, "layout_size", 0)
        if not size:
            return image, {}
        error = net.layout(cond).float() - nn.functional.adaptive_avg_pool2d(image.float(), size)
        return image, {"layout": error.pow(2).mean(dim=(1, 2, 3))}


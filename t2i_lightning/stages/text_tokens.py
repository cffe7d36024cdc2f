"""Text-token conditioning: the Imagen-like option of the 64px decoder.

The condition is a frozen text encoder's token sequence (Saharia et al. 2022, "Imagen", sec. 2.1 and
2.5): the U-Net (:class:`~t2i_lightning.nn.text_unet.TextConditionalUNet`) cross-attends to the tokens
under their mask and adds the pooled embedding to the timestep embedding. Batches are plain image +
caption batches (:class:`~t2i_lightning.data.datamodule.ShardDataModule`); there are no embedding
statistics. For classifier-free guidance (Ho & Salimans 2021; Imagen sec. 2.2) the null condition is
a learned token at position 0 (mask True there only) and a learned pooled vector, as long as a real
condition so both stack in one batch.

The text encoder is a frozen helper (docs/design.md, "Principles"): it is kept outside the module
tree, so neither the checkpoint's ``state_dict`` nor the EMA copy holds it; the stage's
hyperparameters record how to rebuild it (its ``class_path``/``init_args``), and the checkpoint
records which weights it had, so a checkpoint refuses another encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..nn.text_encoder import TextEncoder
from .conditioning import Conditioning


class FrozenHelper:
    """Holds a frozen module outside ``nn.Module`` registration: not in ``state_dict``, not moved by
    ``.to()``, not put in train mode; a deep copy (e.g. the EMA model) shares it instead of copying it."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __deepcopy__(self, memo: dict) -> FrozenHelper:
        return self


class TextTokens(Conditioning):
    """Args:
    text_encoder: a frozen :class:`~t2i_lightning.nn.text_encoder.TextEncoder` (``OpenClipTextTokens``,
        ``T5TokenEncoder``), or its ``{"class_path", "init_args"}``; its ``token_dim``/``pooled_dim``
        must match the U-Net's.
    drop_prob, null_cond: classifier-free guidance dropout (0.2) and the null condition ("learned" or "zeros").
    """

    takes_text = True

    def __init__(self, text_encoder: TextEncoder | dict, drop_prob: float = 0.2, null_cond: str = "learned"):
        super().__init__(drop_prob, null_cond)
        encoder = TextEncoder.from_config(text_encoder) if isinstance(text_encoder, dict) else text_encoder
        self.frozen = FrozenHelper(encoder)
        self.encoder_config = encoder.class_config()
        self.text_encoder_identity = encoder.identity()

    @property
    def text_encoder(self) -> TextEncoder:
        return self.frozen.module

    def bind(self, net: nn.Module) -> None:
        encoder = self.text_encoder
        if (encoder.token_dim, encoder.pooled_dim) != (getattr(net, "token_dim", None), getattr(net, "pooled_dim", None)):
            raise ValueError(
                f"The text encoder gives tokens of width {encoder.token_dim} and a pooled vector of "
                f"{encoder.pooled_dim}, but the U-Net takes token_dim {getattr(net, 'token_dim', None)} and "
                f"pooled_dim {getattr(net, 'pooled_dim', None)}: pass --model.init_args.net.init_args.token_dim "
                f"{encoder.token_dim} --model.init_args.net.init_args.pooled_dim {encoder.pooled_dim}"
            )
        self.register_null("null_token", torch.zeros(net.token_dim))
        self.register_null("null_pooled", torch.zeros(net.pooled_dim))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["text_encoder_identity"] = self.text_encoder_identity

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuse a text encoder whose weights are not the ones the decoder was trained with."""
        recorded = checkpoint.get("text_encoder_identity") or {}
        changed = [k for k, v in recorded.items() if v and v != self.text_encoder_identity.get(k)]
        if changed:
            raise ValueError(
                f"The text encoder rebuilt from this checkpoint ({self.encoder_config}) is not the one the "
                f"decoder was trained with ({', '.join(changed)} differ): pass the matching weights"
            )

    def encode(self, inputs: Sequence[str], *, device: torch.device, generator=None, **options) -> dict[str, torch.Tensor]:
        """Captions -> the text encoder's ``{"tokens", "mask", "pooled"}`` on ``device``."""
        encoder = self.text_encoder.to(device)
        return {key: value.to(device) for key, value in encoder(list(inputs)).items()}

    def from_batch(self, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        """The encoded captions of a training batch; an empty caption gets the null condition."""
        captions = list(batch["caption"])
        real = [i for i, caption in enumerate(captions) if caption.strip()]
        if len(real) == len(captions):
            return self.encode(captions, device=device)
        cond = {key: value.clone() for key, value in self.null(len(captions)).items()}
        if real:
            encoded = self.encode([captions[i] for i in real], device=device)
            for key in cond:
                cond[key][real] = encoded[key].to(cond[key].dtype)
        return cond

    def null(self, n: int) -> dict[str, torch.Tensor]:
        """The null token at position 0 (the only unmasked one) and the null pooled vector."""
        length, dim = self.text_encoder.max_length, self.null_token.shape[0]
        first = self.null_token.expand(n, 1, dim)
        tokens = torch.cat([first, first.new_zeros(n, length - 1, dim)], dim=1)
        mask = torch.zeros(n, length, dtype=torch.bool, device=tokens.device)
        mask[:, 0] = True
        return {"tokens": tokens, "mask": mask, "pooled": self.null_pooled.expand(n, -1)}

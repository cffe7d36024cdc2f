"""The noise-conditioned captioner p(caption | x_σ, σ) of the captioner-guided score model.

An image encoder reads the noisy image x_σ = x + σz, with σ given through a Gaussian Fourier
projection of log σ (Tancik et al. 2020; the noise embedding of NCSN++, Song et al. 2021) that
shifts and scales every residual block (diffusers' ``ResnetBlock2D`` with ``scale_shift``), and
turns it into a grid of feature tokens. A GPT-2 decoder (transformers, randomly initialised, with
``add_cross_attention``; Radford et al. 2019) reads the caption's open_clip BPE tokens and
cross-attends to the image tokens (over the shapes grammar's tokens by default, see
:class:`CaptionVocabulary`). log p(caption | x_σ, σ) is the sum of the teacher-forced
log-probabilities of the caption's tokens after the start token, the end token included: the
quantity whose gradient with respect to x_σ guides the score model (the study's Bayes rule).
"""

from __future__ import annotations

from collections.abc import Sequence

import open_clip
import torch
import torch.nn.functional as F
from diffusers.models.embeddings import GaussianFourierProjection
from diffusers.models.resnet import Downsample2D, ResnetBlock2D
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

SIGMA_FLOOR = 1e-3  # σ = 0 (clean images) is embedded as this level, below any trained σ > 0
VOCABULARIES = ("shapes", "full")
UNKNOWN = "<unk>"


class CaptionVocabulary:
    """open_clip's BPE tokens, mapped onto the captioner's output vocabulary.

    "full" keeps all of open_clip's 49,408 BPE tokens (real data). "shapes" keeps only the tokens of
    the shapes caption grammar's words (:func:`t2i_lightning.data.shapes.captions.grammar_words`), the
    start and end tokens and one unknown token: the same tokenizer, an output layer of ~80 classes
    instead of 49,408 (a softmax over tokens the data never contains costs most of the compute).
    """

    def __init__(self, name: str, max_length: int):
        if name not in VOCABULARIES:
            raise ValueError(f"Unknown captioner vocabulary {name!r}; use one of {', '.join(VOCABULARIES)}")
        self.bpe = open_clip.tokenizer.SimpleTokenizer(context_length=max_length)
        size = len(self.bpe.encoder)
        if name == "full":
            self.ids = torch.arange(size)
        else:
            from ..data.shapes.captions import grammar_words

            words = {i for word in grammar_words() for i in self.bpe.encode(word)}
            self.ids = torch.tensor(sorted(words | {self.bpe.sot_token_id, self.bpe.eot_token_id}))
        self.unknown = len(self.ids) if name != "full" else None
        self.index = torch.full((size,), self.unknown if self.unknown is not None else 0, dtype=torch.long)
        self.index[self.ids] = torch.arange(len(self.ids))
        self.sot, self.eot = int(self.index[self.bpe.sot_token_id]), int(self.index[self.bpe.eot_token_id])

    def __len__(self) -> int:
        return len(self.ids) + (self.unknown is not None)

    def encode(self, captions: list[str]) -> torch.Tensor:
        """Captions -> B x max_length vocabulary indices (start, tokens, end, then padding)."""
        return self.index[self.bpe(captions)]

    def unknown_words(self, captions: list[str]) -> list[str]:
        """Words of ``captions`` with BPE tokens outside this vocabulary."""
        if self.unknown is None:
            return []
        return sorted({w for c in captions for w in c.lower().replace(",", " ").split()
                       if any(self.index[i] == self.unknown for i in self.bpe.encode(w))})  # fmt: skip

    def decode(self, indices: list[int]) -> str:
        """Vocabulary indices (no start or end token) -> text."""
        words = [UNKNOWN if i == self.unknown else self.bpe.decode([int(self.ids[i])]) for i in indices]
        return " ".join("".join(words).replace(" ,", ",").replace(" .", ".").split())


class NoisyImageEncoder(nn.Module):
    """x_σ (B x 3 x S x S in [-1, 1] plus noise) and σ [B] -> image tokens B x (S/2^(levels-1))² x width."""

    def __init__(self, image_size: int, channels: tuple[int, ...], width: int, groups: int):
        super().__init__()
        emb = 4 * channels[0]
        self.noise_proj = GaussianFourierProjection(channels[0] // 2, scale=1.0, log=False)
        self.noise_mlp = nn.Sequential(nn.Linear(channels[0], emb), nn.SiLU(), nn.Linear(emb, emb))
        self.stem = nn.Conv2d(3, channels[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        self.downs = nn.ModuleList()
        previous = channels[0]
        for i, c in enumerate(channels):
            self.blocks.append(ResnetBlock2D(in_channels=previous, out_channels=c, temb_channels=emb, groups=groups,
                                             time_embedding_norm="scale_shift"))  # fmt: skip
            self.downs.append(Downsample2D(c, use_conv=True) if i < len(channels) - 1 else nn.Identity())
            previous = c
        side = image_size // 2 ** (len(channels) - 1)
        self.norm = nn.GroupNorm(groups, previous)
        self.to_tokens = nn.Linear(previous, width)
        self.position = nn.Parameter(torch.zeros(side * side, width))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        level = torch.log(sigma.to(x.dtype).clamp(min=SIGMA_FLOOR))
        emb = self.noise_mlp(self.noise_proj(level))
        h = self.stem(x)
        for block, down in zip(self.blocks, self.downs, strict=True):
            h = down(block(h, emb))
        h = F.silu(self.norm(h)).flatten(2).transpose(1, 2)  # B x tokens x channels
        if h.shape[1] != self.position.shape[0]:
            raise ValueError(f"The captioner reads {self.position.shape[0]} image tokens, got {h.shape[1]}: wrong image size")
        return self.to_tokens(h) + self.position


class NoisyCaptioner(nn.Module):
    """``net(images, sigma, token_ids) -> logits`` (B x L x vocab) and the caption log-likelihood.

    Args:
        image_size: side of the images it reads (the score model's, 32 by default).
        channels: channels of the encoder's levels (each later level halves the resolution).
        width, layers, heads: the GPT-2 decoder's embedding width, blocks and attention heads.
        max_length: tokens per caption (open_clip's tokenizer pads or truncates to it, start and
            end tokens included).
        groups: GroupNorm groups of the encoder.
        vocabulary: "shapes" (the shapes grammar's BPE tokens) or "full" (all of open_clip's), see
            :class:`CaptionVocabulary`.
    """

    def __init__(
        self,
        image_size: int = 32,
        channels: tuple[int, ...] = (32, 64, 64),
        width: int = 128,
        layers: int = 2,
        heads: int = 4,
        max_length: int = 32,
        groups: int = 16,
        vocabulary: str = "shapes",
    ):
        super().__init__()
        self.image_size, self.max_length = image_size, max_length
        self.vocab = CaptionVocabulary(vocabulary, max_length)
        self.encoder = NoisyImageEncoder(image_size, tuple(channels), width, groups)
        config = GPT2Config(
            vocab_size=len(self.vocab), n_positions=max_length, n_embd=width, n_layer=layers, n_head=heads,
            add_cross_attention=True, bos_token_id=self.vocab.sot, eos_token_id=self.vocab.eot,
        )  # fmt: skip
        self.decoder = GPT2LMHeadModel(config)

    # --- tokens ---------------------------------------------------------------------------------

    def tokenize(self, captions: Sequence[str]) -> torch.Tensor:
        """Token ids B x max_length: start, the caption's tokens, end, padding (truncated to fit)."""
        if isinstance(captions, str) or not captions or not all(c.strip() for c in captions):
            raise ValueError("Give a non-empty list of non-empty captions")
        return self.vocab.encode(list(captions))

    def target_mask(self, token_ids: torch.Tensor) -> torch.Tensor:
        """True at the positions predicted by teacher forcing: every token after the start, up to and including the end."""
        eot = (token_ids == self.vocab.eot).int().argmax(dim=1, keepdim=True)
        positions = torch.arange(token_ids.shape[1], device=token_ids.device)[None]
        return (positions >= 1) & (positions <= eot)

    def decode_tokens(self, token_ids: torch.Tensor) -> list[str]:
        """Token ids -> captions, cut at the end token."""
        captions = []
        for row in token_ids.tolist():
            words = row[1:]
            captions.append(self.vocab.decode(words[: words.index(self.vocab.eot)] if self.vocab.eot in words else words))
        return captions

    # --- model ----------------------------------------------------------------------------------

    def forward(self, images: torch.Tensor, sigma: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, device=images.device).reshape(-1).expand(images.shape[0])
        image_tokens = self.encoder(images, sigma)
        return self.decoder(input_ids=token_ids.to(images.device), encoder_hidden_states=image_tokens).logits

    def token_log_probs(self, images: torch.Tensor, sigma: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """log p(token_k | tokens_<k, x_σ, σ) at every position k ≥ 1 (B x (L - 1)), teacher-forced."""
        token_ids = token_ids.to(images.device)
        logits = self(images, sigma, token_ids)[:, :-1].float()
        return torch.log_softmax(logits, dim=-1).gather(-1, token_ids[:, 1:, None])[..., 0]

    def log_likelihood(self, images: torch.Tensor, sigma: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """log p(caption | x_σ, σ) per image [B]: the sum of the caption's token log-probabilities."""
        mask = self.target_mask(token_ids.to(images.device))[:, 1:]
        return (self.token_log_probs(images, sigma, token_ids) * mask).sum(dim=1)

    @torch.no_grad()
    def greedy(self, images: torch.Tensor, sigma: torch.Tensor) -> list[str]:
        """The most likely token at each step from the start token until the end token (or max_length)."""
        sigma = torch.as_tensor(sigma, device=images.device).reshape(-1).expand(images.shape[0])
        image_tokens = self.encoder(images, sigma)
        ids = torch.full((images.shape[0], 1), self.vocab.sot, device=images.device)
        done = torch.zeros(images.shape[0], dtype=torch.bool, device=images.device)
        for _ in range(self.max_length - 1):
            logits = self.decoder(input_ids=ids, encoder_hidden_states=image_tokens).logits[:, -1]
            step = torch.where(done, self.vocab.eot, logits.argmax(dim=-1))
            ids = torch.cat([ids, step[:, None]], dim=1)
            done |= step == self.vocab.eot
            if bool(done.all()):
                break
        return self.decode_tokens(ids)

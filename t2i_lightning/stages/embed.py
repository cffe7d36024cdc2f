"""Embedding extraction stage (``t2i predict --config stages/embed.yaml``, ``make embed``).

A frozen CLIP encodes every image (with CLIP's own preprocessing) and its ``.txt`` caption;
:class:`~t2i_lightning.data.mirror_writer.MirrorShardWriter` writes the results as
embedding shards that mirror the image shards. Lightning's predict loop splits the shards
across ranks (``devices=N``, several nodes), and each shard is written by the one rank that read it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from ..data.embeddings import IMAGE_MEMBER, TEXT_MEMBER, Moments
from ..data.mirror_writer import MirrorExtraction, MirrorShardWriter
from ..nn.clip import batched_preprocess_for, clip_id, create_clip, file_digest, tokenizer_for
from ..registry import DEMO_CLIP, default_checkpoint, make_command

DEFAULT_CLIP_CHECKPOINT = default_checkpoint("clip")


class EmbedStage(MirrorExtraction, pl.LightningModule):
    """CLIP image and text embeddings of image shards.

    Args:
        model_name: open_clip model name (``shapes-cnn-tiny`` for the project's CLIP).
        pretrained: the CLIP stage's checkpoint (default: the CLIP stage's ``last.ckpt`` under ``runs/``,
            made by ``make clip``), an open_clip weights file, or an open_clip pretrained tag.
        out: output directory; default ``<dataset>/emb-<clip id>`` beside the image shards.
        clip_name: the ``<clip id>`` of the default output directory; default the model name
            for a project checkpoint, ``<model>-<tag>`` for a tag, ``<model>-<file hash>`` for
            a weights file.
        replace_other_clip: when ``out`` holds embeddings of another CLIP, delete them and
            extract anew (default: refuse). Embeddings of the same CLIP are always resumed.
    """

    def __init__(
        self,
        model_name: str = DEMO_CLIP,
        pretrained: str | None = DEFAULT_CLIP_CHECKPOINT,
        out: str | None = None,
        clip_name: str | None = None,
        replace_other_clip: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters()
        if pretrained is not None and pretrained.endswith(".ckpt") and not os.path.isfile(pretrained):
            raise FileNotFoundError(f"CLIP checkpoint not found: {pretrained} (train one with {make_command('clip')})")
        self.clip = create_clip(model_name, pretrained).eval().requires_grad_(False)
        self.tokenizer = tokenizer_for(model_name)
        self.preprocess = batched_preprocess_for(self.clip)
        is_file = pretrained is not None and os.path.isfile(pretrained)
        self.identity = {
            "model": model_name,
            "pretrained": pretrained,
            "checkpoint_sha256": file_digest(pretrained, 64) if is_file else None,
            "clip_id": clip_name
            or (model_name if is_file and pretrained.endswith(".ckpt") else clip_id(model_name, pretrained)),
        }

    members = {"img": IMAGE_MEMBER, "txt": TEXT_MEMBER}
    what = "embeddings"
    maker = "CLIP"
    replace_option = "model.init_args.replace_other_clip"

    @property
    def replace_other(self) -> bool:
        return self.hparams.replace_other_clip

    def same_maker(self, recorded: dict) -> bool:
        """The same CLIP weights: the same model and, where both record a weights file's hash, the same hash
        wherever the file lies; else the same pretrained tag or path."""
        ours = self.identity
        if recorded.get("model") != ours.get("model"):
            return False
        if recorded.get("checkpoint_sha256") and ours.get("checkpoint_sha256"):
            return recorded["checkpoint_sha256"] == ours["checkpoint_sha256"]
        keys = ("checkpoint_sha256", "pretrained")
        return tuple(recorded.get(k) for k in keys) == tuple(ours.get(k) for k in keys)

    def stats(self, moments: dict[str, Moments]) -> dict:
        (mean_img, std_img), (mean_txt, std_txt) = moments["img"].mean_std(), moments["txt"].mean_std()
        return {"dim": len(mean_img), "mean_img": mean_img, "std_img": std_img, "mean_txt": mean_txt, "std_txt": std_txt}

    def configure_callbacks(self) -> list[pl.Callback]:
        return [MirrorShardWriter()]

    def output_dir(self, dataset_dir: str | os.PathLike) -> Path:
        return (
            Path(self.hparams.out)
            if self.hparams.out
            else Path(dataset_dir) / f"emb-{self.identity['clip_id']}"
        )

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "image_transform"):
            datamodule.image_transform = self.preprocess.image

    @torch.no_grad()
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        if not batch["key"]:
            return {"key": [], "img": None, "txt": None}
        images = self.clip.encode_image(self.preprocess.batch(batch["image"]))
        texts = self.clip.encode_text(self.tokenizer(batch["caption"]).to(self.device))
        return {"key": batch["key"], "img": images.float().cpu(), "txt": texts.float().cpu()}

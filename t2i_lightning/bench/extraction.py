"""Embedding extraction vs. a bare ``encode_image``/``encode_text`` loop over the same batches.

The baseline decodes and preprocesses every batch first (untimed) and then times only the two
CLIP calls; the extraction is the real predict loop (loading in workers, normalising, encoding,
writing shards), timed from its first batch to its end. Their ratio is the cost of everything
around the model. On an accelerator the bare loop moves each decoded batch to it inside the
timed loop, as predict does.
"""

from __future__ import annotations

import tempfile
import time

import lightning.pytorch as pl
import torch

from ..data.datamodule import ShardDataModule
from ..data.decode import collate
from ..data.shards import resolve_shards
from ..data.streams import ShardAlignedBatches
from ..stages.embed import EmbedStage
from .clock import synchronize


class _Timer(pl.Callback):
    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if not hasattr(self, "start"):
            self.start = time.perf_counter()

    def on_predict_end(self, trainer, pl_module):
        self.end = time.perf_counter()


def bench_extraction(
    data: str,
    model_name: str,
    pretrained: str | None,
    shards: int = 2,
    batch_size: int = 256,
    num_workers: int = 1,
    device: torch.device | str = "cpu",
) -> dict:
    """Images/s of extraction and of the bare loop on the first ``shards`` shards of ``data``, on ``device``."""
    device = torch.device(device)
    urls = resolve_shards(data)[:shards]
    stage = EmbedStage(model_name, pretrained).to(device)
    decode = ShardDataModule(train=None, val=None)
    decode.image_transform = stage.preprocess.image
    batches = [
        {**b, "image": stage.preprocess.batch(b["image"])}
        for b in ShardAlignedBatches(urls, lambda s: decode.decode(s, False), collate, batch_size)
        if b["key"]
    ]
    images = sum(len(b["key"]) for b in batches)

    def bare_loop() -> float:
        synchronize(device)
        start = time.perf_counter()
        with torch.no_grad():
            for batch in batches:
                stage.clip.encode_image(batch["image"].to(device))
                stage.clip.encode_text(stage.tokenizer(batch["caption"]).to(device))
        synchronize(device)
        return time.perf_counter() - start

    bare = bare_loop()
    with tempfile.TemporaryDirectory() as out:
        stage.hparams.out = out
        timer = _Timer()
        datamodule = ShardDataModule(
            train=None, val=None, predict=urls, batch_size=batch_size, num_workers=num_workers
        )
        trainer = pl.Trainer(
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            callbacks=[timer],
            accelerator=device.type,
            devices=1,
        )
        trainer.predict(stage, datamodule=datamodule, return_predictions=False)
        extraction = timer.end - timer.start
    bare = min(bare, bare_loop())
    return {
        "images": images,
        "extraction_s": extraction,
        "bare_loop_s": bare,
        "extraction_img_per_s": images / extraction,
        "bare_img_per_s": images / bare,
        "ratio": extraction / bare,
        "threads": torch.get_num_threads(),
        "num_workers": num_workers,
        "model": model_name,
        "batch_size": batch_size,
        "device": str(device),
    }

"""Writes shards that mirror image shards (CLIP embeddings, autoencoder latents), resumably and atomically,
and ``stats.json``.

What is written comes from the predict stage (:class:`MirrorExtraction`): the arrays of each batch, the
tar members they go to, the identity of the model that made them, and the statistics it derives. One
extraction at a time writes into an output directory (:mod:`~t2i_lightning.data.writer_lock`): a
second one used to delete the first's temporary files, and the first died with ``[Errno 2]``.

SIGTERM (preemption, ``docker stop``) stops an extraction at the next batch: the shards already
written are whole (a shard is written in one go, between batches), the embeddings of the shards not
finished yet are dropped, ``stats.json`` is not written, and the command exits 143. Running it again
resumes. Lightning's predict loop notes the signal (``trainer.received_sigterm``) but does not stop
on it, so the writer raises the ``SIGTERMException`` that a fit raises.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException
from tqdm.auto import tqdm

from .embeddings import (
    SOURCE_SUFFIX,
    STATS_NAME,
    Moments,
    load_npy,
    npy_bytes,
    shard_fingerprint,
    source_changed,
    source_record,
)
from .shards import check_writable, read_index, remove_stale_temporaries, write_json_atomic, write_shard
from .writer_lock import lock_directory, release_directory

log = logging.getLogger(__name__)
IN_PROGRESS_NAME = ".extracting.json"  # the identity of the model of an unfinished extraction


class MirrorExtraction:
    """What a predict stage tells :class:`MirrorShardWriter` (a mixin of the LightningModule).

    ``members``: prediction key -> tar member (``{"img": "img.npy", "txt": "txt.npy"}``); ``predict_step``
    returns ``{"key": [...], <prediction key>: B x ... float tensor, ...}``. ``identity``: what made the arrays
    (recorded in ``stats.json``; an output directory holding another model's arrays is refused, or
    replaced with ``replace_other``). ``what``: the arrays' name in messages ("embeddings"); ``maker``: the
    model's ("CLIP").
    ``replace_option``: the setting that replaces another model's arrays.
    """

    members: dict[str, str]
    identity: dict
    what: str
    maker: str
    replace_option: str

    def output_dir(self, dataset_dir: str | os.PathLike) -> Path:
        raise NotImplementedError

    @property
    def replace_other(self) -> bool:
        raise NotImplementedError

    def same_maker(self, recorded: dict) -> bool:
        """Whether arrays recorded with identity ``recorded`` were made by this stage's model."""
        return recorded == self.identity

    def stats(self, moments: dict[str, Moments]) -> dict:
        """``stats.json``'s fields from the combined moments of each prediction key (rows flattened)."""
        raise NotImplementedError


class MirrorShardWriter(BasePredictionWriter):
    """Collects a predict stage's per-batch arrays by shard and writes each finished shard.

    Output shard ``<out>/<name>.tar`` mirrors image shard ``<name>.tar``: the same keys in the
    same order, one ``.npy`` member per array (float16). A shard whose output exists
    is complete (atomic rename) and is not read again, so a killed extraction resumes where it
    stopped and ends with the same bytes. Each rank keeps the float64 moments of the shards it
    writes (:class:`~t2i_lightning.data.embeddings.Moments`, over each array's flattened rows); when
    every shard is done, rank 0 gathers them, reads back only the shards an earlier run wrote, and
    combines all in shard order into ``stats.json``.
    """

    def __init__(self) -> None:
        super().__init__(write_interval="batch")
        self.out: Path | None = None
        self.pending: dict[str, dict[str, list]] = {}
        self.sources: list[str] = []
        self.members: dict[str, str] = {}
        self.moments: dict[str, dict[str, Moments]] = {}  # output shard name -> prediction key -> moments
        self.written = self.samples = self.skipped = 0
        self.bar = None

    def output_path(self, source: str) -> Path:
        return self.out / Path(source).name

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        self.sources = list(datamodule.urls["predict"])
        dataset_dir = os.path.commonpath([os.path.dirname(os.path.abspath(u)) for u in self.sources])
        self.out = pl_module.output_dir(dataset_dir)
        self.members = dict(pl_module.members)
        check_writable(self.out, directory=True)
        if trainer.is_global_zero:
            lock_directory(self.out, f"an extraction of {pl_module.what}", "set model.init_args.out to another directory")
            self._check_identity(pl_module)
            remove_stale_temporaries(self.out)
            write_json_atomic(self.out / IN_PROGRESS_NAME, pl_module.identity)
            self._redo_changed_sources(pl_module.what)
        trainer.strategy.barrier()
        done = self._done()
        datamodule.exclude_shards(done)
        if trainer.is_global_zero:
            print(f"{pl_module.what} -> {self.out}: {len(done)} of {len(self.sources)} shards already done")
            self.bar = tqdm(total=len(self.sources), initial=len(done), unit="shard", desc="extract")

    def _done(self) -> set[str]:
        """The source shards whose embedding shard exists."""
        return {u for u in self.sources if self.output_path(u).exists()}

    def _redo_changed_sources(self, what: str) -> None:
        """Remove the output shards whose image shards have changed since they were extracted (a
        re-import in place), so they are extracted again rather than kept as done."""
        changed = [u for u in self.sources if self.output_path(u).exists() and source_changed(self.output_path(u), u)]
        if not changed:
            return
        (self.out / STATS_NAME).unlink(missing_ok=True)  # the directory is incomplete until they are redone
        for source in changed:
            self.output_path(source).unlink()
            source_record(self.output_path(source)).unlink(missing_ok=True)
        print(f"{len(changed)} image shard(s) changed since their {what} were extracted (e.g. "
              f"{Path(changed[0]).name}): extracting them again")  # fmt: skip

    def _check_identity(self, extraction: MirrorExtraction) -> None:
        """Refuse (or, with ``extraction.replace_other``, delete) arrays that another model wrote in ``out``."""
        previous = None
        for name in (STATS_NAME, IN_PROGRESS_NAME):
            if (self.out / name).exists():
                previous = json.loads((self.out / name).read_text())
                break
        if previous is None or extraction.same_maker(previous):
            return
        what = extraction.what
        if not extraction.replace_other:
            raise FileExistsError(
                f"'{self.out}' holds {what} of another {extraction.maker} ({previous.get('model')}, {previous.get('pretrained')}); "
                f"remove it, set model.init_args.out to another directory, or set {extraction.replace_option} true"
            )
        log.warning("replacing %s of another %s in %s", what, extraction.maker, self.out)
        for path in [*self.out.glob("*.tar"), *self.out.glob(f"*.tar{SOURCE_SUFFIX}"), self.out / STATS_NAME,
                     self.out / IN_PROGRESS_NAME]:  # fmt: skip
            path.unlink(missing_ok=True)

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ):
        shard = batch["shard"]
        entry = self.pending.setdefault(shard, {"key": [], "skipped": 0, **{name: [] for name in self.members}})
        entry["skipped"] += int(batch["skipped"])
        if prediction["key"]:
            entry["key"] += prediction["key"]
            for name in self.members:
                entry[name].append(prediction[name].numpy().astype(np.float16))
        if batch["shard_done"]:
            self._write(self.pending.pop(shard), shard)
        self._stop_on_sigterm(trainer)

    def _stop_on_sigterm(self, trainer: pl.Trainer) -> None:
        """Raise ``SIGTERMException`` once the process has received SIGTERM (see the module docstring)."""
        if trainer.received_sigterm:
            raise SIGTERMException

    def _write(self, entry: dict, shard: str) -> None:
        arrays = {
            name: np.concatenate(entry[name]) if entry[name] else np.zeros((0, 0), np.float16) for name in self.members
        }
        samples = (
            {"__key__": key, **{member: npy_bytes(arrays[name][i]) for name, member in self.members.items()}}
            for i, key in enumerate(entry["key"])
        )
        # the source's fingerprint first: a shard on disk without one is from before the records existed
        write_json_atomic(source_record(self.output_path(shard)), {"source": shard, **shard_fingerprint(shard)})
        write_shard(self.output_path(shard), samples)
        self.moments[self.output_path(shard).name] = {name: moments_of(array) for name, array in arrays.items()}
        self.written += 1
        self.samples += len(entry["key"])
        self.skipped += entry["skipped"]
        if entry["skipped"]:
            log.warning("%s: %d sample(s) skipped (see warnings above)", shard, entry["skipped"])
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(samples=self.samples, skipped=self.skipped)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_on_sigterm(trainer)  # before the barrier and the reading back of earlier shards
        trainer.strategy.barrier()
        if self.bar is not None:
            self.bar.close()
        moments = self._gather_moments(trainer)
        error = None
        if trainer.is_global_zero:
            try:
                self._finish(pl_module, moments)
            except Exception as caught:  # raised after the barrier: the other ranks must not wait on it forever
                error = caught
        # the ranks leave together: a rank tearing down its process group while rank 0 still wrote
        # stats.json once killed a two-rank run at exit ("terminate called without an active exception")
        trainer.strategy.barrier()
        if error is not None:
            raise error

    def _finish(self, extraction: MirrorExtraction, moments: dict[str, dict[str, Moments]]) -> None:
        """Check that every shard exists, then write ``stats.json`` (rank 0)."""
        missing = [u for u in self.sources if not self.output_path(u).exists()]
        if missing:
            raise RuntimeError(
                f"{len(missing)} shard(s) were not written, e.g. {missing[0]}; run the command again"
            )
        self.write_stats(extraction, moments)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Release the output directory (at the end of a run in-process, e.g. the extraction benchmark)."""
        if self.out is not None:
            release_directory(self.out)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """Say how far a SIGTERM-stopped extraction got, and release the output directory."""
        if self.bar is not None:
            self.bar.close()
        if isinstance(exception, SIGTERMException) and self.out is not None:
            rank_zero_info(
                f"SIGTERM: extraction stopped with {len(self._done())} of {len(self.sources)} shards in {self.out}; "
                "run the same command to resume"
            )
        self.teardown(trainer, pl_module, "predict")

    def _gather_moments(self, trainer: pl.Trainer) -> dict[str, dict[str, Moments]]:
        """Every rank's shard moments (a collective: all ranks call it)."""
        if trainer.world_size == 1 or not torch.distributed.is_initialized():
            return dict(self.moments)
        parts: list = [None] * trainer.world_size
        torch.distributed.all_gather_object(parts, self.moments)
        return {name: value for part in parts for name, value in part.items()}

    def write_stats(self, extraction: MirrorExtraction, moments: dict[str, dict[str, Moments]]) -> dict:
        """Write ``stats.json``: ``moments`` of the shards written in this run, the others read back."""
        shards = [self.output_path(source).name for source in self.sources]
        total = {name: Moments.empty() for name in self.members}
        for shard in shards:
            part = moments[shard] if shard in moments else self._read_moments(self.out / shard)
            total = {name: total[name] + part[name] for name in self.members}
        count = next(iter(total.values())).count
        if not count:
            raise RuntimeError(f"No {extraction.what} were written to {self.out}: every sample was skipped")
        source_dir = os.path.dirname(os.path.abspath(self.sources[0]))
        index = read_index(source_dir) or {}
        stats = {
            **extraction.identity,
            **extraction.stats(total),
            "count": count,
            "source": source_dir,
            "source_count": sum(s["count"] for s in index.get("splits", {}).values()) if index else None,
            "source_args": index.get("args"),
            "shards": shards,
        }
        write_json_atomic(self.out / STATS_NAME, stats)
        (self.out / IN_PROGRESS_NAME).unlink(missing_ok=True)
        print(f"{extraction.what} -> {self.out}: {count} samples in {len(shards)} shards; {STATS_NAME} written")
        return stats

    def _read_moments(self, path: Path) -> dict[str, Moments]:
        """The moments of an output shard on disk (one an earlier, interrupted run wrote)."""
        from .inspect import read_samples

        samples = read_samples(str(path))
        return {
            name: moments_of(np.stack([load_npy(sample[member]) for sample in samples]) if samples else np.zeros((0, 0)))
            for name, member in self.members.items()
        }


def moments_of(array: np.ndarray) -> Moments:
    """The moments of an N x ... array's rows, each flattened (an embedding, a latent)."""
    return Moments.of(array.reshape(len(array), -1)) if len(array) else Moments.empty()

"""LightningCLI for every stage: ``t2i fit|validate|test|predict --config stages/X.yaml``.

Also installed as the ``lightning`` command, so ``lightning fit --config stages/decoder.yaml``
works as users type it. Models and DataModules are chosen by ``class_path`` in the stage YAML
(subclass mode). A shared ``_trainer.yaml`` beside the stage config (or one directory up, for
``stages/paper/``) gives the defaults (jsonargparse's ``default_config_files``: the stage configs and the
command line override it), so stage configs hold only what is their own.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from ..accelerator import allow_tf32_on, resolve_precision
from ..data.shards import check_writable, remove_stale_temporaries
from ..data.writer_lock import lock_directory, release_directory_locks
from ..names import SUBCOMMANDS
from .resume import check_explicit_checkpoint, checkpoint_directory, find_resume_point, move_aside
from .stage_parser import StageArgumentParser

TRAINER_DEFAULTS = "_trainer.yaml"


def _config_paths(argv: list[str]) -> list[str]:
    paths = []
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv):
            paths.append(argv[i + 1])
        elif arg.startswith("--config="):
            paths.append(arg.split("=", 1)[1])
    return paths


def trainer_defaults_for(config: str | Path) -> Path | None:
    """The ``_trainer.yaml`` that applies to a stage config: in its directory, else its parent's."""
    config = Path(config).resolve()
    for directory in (config.parent, config.parent.parent):
        candidate = directory / TRAINER_DEFAULTS
        if candidate.is_file() and candidate != config:
            return candidate
    return None


def trainer_defaults_kwargs(args: list[str], subcommands: bool) -> dict:
    """LightningCLI ``parser_kwargs`` that make the ``_trainer.yaml`` of the first ``--config`` in ``args``
    the defaults (of every subcommand's parser when ``subcommands``); none when there is no such file or
    the command line names it itself."""
    configs = _config_paths(args)
    if not configs or any(Path(c).name == TRAINER_DEFAULTS for c in configs):
        return {}
    defaults = trainer_defaults_for(configs[0])
    if defaults is None:
        return {}
    kwargs = {"default_config_files": [str(defaults)]}
    return {name: kwargs for name in SUBCOMMANDS} if subcommands else kwargs


class StageTrainer(Trainer):
    """Lightning's Trainer, whose ``precision`` may also be ``auto``: decided by
    :func:`t2i_lightning.accelerator.resolve_precision` from the accelerator this run uses (the Makefile
    passes ``--trainer.precision auto`` unless ``PRECISION`` says otherwise). On a CUDA GPU TF32 is
    allowed (:func:`t2i_lightning.accelerator.allow_tf32_on`)."""

    def __init__(self, *args, precision: str | int | None = None, **kwargs) -> None:
        accelerator = kwargs.get("accelerator", "auto")
        chosen = resolve_precision(precision, accelerator if isinstance(accelerator, str) else "auto")
        super().__init__(*args, precision=chosen, **kwargs)
        allow_tf32_on(self.strategy.root_device)


class T2ILightningCLI(LightningCLI):
    """LightningCLI in subclass mode for models and data, overwriting a previous run's config.yaml.

    ``fit`` resumes from the run's newest good checkpoint when there is one (:mod:`t2i_lightning.training.resume`):
    ``--fresh`` starts over instead, ``--resume-changed-config`` accepts other model settings, and an
    explicit ``--ckpt_path`` is used as given.
    """

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        command_line = list(sys.argv[1:] if args is None else args)
        warnings.filterwarnings("ignore", message=r".*IterableDataset.* has `__len__` defined.*")
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
        warnings.filterwarnings("ignore", message=r".*Couldn't infer the batch indices.*")
        super().__init__(
            model_class=LightningModule,
            trainer_class=StageTrainer,
            parser_class=StageArgumentParser,
            datamodule_class=LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            parser_kwargs=trainer_defaults_kwargs(command_line, subcommands=run),
            args=args,
            run=run,
            auto_configure_optimizers=True,
        )

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--fresh", action="store_true",
            help="fit: start over; the run's old checkpoints are moved to checkpoints.replaced-<time>/",
        )  # fmt: skip
        parser.add_argument(
            "--resume-changed-config", action="store_true",
            help="fit: resume even though the model settings differ from the checkpoint's",
        )  # fmt: skip

    def parse_arguments(self, parser, args) -> None:
        """Parse as LightningCLI does, then refuse a ``--ckpt_path`` file of another stage (before
        LightningCLI reads the checkpoint's hyperparameters into the model config)."""
        super().parse_arguments(parser, args)
        config = self.config.get(self.config.get("subcommand") or "", {})
        ckpt_path, class_path = config.get("ckpt_path"), config.get("model.class_path")
        if ckpt_path and class_path and Path(ckpt_path).is_file():
            check_explicit_checkpoint(ckpt_path, class_path)

    def before_fit(self) -> None:
        config = self.config[self.subcommand]
        directory = checkpoint_directory(self.trainer)
        check_writable(directory.parent, directory=True)  # the run directory: refused now, not after data setup
        if rank_zero_only.rank == 0:
            # one writer per run directory; holding it, remove what a save killed midway left
            lock_directory(directory.parent, "a t2i fit", "give this run another --trainer.logger.init_args.save_dir")
            removed = remove_stale_temporaries(directory) if directory.is_dir() else 0
            if removed:
                rank_zero_info(f"Removed {removed} temporary file(s) a killed save left in {directory}")
        if config.get("ckpt_path"):
            return
        if config.fresh:
            moved = move_aside(directory) if rank_zero_only.rank == 0 else None
            if moved is not None:
                rank_zero_info(f"Starting fresh (--fresh); the previous checkpoints are in {moved}")
            return
        point = find_resume_point(
            directory, config.model.class_path, dict(self.model.hparams),
            allow_changed_config=config.resume_changed_config,
        )  # fmt: skip
        if point is None:
            return
        for skipped in point.skipped:
            rank_zero_info(f"Unreadable checkpoint passed over: {skipped}")
        rank_zero_info(
            f"Resuming from {point.path} (step {point.global_step}); pass --fresh to start over instead"
        )
        self.config_init[self.subcommand]["ckpt_path"] = str(point.path)


def run_lightning(argv: list[str] | None = None) -> None:
    """Run a LightningCLI subcommand (``fit`` ...) with the stage's shared trainer defaults applied. ``argv``
    becomes the command line LightningCLI reads (it warns when given both ``args`` and a command line)."""
    saved = sys.argv
    if argv is not None:
        sys.argv = [saved[0] if saved else "t2i", *argv]
    try:
        T2ILightningCLI()
    finally:
        sys.argv = saved
        release_directory_locks()

"""The ``t2i`` command: dispatch only. Stage training goes to LightningCLI
(:mod:`t2i_lightning.training.lightning_cli`); every other subcommand is a module of ``commands/``
that registers its parser and the function it runs.

    t2i fit|validate|test|predict --config stages/X.yaml [--trainer.* ...]
    t2i data shapes|coco|folder|inspect ...
    t2i sample --prompt "a red circle" --out red.png
    t2i upsample --in small.png --out big.png
    t2i evaluate --config stages/evaluate.yaml

``lightning`` (also installed) is the same as ``t2i`` restricted to the LightningCLI
subcommands, so ``lightning fit --config stages/decoder.yaml`` works as users type it.

Parsing imports no torch, Lightning or model library (tested): ``t2i --help``, a command's ``--help``
and a mistyped argument answer in a fraction of a second; a command imports what it needs in its ``run``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Iterator

from .bench.stage_log import recorded
from .commands import (
    bench,
    data,
    embed_text,
    evaluate,
    evaluate_decoder,
    evaluate_guidance,
    evaluate_upsampler,
    probe_layout,
    random_clip,
    sample,
    upgrade_checkpoint,
    upsample,
)
from .names import SUBCOMMANDS

COMMANDS = (data, embed_text, probe_layout, sample, upsample, evaluate_upsampler, evaluate_decoder,
            evaluate_guidance, evaluate, bench, upgrade_checkpoint, random_clip)  # fmt: skip
"""The ``commands/`` modules, in the order ``t2i --help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="t2i",
        description="t2i_lightning: staged text-to-image diffusion with PyTorch Lightning.",
        epilog="Stage commands take LightningCLI arguments: t2i fit --config stages/X.yaml [--trainer.max_steps N]. "
        "Run `t2i fit --help` for all of them.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        subparsers.add_parser(name, help=f"LightningCLI {name} of a stage: {name} --config stages/X.yaml ...")
    for command in COMMANDS:
        command.register(subparsers)
    return parser


# A path that is a file where a directory must be (or the reverse), or not writable, is the user's to fix.
BUILTIN_USER_ERRORS = (
    FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError, ValueError,
)  # fmt: skip
PACKAGE_USER_ERRORS = (
    ("t2i_lightning.training.finite_guard", "NonFiniteLossError"),
    ("t2i_lightning.data.decode", "ShardMismatchError"),
    ("t2i_lightning.data.shards", "DiskFullError"),
)
"""The package's own errors a user can fix (a diverged run, embeddings of another dataset), by the
module that defines and raises each."""
SIGTERM_ERROR = ("lightning.pytorch.utilities.exceptions", "SIGTERMException")
SIGTERM_EXIT_CODE = 128 + signal.SIGTERM


def imported_errors(*errors: tuple[str, str]) -> tuple[type[BaseException], ...]:
    """The exception classes named ``(module, class)`` whose modules this process has imported: one whose
    module was never imported cannot have been raised, so handling an error imports nothing heavy."""
    return tuple(getattr(sys.modules[module], name) for module, name in errors if module in sys.modules)


def user_errors() -> tuple[type[BaseException], ...]:
    """The errors a user can fix: reported in one line, without a traceback."""
    return BUILTIN_USER_ERRORS + imported_errors(*PACKAGE_USER_ERRORS)


@contextlib.contextmanager
def reported_as_user_error(command: str) -> Iterator[None]:
    """Turn the errors a user can fix into one line on stderr and a non-zero exit (no traceback unless
    ``T2I_DEBUG`` is set); a SIGTERM-stopped fit exits with 143 so that make does not mark it done. (An
    ``except`` clause's classes are looked up only when an error arrives: :func:`imported_errors`.)"""
    try:
        yield
    except imported_errors(SIGTERM_ERROR):
        sys.exit(SIGTERM_EXIT_CODE)
    except user_errors() as error:
        if os.environ.get("T2I_DEBUG"):
            raise
        sys.exit(f"{command}: error: {user_message(error)}\n(set T2I_DEBUG=1 for a traceback)")


def user_message(error: BaseException) -> str:
    """The error's message; for one a DataLoader worker raised (torch re-raises it with the worker's whole
    traceback as its message), the original message alone."""
    message = str(error)
    if message.startswith("Caught ") and "Original Traceback" in message:
        last = message.rstrip().splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return message


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``t2i``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    with recorded(argv):
        _dispatch(argv)


def _dispatch(argv: list[str]) -> None:
    if argv and argv[0] in SUBCOMMANDS:
        from .training.lightning_cli import run_lightning

        with reported_as_user_error(f"t2i {argv[0]}"):
            run_lightning(argv)
        return
    args = build_parser().parse_args(argv)
    args.argv = argv[1:]  # the command's own arguments, for a command that layers a config file under them
    command = " ".join(
        filter(
            None, [args.command, getattr(args, "data_command", None) or getattr(args, "bench_command", None)]
        )
    )
    with reported_as_user_error(f"t2i {command}"):
        args.run(args)


def lightning_main(argv: list[str] | None = None) -> None:
    """Entry point of ``lightning``: the LightningCLI subcommands of ``t2i``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SUBCOMMANDS:
        from .training.lightning_cli import run_lightning

        if not argv or argv[0] in ("-h", "--help"):
            run_lightning(["--help"])
            return
        sys.exit(
            f"lightning: unknown command {argv[0]!r}; use one of {', '.join(SUBCOMMANDS)} (e.g. `lightning fit --config stages/decoder.yaml`)"
        )
    main(argv)

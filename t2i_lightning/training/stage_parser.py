"""The stage commands' argument parser: a mistyped key is one line, and no key is taken for another.

jsonargparse prints the whole usage (about 55 lines for a stage) before the line that matters, and wraps
an unknown ``--model.init_args.X`` in the text of every union type it tried. Here the message is cut to
the lines that say what is wrong, on one line after the command's name, with where the options are
listed; ``T2I_DEBUG=1`` keeps jsonargparse's own output. Prefixes are not expanded: argparse would take
``--trainer.max_step`` for ``--trainer.max_steps`` without a word.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from lightning.pytorch.cli import LightningArgumentParser

USAGE_EXIT_CODE = 2
NOISE = ("Does not validate against any of the Union subtypes", "Subtypes:", "Errors:", "Given value",
         "Expected a <class 'NoneType'>")  # fmt: skip
"""Lines of jsonargparse's messages that describe its attempts rather than the mistake."""


def one_line(message: str) -> str:
    """jsonargparse's error ``message`` as one line: what is wrong, without how each union type failed."""
    lines = (line.strip().lstrip("-").strip() for line in message.splitlines())
    return ": ".join(line.rstrip(":") for line in lines if line and not line.startswith(NOISE))


class StageArgumentParser(LightningArgumentParser):
    """LightningArgumentParser with no prefix matching and one-line errors (see the module docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or os.environ.get("T2I_DEBUG"):
            super().error(message, ex)
        prog = (getattr(ex, "subcommand_parser", None) or self).prog.replace(" [options]", "")
        sys.stderr.write(f"{prog}: error: {one_line(message)}\n({prog} --help lists the options)\n")
        sys.exit(USAGE_EXIT_CODE)

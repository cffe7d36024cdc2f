"""One module per ``t2i`` subcommand: its argparse parser, a typed options object (a dataclass) made
from the parsed arguments, and a ``run`` that calls the library with it. argparse lives only here and
in ``cli.py``; nothing in the package imports this folder."""

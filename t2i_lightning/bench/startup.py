"""The command line's start-up: ``t2i --help`` against ``python -c pass`` (the interpreter alone), run
side by side in fresh processes, alternately. It is what every ``t2i`` command costs before its work:
the interpreter, the package and the parsers; the heavy libraries are imported by a command's ``run``,
so this stays a fraction of a second where importing torch and Lightning first took 5-8 s.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .stage_log import ENV as TIMINGS_ENV

T2I_HELP = ("-c", "import sys; from t2i_lightning.cli import main; sys.exit(main())", "--help")
"""``t2i --help`` as the installed ``t2i`` script runs it (this interpreter, the entry point)."""
BARE = ("-c", "pass")
TARGET_S = 1.5
"""What ``t2i --help`` may take, in seconds (the interpreter alone takes a few hundredths)."""


def _wall_s(args: tuple[str, ...], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def bench_startup(repeats: int = 5) -> dict:
    """Median wall seconds of ``t2i --help`` and of ``python -c pass`` over ``repeats`` alternated runs of
    each, and their ratio; the package is this one (its folder first on ``PYTHONPATH``) and no run
    appends to the stage log."""
    if repeats <= 0:
        raise ValueError(f"--repeats must be positive, got {repeats}")
    root = str(Path(__file__).resolve().parents[2])
    env = {key: value for key, value in os.environ.items() if key != TIMINGS_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    help_s, bare_s = [], []
    for _ in range(repeats):
        help_s.append(_wall_s(T2I_HELP, env))
        bare_s.append(_wall_s(BARE, env))
    help_median, bare_median = statistics.median(help_s), statistics.median(bare_s)
    return {"repeats": repeats, "help_s": help_median, "python_s": bare_median, "ratio": help_median / bare_median,
            "target_s": TARGET_S, "help_runs_s": help_s, "python_runs_s": bare_s}  # fmt: skip

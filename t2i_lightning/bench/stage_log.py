"""Wall time and peak memory of every ``t2i`` command, for the whole-demo row of ``t2i bench``.

When ``T2I_TIMINGS`` names a file (the Makefile sets ``runs/bench/stages.jsonl``), each ``t2i``
command appends one JSON line when it ends: the stage (a stage config's name for ``fit``/``predict``,
else the subcommand), the command line, wall seconds, exit status, and peak resident memory of the
process and of its largest finished child (data-loader workers), from ``getrusage``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import resource
import time
from collections.abc import Iterator
from pathlib import Path

ENV = "T2I_TIMINGS"


def stage_name(argv: list[str]) -> str:
    """``fit --config stages/decoder.yaml ...`` -> "decoder"; ``sample ...`` -> "sample"."""
    if "--config" in argv[:-1]:
        return Path(argv[argv.index("--config") + 1]).stem
    return argv[0] if argv else ""


def _peak_rss_bytes(who: int) -> int:
    return resource.getrusage(who).ru_maxrss * 1024  # Linux reports KiB


@contextlib.contextmanager
def recorded(argv: list[str]) -> Iterator[None]:
    """Append this command's record to ``$T2I_TIMINGS`` when the block ends (nothing when it is unset)."""
    path = os.environ.get(ENV)
    if not path:
        yield
        return
    start, status = time.perf_counter(), 1
    try:
        yield
        status = 0
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else 1
        raise
    finally:
        record = {
            "stage": stage_name(argv),
            "command": " ".join(argv),
            "exit_status": status,
            "wall_s": round(time.perf_counter() - start, 2),
            "peak_rss_bytes": _peak_rss_bytes(resource.RUSAGE_SELF),
            "peak_rss_children_bytes": _peak_rss_bytes(resource.RUSAGE_CHILDREN),
            "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as stream:
            stream.write(json.dumps(record) + "\n")


def demo_summary(path: str | os.PathLike, expected: tuple[str, ...] = ()) -> dict | None:
    """Per stage, from the latest successful run of each distinct command in ``path``: the commands'
    summed wall time and their largest peak memory (process or child); totals over the ``expected``
    stages (all when empty), and which of them have no record (``missing``). None when nothing counts."""
    if not os.path.isfile(path):
        return None
    latest: dict[str, dict] = {}
    with open(path) as stream:
        for line in stream:
            record = json.loads(line)
            if record["exit_status"] == 0:
                latest[record["command"]] = record
    stages: dict[str, dict] = {}
    for record in latest.values():
        stage = stages.setdefault(record["stage"], {"commands": 0, "wall_s": 0.0, "peak_rss_bytes": 0})
        stage["commands"] += 1
        stage["wall_s"] = round(stage["wall_s"] + record["wall_s"], 2)
        peak = max(record["peak_rss_bytes"], record["peak_rss_children_bytes"])
        stage["peak_rss_bytes"] = max(stage["peak_rss_bytes"], peak)
    counted = [stage for name, stage in stages.items() if not expected or name in expected]
    if not counted:
        return None
    return {
        "stages": stages,
        "total_wall_s": round(sum(s["wall_s"] for s in counted), 2),
        "max_peak_rss_bytes": max(s["peak_rss_bytes"] for s in counted),
        "missing": [name for name in expected if name not in stages],
    }

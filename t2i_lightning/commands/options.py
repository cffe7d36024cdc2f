"""Options several ``t2i`` commands share, each declared once: the sampler (its choices are
:data:`t2i_lightning.diffusion.SAMPLERS`' names), the classifier-free guidance scale, the device and the
sampling precision, the score model's sampling settings, and the conversion of parsed arguments into a
command's typed options object.

Building the parsers imports only light modules (names and defaults, no torch): what a command needs to
run is imported in its ``run``, so that ``t2i --help`` and argument errors answer at once."""

from __future__ import annotations

import argparse
import dataclasses
import re
from typing import TypeVar

from ..diffusion.names import DEFAULT_CFG_SCALE, GUIDANCE_SCHEDULE_NAMES, SAMPLER_NAMES, SAMPLING_PRECISIONS
from ..names import AUTO, DEVICE_HELP
from ..registry import default_checkpoint

Options = TypeVar("Options")


def options_from(cls: type[Options], args: argparse.Namespace) -> Options:
    """The dataclass ``cls`` with each field taken from the parsed argument of the same name: what the
    command passes on, so no ``argparse.Namespace`` leaves ``commands/``. A ``device`` becomes the
    :class:`torch.device` it names (``auto`` resolved), and then an ``auto`` ``precision`` the one
    :func:`resolve_precision` picks for that device."""
    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(cls)}
    if "device" in values:
        from ..accelerator import inference_device, resolve_precision

        values["device"] = inference_device(values["device"])
        if "precision" in values:
            values["precision"] = resolve_precision(values["precision"], values["device"].type)
    return cls(**values)


def add_command(subparsers: argparse._SubParsersAction, name: str, doc: str, help: str) -> argparse.ArgumentParser:
    """The subcommand ``name``: ``help`` in ``t2i --help``, its module docstring's first paragraph (``doc``,
    less its leading ````t2i name````) as its description."""
    description = re.sub(r"^``[^`]+``:\s*", "", doc.split("\n\n")[0])
    return subparsers.add_parser(name, help=help, description=description[:1].upper() + description[1:])


def non_negative_float(text: str) -> float:
    """An argparse type: a float >= 0, refused with the value otherwise."""
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def add_sampler_argument(parser: argparse.ArgumentParser, flag: str = "--sampler", default: str | None = "ddim",
                         help: str = "diffusion sampler") -> None:  # fmt: skip
    """``--sampler`` (or ``flag``) with every sampler (:data:`SAMPLER_NAMES`) as its choices."""
    note = f"default: {default}" if default else "default: the checkpoint's own"
    parser.add_argument(flag, choices=sorted(SAMPLER_NAMES), default=default, help=f"{help} ({note})")


def add_cfg_argument(parser: argparse.ArgumentParser, sweep: bool = False) -> None:
    """``--cfg``: the classifier-free guidance scale (several, to sweep, with ``sweep``)."""
    if sweep:
        parser.add_argument("--cfg", type=non_negative_float, nargs="+", default=[DEFAULT_CFG_SCALE],
                            help=f"guidance scales to sweep (default: {DEFAULT_CFG_SCALE:g})")  # fmt: skip
    else:
        parser.add_argument("--cfg", type=non_negative_float, default=DEFAULT_CFG_SCALE,
                            help=f"classifier-free guidance scale (default: {DEFAULT_CFG_SCALE:g})")  # fmt: skip


def add_device_arguments(parser: argparse.ArgumentParser, precision: bool = True) -> None:
    """``--device`` (resolved by :func:`t2i_lightning.accelerator.inference_device` in :func:`options_from`)
    and, with ``precision``, ``--precision``: the U-Nets (decoder, upsampler, score model) in float32 or
    under bfloat16 autocast while sampling; ``auto`` is resolved for the device."""
    parser.add_argument("--device", default=AUTO, help=f"where the models run: {DEVICE_HELP} (default: auto)")
    if precision:
        parser.add_argument(
            "--precision", choices=SAMPLING_PRECISIONS + (AUTO,), default=AUTO,
            help="the U-Nets while sampling: 32-true, bf16-mixed (bfloat16 autocast; the sampler's arithmetic and "
            "guidance stay float32) or auto (bf16-mixed where the device computes bf16 natively: a GPU with bf16, a "
            "CPU with AVX-512 BF16 or AMX; else 32-true) (default: auto)",
        )  # fmt: skip


def add_score_options(parser: argparse.ArgumentParser) -> None:
    """The score model, its guiding captioner and their Langevin sampling settings (``t2i sample --method
    score``, ``t2i evaluate-guidance``)."""
    parser.add_argument("--score", default=default_checkpoint("score"), help="score model checkpoint (default: %(default)s)")
    parser.add_argument("--captioner", default=default_checkpoint("captioner"), help="captioner checkpoint (default: %(default)s)")
    parser.add_argument(
        "--guidance-schedule", choices=sorted(GUIDANCE_SCHEDULE_NAMES), default="constant",
        help="how lambda varies over the noise levels (default: constant)",
    )  # fmt: skip
    parser.add_argument("--langevin-steps", type=int, default=None, help="Langevin steps per level (default: the model's)")
    parser.add_argument("--langevin-eps", type=float, default=None, help="Langevin step size epsilon (default: the model's)")

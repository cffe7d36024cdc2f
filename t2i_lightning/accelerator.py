"""The device and the numeric precision a run uses, decided in one place from the accelerator actually
used: ``auto`` (the Makefile's default) becomes bf16-mixed where the device computes bfloat16 natively
(a CUDA GPU that supports it; a CPU with AVX-512 BF16 or AMX) and 32-true elsewhere.

On the demo's CPU, bf16-mixed trains the decoder 1.8x the steps per second and samples 2.3x faster at
the same scores (docs/performance.md); on a CPU without native bf16 it would be slower than float32.
Stages whose numbers are kept in float32 on purpose (the translator, embedding extraction, the text
decoder) set ``trainer.precision: 32-true`` in their own config.
"""

from __future__ import annotations

import functools

import torch

from .names import AUTO, DEVICE_HELP

FULL_PRECISION = "32-true"
BF16_MIXED = "bf16-mixed"
PRECISION_CHOICES = (AUTO, FULL_PRECISION, BF16_MIXED)
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (its flags in /proc/cpuinfo; False where that is unreadable)."""
    try:
        with open("/proc/cpuinfo") as stream:
            flags = {word for line in stream if line.startswith("flags") for word in line.split()}
    except OSError:
        return False
    return any(flag in flags for flag in CPU_BF16_FLAGS)


def device_type(accelerator: str = AUTO) -> str:
    """The torch device type a Lightning ``accelerator`` setting runs on: "cuda" for gpu/cuda, and for
    auto when a CUDA device is present; "cpu" otherwise."""
    if accelerator in ("gpu", "cuda") or (accelerator == AUTO and torch.cuda.is_available()):
        return "cuda"
    if accelerator in ("cpu", AUTO):
        return "cpu"
    return accelerator


def resolve_precision(requested: str | int | None, accelerator: str = AUTO) -> str | int | None:
    """``requested`` itself, unless it is ``auto``: then bf16-mixed where the device of ``accelerator``
    computes bfloat16 natively, else 32-true."""
    if requested != AUTO:
        return requested
    kind = device_type(accelerator)
    if kind == "cuda":
        return BF16_MIXED if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else FULL_PRECISION
    if kind == "cpu":
        return BF16_MIXED if cpu_has_native_bf16() else FULL_PRECISION
    return FULL_PRECISION


def inference_device(requested: str | torch.device = AUTO) -> torch.device:
    """The device an inference command runs on: ``auto`` is the first CUDA GPU when there is one, else
    the CPU; a named device must exist here. On a CUDA GPU TF32 is allowed (:func:`allow_tf32_on`)."""
    if requested == AUTO:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(requested)
        except (RuntimeError, TypeError) as error:
            raise ValueError(f"--device {requested!r} is not a device: give {DEVICE_HELP}") from error
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"--device {requested!r}: this project runs on {DEVICE_HELP}")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {requested}: no CUDA device here (torch.cuda.is_available() is False); use --device cpu or auto")
        if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
            raise ValueError(f"--device {requested}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    allow_tf32_on(device)
    return device


def allow_tf32_on(device: torch.device) -> None:
    """On a CUDA GPU let float32 matmuls and convolutions use TF32 tensor cores (10-bit mantissas, cuDNN's
    default already; about 8x the float32 rate on an A100/H100), for training and sampling alike; on
    other devices nothing changes."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

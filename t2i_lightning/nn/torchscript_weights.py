"""The tensors of a TorchScript archive, read without running it.

OpenAI's original CLIP files (``ViT-B-32.pt`` ... of openai/CLIP) are TorchScript archives, what
``torch.jit.save`` writes. ``torch.load(weights_only=True)`` refuses them, and ``torch.jit.load``
compiles the archive's code and runs it, so a file from elsewhere could do anything. Its weights
are plain data, though: this module reads them with :mod:`zipfile` and a :class:`pickle.Unpickler`
that builds tensors, ordered dicts and inert records, and refuses every other global.

The archive is a zip whose records all lie under one folder ``<name>/``:

- ``data.pkl``: the module tree, pickled. A module is an object of a class ``__torch__.<path>``
  (``__torch__.torch.nn.modules.linear Linear`` ...) created empty and then given the dict of its
  attributes: parameters, buffers and plain tensors, its submodules, flags such as ``training``.
  A tensor is ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
  backward_hooks)`` whose storage is the persistent id ``('storage', torch.<Type>Storage, key,
  location, numel)``, resolved as ``torch.serialization`` does it for zip archives: the bytes of
  the record ``data/<key>``;
- ``data/<key>``: each storage's raw bytes, in the order of ``byteorder`` where that record exists
  (archives older than it are little-endian);
- ``code/`` (the classes' TorchScript source), ``constants.pkl`` (its constants; torch's own test
  that a zip is TorchScript), ``version``: not read here.

The tensors' dotted names are their attribute paths (``visual.conv1.weight``), as the module's
``state_dict`` names them, plus any plain tensor attribute (OpenAI's ``attn_mask``): telling those
apart is up to the caller, which knows the model the weights are for.
"""

from __future__ import annotations

import collections
import pickle
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import torch

STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}  # fmt: skip
"""The storage classes an archive names (``torch FloatStorage`` ...) and the dtype of their elements."""


class TorchScriptArchiveError(ValueError):
    """A TorchScript archive whose weights cannot be read without running it."""


class ScriptObject:
    """The stand-in for an object of a TorchScript class: it keeps the state it is given and runs nothing."""

    def __setstate__(self, state: object) -> None:
        self.state = state


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple, stride: tuple, *_flags) -> torch.Tensor:
    """What ``torch._utils._rebuild_tensor_v2`` builds, a strided view of a storage (its autograd flags dropped)."""
    return storage.as_strided(size, stride, offset)


ALLOWED_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("collections", "OrderedDict"): collections.OrderedDict,
}
"""The globals other than classes and storage types that a module tree's pickle uses, and what they become."""


class _WeightsUnpickler(pickle.Unpickler):
    """Unpickles ``data.pkl`` of an open archive: TorchScript classes become :class:`ScriptObject`
    records, storages are read from ``data/<key>`` (each once), any other global is refused."""

    def __init__(self, stream: IO[bytes], archive: zipfile.ZipFile, folder: str):
        super().__init__(stream)
        self.archive, self.folder = archive, folder
        self.storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str):
        if module == "__torch__" or module.startswith("__torch__."):
            return type(name, (ScriptObject,), {})
        if module == "torch" and name in STORAGE_DTYPES:
            return STORAGE_DTYPES[name]
        if (module, name) in ALLOWED_GLOBALS:
            return ALLOWED_GLOBALS[module, name]
        raise pickle.UnpicklingError(f"the global {module}.{name} is not one a module's weights need")

    def persistent_load(self, saved_id: tuple) -> torch.Tensor:
        kind, dtype, key, _location, numel = saved_id
        if kind != "storage" or not isinstance(dtype, torch.dtype):
            raise pickle.UnpicklingError(f"unknown persistent id {saved_id!r}")
        if key not in self.storages:
            raw = bytearray(self.archive.read(f"{self.folder}data/{key}"))
            flat = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            if flat.numel() != numel:
                raise pickle.UnpicklingError(f"storage {key} holds {flat.numel()} elements, not {numel}")
            self.storages[key] = flat
        return self.storages[key]


def is_torchscript_archive(path: str | Path) -> bool:
    """Whether ``path`` is a zip with a ``constants.pkl`` record: what ``torch.jit.save`` writes."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.count("/") == 1 and name.endswith("/constants.pkl") for name in archive.namelist())


def _folder(archive: zipfile.ZipFile) -> str:
    """The one top folder (with its slash) that holds ``data.pkl``."""
    folders = [
        name[: -len("data.pkl")]
        for name in archive.namelist()
        if name.count("/") == 1 and name.endswith("/data.pkl")
    ]
    if len(folders) != 1:
        raise pickle.UnpicklingError(f"expected one <name>/data.pkl record, found {len(folders)}")
    return folders[0]


def _check_byteorder(archive: zipfile.ZipFile, folder: str) -> None:
    if f"{folder}byteorder" in archive.namelist():
        order = archive.read(f"{folder}byteorder").decode().strip()
        if order != sys.byteorder:
            raise pickle.UnpicklingError(
                f"the storages are {order}-endian, this machine is {sys.byteorder}-endian"
            )


def _tensors(record: ScriptObject, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor attribute of a module record and of its submodules, by dotted attribute path."""
    state = getattr(record, "state", None)
    for name, value in state.items() if isinstance(state, dict) else ():
        if isinstance(value, torch.Tensor):
            yield f"{prefix}{name}", value
        elif isinstance(value, ScriptObject):
            yield from _tensors(value, f"{prefix}{name}.")


def conversion_hint(path: str | Path) -> str:
    """How to turn a trusted TorchScript archive into a state dict this project reads (a one-liner)."""
    target = Path(path).with_suffix(".state.pt")
    command = f"torch.save(torch.jit.load('{path}', map_location='cpu').state_dict(), '{target}')"
    return (
        f'if you trust the file, convert it once with python -c "import torch; {command}" '
        f"(torch.jit.load runs the file's code) and pass CLIP={target} (make) or pretrained: {target} (YAML)"
    )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of the TorchScript archive at ``path`` by dotted attribute path, read without running it.

    Raises :class:`TorchScriptArchiveError`, saying how to convert the file, when it cannot be read so.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            folder = _folder(archive)
            _check_byteorder(archive, folder)
            with archive.open(f"{folder}data.pkl") as stream:
                root = _WeightsUnpickler(stream, archive, folder).load()
        tensors = dict(_tensors(root))
        if not tensors:
            raise pickle.UnpicklingError(
                f"data.pkl holds no module with tensors (it holds a {type(root).__name__})"
            )
    except Exception as error:  # any way the archive cannot be read like this ends in the same advice
        raise TorchScriptArchiveError(
            f"Cannot read the weights of the TorchScript archive {path} without running its code "
            f"({type(error).__name__}: {error}); {conversion_hint(path)}"
        ) from error
    return tensors

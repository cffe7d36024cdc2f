"""The package's shape, checked so it cannot drift: folder-level imports form a DAG, argparse stays in the
command layer, the registry is the one table of stages, every command offers the same samplers, and
precision ``auto`` is decided in one Python function from the accelerator actually used."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from t2i_lightning import accelerator
from t2i_lightning.cli import build_parser, main
from t2i_lightning.commands.options import options_from
from t2i_lightning.commands.sample import SampleOptions
from t2i_lightning.diffusion import SAMPLERS
from t2i_lightning.registry import STAGES, stage_class

from .cli_runs import ROOT

PACKAGE = ROOT / "t2i_lightning"
MAX_ROOT_MODULES = 6
MAX_MODULE_LINES = 300


def unit_of(module: str) -> str:
    """The folder (or root module) a dotted module name belongs to: ``t2i_lightning.nn.unet`` -> ``nn``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imported_units(path: Path) -> set[str]:
    """The package folders/root modules that ``path`` imports, relative or absolute, lazily or not."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    if path.name == "__init__.py":
        package = package[:-1]
    units = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [target + "." + alias.name for alias in node.names] if target == "t2i_lightning" else [target]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        units |= {unit_of(name) for name in names if name.startswith("t2i_lightning.")}
    return units


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        unit = unit_of(".".join(path.relative_to(ROOT).with_suffix("").parts))
        graph.setdefault(unit, set()).update(imported_units(path) - {unit})
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path of nodes, or None for a DAG (depth-first search)."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_a_planted_cycle_and_passes_a_dag():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_folder_level_imports_form_a_dag():
    graph = import_graph()
    assert {"diffusion", "data", "nn", "stages", "training", "eval", "metrics", "commands"} <= set(graph)
    assert find_cycle(graph) is None, f"folder-level import cycle: {' -> '.join(find_cycle(graph))}"


def test_nothing_below_the_command_layer_imports_it():
    graph = import_graph()
    for unit, imports in graph.items():
        if unit not in ("cli", "commands"):
            assert not imports & {"cli", "commands"}, f"{unit} imports the command layer"
    assert "eval" not in graph["nn"], "nn/ must not import eval/"
    assert graph["diffusion"] <= set(), "diffusion/ is pure torch: it imports nothing of the package"


def test_argparse_lives_only_in_cli_and_commands():
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in ("cli.py", "commands"):
            continue
        assert not re.search(r"^\s*(import argparse|from argparse)", path.read_text(), re.M), relative


def test_package_root_is_small_and_no_module_is_long():
    root_modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root_modules) <= MAX_ROOT_MODULES, root_modules
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"
    for folder in (p for p in PACKAGE.rglob("*") if p.is_dir() and p.name != "__pycache__"):
        init = folder / "__init__.py"
        if any(folder.glob("*.py")):
            assert init.is_file() and ast.get_docstring(ast.parse(init.read_text())), f"{folder} needs a docstring"


def sampler_options(parser: argparse.ArgumentParser, path: str = "t2i") -> dict[str, set[str]]:
    """Every option of every (sub)command that chooses a diffusion sampler, with its choices."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= sampler_options(sub, f"{path} {name}")
        elif any(re.fullmatch(r"--(\w+-)?sampler", flag) for flag in action.option_strings):
            found[f"{path} {action.option_strings[0]}"] = set(action.choices or ())
    return found


def test_every_command_accepts_the_same_samplers():
    options = sampler_options(build_parser())
    assert {"t2i sample --sampler", "t2i sample --up-sampler", "t2i evaluate --sampler",
            "t2i evaluate-decoder --sampler", "t2i evaluate-upsampler --sampler", "t2i upsample --up-sampler"} <= set(options)  # fmt: skip
    for option, choices in options.items():
        assert choices == set(SAMPLERS), f"{option} accepts {sorted(choices)}, the samplers are {sorted(SAMPLERS)}"


def test_the_light_name_lists_are_the_keys_of_the_tables_they_name():
    """The parsers read names from torch-free modules; the tables that map each name to what it does
    must have exactly those keys (a sampler, a guidance schedule or a fixed evaluation row added to one
    and not the other fails here)."""
    from t2i_lightning.diffusion import GUIDANCE_SCHEDULES, names
    from t2i_lightning.eval.names import FIXED_VARIANTS
    from t2i_lightning.eval.variants import FIXED

    assert tuple(SAMPLERS) == names.SAMPLER_NAMES
    assert tuple(GUIDANCE_SCHEDULES) == names.GUIDANCE_SCHEDULE_NAMES
    assert tuple(FIXED) == FIXED_VARIANTS
    assert names.SAMPLING_PRECISIONS == (accelerator.FULL_PRECISION, accelerator.BF16_MIXED)


HEAVY = ("torch", "lightning", "open_clip", "diffusers", "numpy", "PIL", "webdataset", "torchvision")
PARSE_EVERYTHING = f"""
import argparse, contextlib, io, sys
import t2i_lightning.cli
imported = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
print("import:", imported)

from t2i_lightning.cli import build_parser, main

def helps(parser):
    yield parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from helps(sub)

assert sum(1 for _ in helps(build_parser())) > 20
build_parser().parse_args(["sample", "--prompt", "a red circle", "--out", "x.png"])
for argv in (["--help"], ["sample", "--help"], ["sample", "--n"], ["sample"], ["data", "shapes", "--workers", "x"]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            main(argv)
        except SystemExit:
            pass
print("parse:", sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r}))
"""


def test_parsing_any_command_line_imports_no_heavy_library():
    """``t2i --help``, every command's help and argument errors answer without importing torch, Lightning
    or a model library (what made every ``t2i`` command take 5-8 s to start); in a fresh interpreter."""
    result = subprocess.run([sys.executable, "-c", PARSE_EVERYTHING], env={**os.environ, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    assert result.stdout.splitlines() == ["import: []", "parse: []"], result.stdout + result.stderr


def test_the_user_errors_named_by_module_are_the_package_classes():
    """``cli`` names the errors of heavy modules by module and class (it looks them up once they are
    imported): each name must resolve to the class those modules raise."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from t2i_lightning import cli
    from t2i_lightning.data.decode import ShardMismatchError
    from t2i_lightning.training.finite_guard import NonFiniteLossError

    assert {NonFiniteLossError, ShardMismatchError} <= set(cli.user_errors())
    assert cli.imported_errors(cli.SIGTERM_ERROR) == (SIGTERMException,)
    assert cli.imported_errors(("t2i_lightning.never_imported", "Error")) == ()


def leaf_parsers(parser: argparse.ArgumentParser, path: str = "t2i") -> dict[str, argparse.ArgumentParser]:
    """Every (sub)command parser that runs something, by its command line."""
    found = {path: parser} if parser.get_default("run") else {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= leaf_parsers(sub, f"{path} {name}")
    return found


def test_each_command_passes_on_exactly_its_options_as_a_dataclass():
    """The typed options object of each command has a field for each of its options, no more, no fewer."""
    leaves = leaf_parsers(build_parser())
    assert {"t2i sample", "t2i evaluate", "t2i data coco", "t2i bench extraction", "t2i evaluate-upsampler"} <= set(leaves)
    for command, parser in leaves.items():
        run = parser.get_default("run")
        names = [name for name in run.__code__.co_names if name.endswith("Options")]
        assert len(names) == 1, command
        options = run.__globals__[names[0]]
        dests = {a.dest for a in parser._actions if a.dest != "help" and not isinstance(a, argparse._SubParsersAction)}
        dests |= {key for key in parser._defaults if key != "run"}
        assert {f.name for f in dataclasses.fields(options)} == dests, command


def test_the_registry_names_each_stage_once_and_everything_it_names_exists():
    makefile = (ROOT / "Makefile").read_text()
    for name, stage in STAGES.items():
        config = yaml.safe_load((ROOT / stage.config).read_text())
        assert config["model"]["class_path"] == stage.class_path, name
        conditioning = config["model"]["init_args"].get("conditioning") or {}
        assert conditioning.get("class_path") == stage.conditioning, name
        assert stage_class(name).__name__ == stage.class_path.rsplit(".", 1)[1]
        assert re.search(rf"^{re.escape(stage.make_target)}:", makefile, re.M), f"no make target {stage.make_target}"
        assert set(stage.needs) <= set(STAGES), name
        if stage.trains:
            assert config["trainer"]["logger"]["init_args"]["name"] == name
            assert stage.checkpoint("r") == f"r/{name}/checkpoints/last.ckpt"
    # no Python file outside the registry spells a run's checkpoint path
    spelled = [str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")
               if p.name != "registry.py" and re.search(r"runs/\w+/checkpoints/last\.ckpt", p.read_text())]  # fmt: skip
    assert not spelled, spelled
    # nor a stage's make target in a message (docstrings may name them)
    targets = "|".join(re.escape(s.make_target) for s in STAGES.values())
    quoted = [f"{p.relative_to(ROOT)}: {text!r}" for p in PACKAGE.rglob("*.py") if p.name != "registry.py"
              for text in message_strings(p) if re.search(rf"make ({targets})\b", text)]  # fmt: skip
    assert not quoted, quoted


def message_strings(path: Path) -> list[str]:
    """The string constants of a module that are not docstrings (messages, f-string parts)."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value) for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body
        and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }  # fmt: skip
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]  # fmt: skip


def test_the_diffusion_stages_differ_by_their_conditioning_and_space_not_by_subclass():
    """The decoders (pixel and latent), the text decoders and the upsampler are one LightningModule with an
    injected conditioning and space; no module of the package subclasses it, and every stage config (the
    paper's too) names its conditioning."""
    from t2i_lightning.stages.conditioning import Conditioning
    from t2i_lightning.stages.diffusion import DiffusionStage

    diffusion = {name: s for name, s in STAGES.items() if s.class_path.endswith(".DiffusionStage")}
    assert set(diffusion) == {"decoder", "decoder_text", "upsampler", "decoder_latent", "decoder_text_latent"}
    assert len({(s.conditioning, s.space) for s in diffusion.values()}) == 5
    for name in ("decoder_latent", "decoder_text_latent"):
        config = yaml.safe_load((ROOT / diffusion[name].config).read_text())["model"]["init_args"]
        assert config["space"]["class_path"] == diffusion[name].space
    for stage in diffusion.values():
        module, _, cls = stage.conditioning.rpartition(".")
        assert issubclass(getattr(__import__(module, fromlist=[cls]), cls), Conditioning)
    subclassing = [str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py") if re.search(r"class \w+\(DiffusionStage", p.read_text())]
    assert not subclassing and not DiffusionStage.__subclasses__(), subclassing
    for config in (ROOT / "stages" / "paper").glob("*.yaml"):
        model = yaml.safe_load(config.read_text()).get("model", {})
        if model.get("class_path") == DiffusionStage.__module__ + ".DiffusionStage":
            stage = next(s for s in diffusion.values() if s.config == f"stages/{config.name}")
            assert model["init_args"]["conditioning"]["class_path"] == stage.conditioning, config.name


@pytest.mark.parametrize(
    ("accel", "cuda", "bf16_gpu", "bf16_cpu", "expected"),
    [
        ("cpu", False, False, True, "bf16-mixed"),
        ("cpu", False, False, False, "32-true"),
        ("auto", False, False, True, "bf16-mixed"),
        ("auto", True, True, False, "bf16-mixed"),
        ("gpu", True, True, True, "bf16-mixed"),
        ("gpu", True, False, True, "32-true"),
        ("auto", True, False, True, "32-true"),
    ],
)
def test_precision_auto_follows_the_accelerator_actually_used(monkeypatch, accel, cuda, bf16_gpu, bf16_cpu, expected):
    monkeypatch.setattr(accelerator.torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(accelerator.torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_gpu)
    monkeypatch.setattr(accelerator, "cpu_has_native_bf16", lambda: bf16_cpu)
    assert accelerator.resolve_precision("auto", accel) == expected
    assert accelerator.resolve_precision("32-true", accel) == "32-true"  # a choice is kept as given


def test_auto_reaches_the_trainer_and_the_sampling_commands(monkeypatch):
    from t2i_lightning.training.lightning_cli import StageTrainer

    for native, expected in ((True, "bf16-mixed"), (False, "32-true")):
        monkeypatch.setattr(accelerator, "cpu_has_native_bf16", lambda native=native: native)
        trainer = StageTrainer(precision="auto", accelerator="cpu", logger=False, enable_checkpointing=False)
        assert trainer.precision == expected
        args = build_parser().parse_args(["sample", "--prompt", "a red circle", "--out", "x.png", "--precision", "auto"])
        assert options_from(SampleOptions, args).precision == expected


MODEL_FREE_COMMANDS = {"t2i data shapes", "t2i data coco", "t2i data folder", "t2i data inspect", "t2i bench",
                       "t2i bench extraction", "t2i bench sampling", "t2i bench gpu", "t2i bench startup",
                       "t2i upgrade-checkpoint", "t2i probe-layout", "t2i random-clip"}  # fmt: skip
"""Commands that run no model of a stage (data, benchmarks with their own devices, checkpoint files, a
linear probe fitted on stored embeddings, a random CLIP written to a file): every other command takes
``--device``."""


def test_every_inference_command_takes_a_device_and_auto_is_the_gpu_when_there_is_one(monkeypatch):
    leaves = leaf_parsers(build_parser())
    inference = {command: parser for command, parser in leaves.items() if command not in MODEL_FREE_COMMANDS}
    assert {"t2i sample", "t2i upsample", "t2i evaluate", "t2i evaluate-decoder", "t2i evaluate-upsampler",
            "t2i evaluate-guidance", "t2i embed-text"} <= set(inference)  # fmt: skip
    for command, parser in inference.items():
        flags = {flag for action in parser._actions for flag in action.option_strings}
        assert "--device" in flags, f"{command} has no --device"
        assert parser.get_default("device") == "auto", command
    args = build_parser().parse_args(["sample", "--prompt", "a red circle", "--out", "x.png"])
    monkeypatch.setattr(accelerator.torch.cuda, "is_available", lambda: False)
    assert options_from(SampleOptions, args).device == torch.device("cpu")
    monkeypatch.setattr(accelerator.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(accelerator.torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(accelerator.torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    on_gpu = options_from(SampleOptions, args)
    assert (on_gpu.device, on_gpu.precision) == (torch.device("cuda"), "bf16-mixed")  # precision auto follows the device
    assert accelerator.inference_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ValueError, match="has 2 CUDA device"):
        accelerator.inference_device("cuda:2")


@pytest.mark.parametrize(
    "device, message",
    [("cuda", "no CUDA device here"), ("tpu", "is not a device"), ("mps", "this project runs on auto")],
)
def test_a_device_that_is_not_here_is_refused_in_one_line(monkeypatch, capsys, device, message):
    monkeypatch.setattr(accelerator.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as stop:
        main(["embed-text", "a red circle", "--translator", "nowhere.ckpt", "--device", device])
    assert isinstance(stop.value.code, str) and message in stop.value.code  # one line, before any model loads
    assert "Traceback" not in capsys.readouterr().err


def test_tf32_is_allowed_on_a_cuda_device_only():
    from t2i_lightning.training.lightning_cli import StageTrainer

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        StageTrainer(accelerator="cpu", logger=False, enable_checkpointing=False)
        accelerator.allow_tf32_on(torch.device("cpu"))
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        accelerator.allow_tf32_on(torch.device("cuda", 0))
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved

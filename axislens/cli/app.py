"""The ``axislens`` command: one grammar for every subcommand.

- The model is always ``--model NAME`` (an embedded name, a local folder or a hub id; default
  :data:`DEFAULT_MODEL`) with ``--device`` and ``--dtype``. The 0.1 positional form
  (``axislens chat MODEL MESSAGE``, ``axislens monitor MODEL``, ``axislens serve MODEL``) still
  works, with a deprecation note on stderr.
- Every layer flag takes the one layer syntax of :func:`axislens.model.layers.parse_layers`:
  ``12:16`` (stop-exclusive), ``-4:``, ``3``, ``1,5,-1`` or ``all``.
- Every argument is checked before a model loads; a bad one ends the command with one line,
  ``axislens <sub>: error: ...``, on stderr and exit status 2.

Parsing the arguments imports nothing heavy (``axislens --help`` does not import torch): the
subcommands import the library inside the functions that run them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["build_parser", "command", "load_from_args", "main"]

DEFAULT_MODEL = "smollm2-135m-instruct"
"""The default ``--model``: equal to :data:`axislens.model.loading.DEFAULT_MODEL` (a test checks
it), written out here so that building the parser needs no torch."""
DTYPES = ("float32", "bfloat16", "float16")

Command = Callable[[argparse.Namespace], int]
AddArgs = Callable[[argparse.ArgumentParser], None]
# name -> (add_args, run, one-line help, example epilog)
_COMMANDS: dict[str, tuple[AddArgs, Command, str, str]] = {}


def command(
    name: str, add_args: AddArgs, *, summary: str, example: str
) -> Callable[[Command], Command]:
    """Register a subcommand: ``add_args`` declares its flags, the function runs it; ``summary``
    is its one-line help and ``example`` the shell example shown under ``--help``."""

    def register(fn: Command) -> Command:
        _COMMANDS[name] = (add_args, fn, summary, example)
        return fn

    return register


# --------------------------------------------------------------------------- argument types
# Each raises argparse.ArgumentTypeError, which argparse reports as "argument --flag: message".


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def number(text: str) -> float:
    """Any finite number (coefficients may be negative)."""
    return _number(text)


def non_negative_float(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def top_p(text: str) -> float:
    value = _number(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def open_fraction(text: str) -> float:
    value = _number(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be in 0-65535 (0 picks a free port), got {value}")
    return value


def out_dir(text: str) -> str:
    """An output folder: created if missing, reused if present, never an existing file."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is an existing file, not a folder")
    return text


def out_file(text: str) -> str:
    """An output file: its folder must exist and it must not be a folder itself."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file path")
    parent = path.parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"folder {parent} does not exist")
    return text


def layers(flag: str) -> Callable[[str], Any]:
    """The type of a layer flag: :func:`~axislens.model.layers.parse_layers` syntax."""

    def parse(text: str) -> Any:
        from axislens.model.layers import parse_layers

        try:
            return parse_layers(text, flag)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err).removeprefix(f"{flag}: ")) from None

    parse.__name__ = "layers"
    return parse


def one_layer(flag: str) -> Callable[[str], int]:
    """The type of a flag naming a single layer (``7`` or ``-1``)."""

    def parse(text: str) -> int:
        spec = layers(flag)(text)
        if not (isinstance(spec, tuple) and len(spec) == 1):
            raise argparse.ArgumentTypeError(f"expected one layer such as 7 or -1, got {text!r}")
        return int(spec[0])

    parse.__name__ = "layer"
    return parse


# --------------------------------------------------------------------------- shared flag groups


def add_model_args(p: argparse.ArgumentParser, *, legacy_positional: bool = False) -> None:
    """``--model``, ``--device``, ``--dtype``: the same in every subcommand that loads a model."""
    if legacy_positional:  # 0.1 grammar: a positional model, kept for one release
        p.add_argument("legacy_model", nargs="?", default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        metavar="NAME",
        help="embedded name, local folder or hub id",
    )
    p.add_argument(
        "--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps"
    )
    p.add_argument("--dtype", default="float32", choices=DTYPES, help="model weights dtype")


def add_sampling_args(
    p: argparse.ArgumentParser, *, max_new_tokens: int | None, temperature: float = 0.0
) -> None:
    """``--max-new-tokens``, ``--temperature``, ``--top-p``, ``--seed`` (a SamplingConfig);
    ``max_new_tokens=None``: the command resolves an unset value itself."""
    p.add_argument(
        "--max-new-tokens",
        type=positive_int,
        default=max_new_tokens,
        help="tokens per reply"
        + (
            " (default: 128 for an embedded model on a CPU, else 512)"
            if max_new_tokens is None
            else ""
        ),
    )
    p.add_argument("--temperature", type=non_negative_float, default=temperature, help="0 = greedy")
    p.add_argument("--top-p", type=top_p, default=0.9, help="nucleus sampling mass, in (0, 1]")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")


def engine_url(text: str) -> str:
    """An OpenAI-compatible base URL, e.g. ``http://127.0.0.1:8000/v1``."""
    if not text.startswith(("http://", "https://")) or len(text.split("://", 1)[1]) < 1:
        from axislens.collection.engines import redact_url

        raise argparse.ArgumentTypeError(
            f"expected a URL such as http://127.0.0.1:8000/v1, got {redact_url(text)!r}"
        )
    return text


def add_engine_args(p: argparse.ArgumentParser, *, choice: bool = False) -> None:
    """``--engine-url``, ``--engine-model``, ``--engine-concurrency`` (and ``--engine`` with
    ``choice``): generation through an OpenAI-compatible server (vLLM, SGLang, TGI, ...)."""
    if choice:
        p.add_argument(
            "--engine",
            choices=("bridge", "openai"),
            default=None,
            help="who generates: the bridge (default), or an OpenAI-compatible server "
            "(default when --engine-url is given)",
        )
    p.add_argument(
        "--engine-url",
        type=engine_url,
        default=None,
        metavar="URL",
        help="generate through this OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1",
    )
    p.add_argument(
        "--engine-model", default=None, metavar="NAME", help="the model name the server serves"
    )
    p.add_argument(
        "--engine-concurrency",
        type=positive_int,
        default=64,
        help="requests in flight (fill the engine's batch)",
    )


def backend_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~axislens.collection.engines.OpenAIBackend` the engine flags name (or
    ``None`` for the bridge), checked to be reachable and serving ``--engine-model`` before any
    model is loaded."""
    from axislens.collection.engines import OpenAIBackend

    engine = getattr(args, "engine", None) or ("openai" if args.engine_url else "bridge")
    if engine == "bridge":
        if args.engine_url or args.engine_model:
            raise ValueError("--engine-url/--engine-model need --engine openai")
        return None
    if not args.engine_url:
        raise ValueError("--engine openai needs --engine-url (e.g. http://127.0.0.1:8000/v1)")
    if not args.engine_model:
        raise ValueError("--engine-url needs --engine-model (the name the server serves)")
    backend = OpenAIBackend(args.engine_url, args.engine_model, concurrency=args.engine_concurrency)
    backend.check_served()
    return backend


def sampling_from_args(args: argparse.Namespace) -> Any:
    from axislens.model.decoding import SamplingConfig

    return SamplingConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )


def check_device(device: str) -> None:
    """Raise ``ValueError`` naming ``--device`` unless torch can place a model on ``device``
    (:func:`main` has already turned ``auto`` into CUDA, MPS or the CPU)."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"--device: {device!r} is not a device ({err})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"--device {device}: this machine has {count} CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available on this machine")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {device}: expected cpu, cuda, cuda:N or mps")


def load_from_args(args: argparse.Namespace) -> Any:
    """Load the model named by ``--model``, ``--device`` and ``--dtype``."""
    import torch

    from axislens.model.loading import load_model

    return load_model(args.model, device=args.device, dtype=getattr(torch, args.dtype))


def load_direction(path: str) -> Any:
    """A Direction file (:meth:`Direction.save`), or a torch ``.pt`` tensor."""
    from axislens.directions import Direction

    return Direction.from_torch(path) if Path(path).suffix == ".pt" else Direction.load(path)


def check_cap_file(path: str, experiment: str | None) -> None:
    """Everything about ``--cap`` that can be checked before the model loads: a CapConfig file
    is read whole (with its direction); a ``capping_config.pt`` must exist and have
    ``--experiment`` (its layer count comes from the model)."""
    from axislens.directions import CapConfig

    if Path(path).suffix == ".pt":
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such capping config")
        if experiment is None:
            raise ValueError(f"{path}: a capping_config.pt needs --experiment (an id or an index)")
        return
    CapConfig.load(path)


def load_cap(path: str, experiment: str | None, n_layers: int) -> Any:
    """A CapConfig file (:meth:`CapConfig.save`), or a public ``capping_config.pt`` with
    ``--experiment`` (an id or an index)."""
    from axislens.directions import CapConfig

    if Path(path).suffix != ".pt":
        return CapConfig.load(path)
    if experiment is None:
        raise ValueError(f"{path}: a capping_config.pt needs --experiment (an id or an index)")
    exp: str | int = int(experiment) if experiment.lstrip("-").isdigit() else experiment
    return CapConfig.from_torch(path, exp, n_layers=n_layers)


# --------------------------------------------------------------------------- models, chat, demo


def _add_models_args(p: argparse.ArgumentParser) -> None:
    del p  # no flags


@command(
    "models",
    _add_models_args,
    summary="list the embedded models, whether they are prepared, and the cache folder",
    example="axislens models",
)
def _cmd_models(args: argparse.Namespace) -> int:
    from axislens.model.loading import EMBEDDED_MODELS, cache_dir

    print(f"cache: {cache_dir()}")
    for name, spec in EMBEDDED_MODELS.items():
        folder = cache_dir() / "models" / f"{name}-{spec.sha256[:12]}"
        prepared = (folder / "axislens-embedded.json").is_file()
        try:
            spec.part_paths()
            installed = "installed"
        except ValueError:
            installed = f"not installed ({spec.pip})"
        state = f"prepared at {folder}" if prepared else "not prepared"
        print(
            f"{name:30s} {'chat' if spec.chat else 'base':4s}  {installed}; {state}\n    {spec.description}"
        )
    return 0


def _add_chat_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p, legacy_positional=True)
    p.add_argument("message", help="the user message")
    p.add_argument("--system", default=None, help="system prompt")
    add_sampling_args(p, max_new_tokens=64)


@command(
    "chat",
    _add_chat_args,
    summary="answer one message with a chat model",
    example='axislens chat --model smollm2-135m-instruct "Who are you?"',
)
def _cmd_chat(args: argparse.Namespace) -> int:
    from axislens.model.chat import format_conversation
    from axislens.model.decoding import generate_text
    from axislens.model.loading import check_chat_model

    check_chat_model(args.model)  # a base model fails here, not after its conversion
    sampling = sampling_from_args(args)
    model = load_from_args(args)
    messages = ([{"role": "system", "content": args.system}] if args.system is not None else []) + [
        {"role": "user", "content": args.message}
    ]
    conv = format_conversation(model, messages, add_generation_prompt=True)
    print(generate_text(model, [conv], sampling)[0])
    return 0


# DemoConfig's defaults (a test checks they match), written out so --help needs no torch.
_DEMO = {
    "out": "demo-out",
    "n_roles": 48,
    "n_prompts": 2,
    "n_questions": 3,
    "n_default_prompts": 5,
    "n_default_questions": 36,
    "design": None,
    "max_new_tokens": 48,
    "batch_size": 16,
    "judge": "keep_all",
    "min_count": 3,
}


def _add_demo_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument(
        "--out", type=out_dir, default=_DEMO["out"], help="output folder (its store is reused)"
    )
    p.add_argument(
        "--roles",
        type=positive_int,
        default=_DEMO["n_roles"],
        help="number of roles (spread order)",
    )
    add_persona_args(
        p,
        {
            "n_prompts": _DEMO["n_prompts"],
            "n_questions": _DEMO["n_questions"],
            "default_prompts": _DEMO["n_default_prompts"],
            "default_questions": _DEMO["n_default_questions"],
        },
    )
    p.add_argument(
        "--max-new-tokens",
        type=positive_int,
        default=_DEMO["max_new_tokens"],
        help="tokens per response",
    )
    p.add_argument(
        "--batch-size", type=positive_int, default=_DEMO["batch_size"], help="sequences per batch"
    )
    p.add_argument(
        "--judge",
        choices=["keep_all", "model", "openai"],
        default=_DEMO["judge"],
        help="how role responses are scored",
    )
    p.add_argument(
        "--min-count", type=positive_int, default=_DEMO["min_count"], help="responses a role needs"
    )
    add_engine_args(p)
    p.add_argument(
        "--personas",
        default=None,
        metavar="PATH",
        help="persona catalogue folder: the axislens layout, or the paper's public data "
        "(the paper preset: its prompts, questions and rubrics verbatim); default: the shipped one",
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="paper scale (all roles, 5 prompts, 240 questions, bfloat16 on cuda); the scale "
        "flags are then ignored",
    )
    p.add_argument(
        "--yes",
        action="store_true",
        help="start a run too large for a CPU (the plan printed first says how large)",
    )


def field_docs(module: str, cls: str) -> dict[str, str]:
    """The ``Attributes:`` entries of class ``cls``'s docstring in ``axislens/<module>`` as
    plain text, read from the source with :mod:`ast` (importing the module would pull in torch,
    and ``--help`` must stay light): the flags' help comes from the config's field docs.

    Example:
        >>> field_docs("jobs/specs.py", "PersonaData")["n_questions"]
        'questions per role prompt.'
    """
    import ast
    import re

    tree = ast.parse((Path(__file__).resolve().parent.parent / module).read_text())
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
    doc = ast.get_docstring(node) or ""
    section = doc.split("Attributes:", 1)[1] if "Attributes:" in doc else ""
    out: dict[str, str] = {}
    name = None
    for line in section.splitlines():
        m = re.match(r"^    (\w+(?:, \w+)*): (.*)$", line)
        if m:
            name = m.group(1)
            out[name] = m.group(2)
        elif name is not None and line.startswith("        "):
            out[name] += " " + line.strip()
        elif line.strip():
            break
    plain = {k: re.sub(r":\w+:`~?(?:[\w.]*\.)?([^`]+)`", r"\1", v) for k, v in out.items()}
    return {k: v.replace("``", "") for k, v in plain.items()}


def add_persona_args(p: argparse.ArgumentParser, defaults: dict[str, Any]) -> None:
    """The persona-run flags of ``collect`` and ``demo`` (a
    :class:`~axislens.jobs.specs.PersonaData`), with ``defaults`` (keyed by field) and the
    help of the fields' docs; ``--roles`` is the command's own."""
    docs = field_docs("jobs/specs.py", "PersonaData")
    for flag, fld in (
        ("--prompts", "n_prompts"),
        ("--questions", "n_questions"),
        ("--default-prompts", "default_prompts"),
        ("--default-questions", "default_questions"),
    ):
        p.add_argument(flag, type=positive_int, default=defaults[fld], help=docs[fld])
    add_design_arg(p)


def add_design_arg(p: argparse.ArgumentParser) -> None:
    """``--design shared|rotated|nested``: which questions each side answers."""
    p.add_argument(
        "--design",
        choices=["shared", "rotated", "nested"],
        default=None,
        help="which questions the roles and the default set answer: shared (the same ones), "
        "rotated (each role a cyclic block of the default set's), nested (0.2's unbalanced "
        "design); default: shared when --questions equals --default-questions, else rotated",
    )


def check_design(
    personas: Any,
    roles: Any,
    design: str | None,
    n_questions: int,
    default_questions: int | None,
) -> None:
    """Raise ``ValueError`` naming the flags when ``--design`` cannot take these counts (a
    rotated design that cannot balance names ``--default-questions``/``--roles`` values that
    would). ``roles`` as :func:`check_catalogue` takes it."""
    from axislens.personas.designs import UnbalancedDesignError, resolve_design

    names = personas.pick_roles(roles)
    n_roles = len(names) if names is not None else len(personas.roles)
    d_q = n_questions if default_questions is None else default_questions
    chosen = resolve_design(design, n_questions, d_q)
    try:
        chosen.assign(n_roles, n_questions, d_q)
    except UnbalancedDesignError as err:
        fix = f"--default-questions {' or '.join(str(d) for d in err.default_questions)}"
        if err.roles is not None:
            fix += f", or --roles {err.roles}"
        raise ValueError(
            f"--design rotated: {n_roles} roles x --questions {n_questions} cannot cover "
            f"--default-questions {d_q} equally; use {fix}"
        ) from None
    except ValueError:
        raise ValueError(
            f"--design {chosen.name}: --default-questions ({d_q}) must equal --questions "
            f"({n_questions})"
        ) from None


def check_catalogue(personas: Any, roles: Any, n_prompts: int, n_questions: int) -> None:
    """Raise ``ValueError`` naming ``--roles``/``--prompts``/``--questions`` when the catalogue
    cannot supply them."""
    names = personas.pick_roles(roles)
    chosen = [personas.role(n) for n in names] if names is not None else list(personas.roles)
    have = min(len(r.system_prompts) for r in chosen)
    if n_prompts > have:
        raise ValueError(f"--prompts {n_prompts}: the roles have only {have} system prompts each")
    if n_questions > len(personas.questions):
        raise ValueError(
            f"--questions {n_questions}: the catalogue has {len(personas.questions)} questions"
        )


def check_defaults(personas: Any, n_prompts: int, n_questions: int) -> None:
    """Raise ``ValueError`` naming ``--default-prompts``/``--default-questions`` when the
    catalogue cannot supply them."""
    have = len(personas.default.system_prompts)
    if n_prompts > have:
        raise ValueError(f"--default-prompts {n_prompts}: the catalogue has {have} default prompts")
    if n_questions > len(personas.questions):
        raise ValueError(
            f"--default-questions {n_questions}: the catalogue has {len(personas.questions)} "
            "questions"
        )


@command(
    "demo",
    _add_demo_args,
    summary="the whole study on a small model: collect, axis, steer, cap, drift report",
    example="axislens demo --model smollm2-135m-instruct --out demo-out --roles 24",
)
def _cmd_demo(args: argparse.Namespace) -> int:
    from axislens.collection.plan import collect_plan
    from axislens.jobs.demo import DemoConfig, run_demo
    from axislens.personas import load_personas

    personas = load_personas(args.personas)
    if not args.full:
        check_catalogue(personas, args.roles, args.prompts, args.questions)
        check_defaults(personas, args.default_prompts, args.default_questions)
        check_design(personas, args.roles, args.design, args.questions, args.default_questions)
    backend = backend_from_args(args)
    engine = (
        {
            "engine_url": backend.base_url,
            "engine_model": backend.model,
            "engine_concurrency": backend.concurrency,
        }
        if backend is not None
        else {}
    )
    small = DemoConfig(
        model=args.model,
        out=args.out,
        n_roles=args.roles,
        n_prompts=args.prompts,
        n_questions=args.questions,
        n_default_prompts=args.default_prompts,
        n_default_questions=args.default_questions,
        design=args.design,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        judge=args.judge,
        min_count=args.min_count,
        device=args.device,
        dtype=args.dtype,
        personas=args.personas,
        **engine,
    )
    cfg = (
        DemoConfig.full(model=args.model, out=args.out, personas=args.personas, **engine)
        if args.full
        else small
    )
    plan = collect_plan(
        personas,
        cfg.n_roles,
        n_prompts=cfg.n_prompts,
        n_questions=cfg.n_questions,
        max_new_tokens=cfg.max_new_tokens,
        device="engine" if backend is not None else cfg.device,
        command="demo",
        default_prompts=cfg.n_default_prompts,
        default_questions=cfg.n_default_questions,
        design=cfg.design,
    )
    print(plan.describe(), flush=True)
    plan.check(args.yes)
    run_demo(cfg)
    return 0


# --------------------------------------------------------------------------- parser and main

_PLUGINS = (
    "axislens.cli.collect",
    "axislens.cli.axis",
    "axislens.cli.steer",
    "axislens.cli.monitor",
    "axislens.cli.serve",
    "axislens.cli.export",
    "axislens.cli.store",
)


def _one_line_errors(p: argparse.ArgumentParser) -> None:
    """Report a parse error as the single line ``<prog>: error: <message>``, exit status 2."""

    def error(message: str) -> NoReturn:
        print(f"{p.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)

    p.error = error  # type: ignore[method-assign]


def _show_defaults(p: argparse.ArgumentParser) -> None:
    """Append ``(default: ...)`` to every flag's help, as ArgumentDefaultsHelpFormatter does
    (that formatter would rewrap the example epilog)."""
    for action in p._actions:
        default = action.default
        if not action.option_strings or default is None or default is False:
            continue
        if default == argparse.SUPPRESS or "%(default)" in (action.help or ""):
            continue
        if action.help is None:
            action.help = "(default: %(default)s)"
        elif action.help != argparse.SUPPRESS:
            action.help = f"{action.help} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    """The ``axislens`` parser with every subcommand registered."""
    import importlib

    from axislens.version import __version__

    for module in _PLUGINS:  # each registers its subcommands with @command
        importlib.import_module(module)
    parser = argparse.ArgumentParser(
        prog="axislens",
        description="Find, steer and cap the Assistant Axis. "
        "Run `axislens <command> --help` for a command's flags and an example.",
    )
    parser.add_argument("--version", action="version", version=f"axislens {__version__}")
    _one_line_errors(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for name, (add_args, _fn, summary, example) in _COMMANDS.items():
        p = sub.add_parser(
            name,
            help=summary,
            description=summary[0].upper() + summary[1:] + ".",
            epilog="example:\n  " + example.replace("\n", "\n  "),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_args(p)
        _show_defaults(p)
        _one_line_errors(p)
    return parser


def _legacy_model(args: argparse.Namespace) -> None:
    legacy = getattr(args, "legacy_model", None)
    if legacy is None:
        return
    if args.model != DEFAULT_MODEL:
        raise ValueError(f"the model is given twice ({legacy!r} and --model {args.model!r})")
    print(
        f"axislens {args.command}: note: a positional model is deprecated; use --model {legacy}",
        file=sys.stderr,
    )
    args.model = legacy


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``axislens`` with ``argv`` (default: the process's); returns the exit status."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
    except SystemExit as stop:  # --help, --version, or a bad argument (already reported)
        return stop.code if isinstance(stop.code, int) else 0
    if extra:
        print(
            f"axislens {args.command}: error: unrecognized arguments: {' '.join(extra)}",
            file=sys.stderr,
        )
        return 2
    fn = _COMMANDS[args.command][1]
    try:
        _legacy_model(args)
        if hasattr(args, "device"):
            if args.device == "auto":  # one concrete device from here on (batch sizes, ranks)
                from axislens.model.loading import auto_device

                args.device = auto_device()
            check_device(args.device)
        return fn(args)
    except (ValueError, KeyError, OSError) as err:
        # Our errors are one line naming what is wrong; no stack trace for bad input.
        text = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"axislens {args.command}: error: {text}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

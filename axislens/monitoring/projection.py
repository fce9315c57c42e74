"""Persona drift over conversations: transcripts, drift trajectories and a live chat monitor.

- :func:`load_transcript` reads a conversation (the paper's published transcript layout,
  ``{"conversation": [{"role", "content"}, ...], ...metadata}``, or JSONL with one message per
  line) and checks it (:class:`TranscriptError` names the file and the message index).
- :func:`project_conversation` runs a conversation through the model **once** and returns a
  :class:`DriftTrajectory`: for every assistant (and user) turn, the projection ``h·v̂_l`` of each
  content token on the unit axis at each requested layer, the per-turn means and the token spans.
  Projections are computed inside the hooks (``[pos]`` per layer, never a cache of activations)
  and the forward stops right after the last layer needed.
- :func:`axislens.monitoring.session.chat_session` (next stage) holds a live, monitored chat with an
  optional conditional cap.

Example:
    Needs a real model (not run by the doctest suite).

    >>> axis = Direction.load("runs/smollm2/axis.safetensors")  # doctest: +SKIP
    >>> tr = load_transcript("transcripts/jailbreak_capped.json")  # doctest: +SKIP
    >>> traj = project_conversation(model, axis, tr.messages, layers=[15, 20])  # doctest: +SKIP
    >>> traj.turn_means.shape  # [turn, layer]  # doctest: +SKIP
    torch.Size([5, 2])
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import torch

from axislens._types import Float, Tensor
from axislens.directions import Direction
from axislens.display import compact_repr, html_summary
from axislens.model.chat import (
    MessageSpan,
    fit_to_context,
)
from axislens.model.layers import hook_name, resolve_layers
from axislens.model.protocol import Model
from axislens.store import atomic_write_json

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DriftTrajectory",
    "Transcript",
    "TranscriptError",
    "TurnProjection",
    "check_conversation",
    "load_transcript",
    "project_conversation",
]

TRAJECTORY_FORMAT = "axislens.drift_trajectory"
_ROLES = ("system", "user", "assistant")


# --------------------------------------------------------------------------------------------
# Transcripts
# --------------------------------------------------------------------------------------------


class TranscriptError(ValueError):
    """A transcript or message list is malformed; names the file and the message index."""


def check_conversation(messages: Any, *, where: str = "messages") -> list[dict[str, str]]:
    """Check a conversation and return plain ``{"role", "content"}`` dicts.

    Rules: a non-empty list; roles system/user/assistant; non-empty string contents; a system
    message only first; never two user (or two assistant) messages in a row.

    Example:
        >>> check_conversation([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
        Traceback (most recent call last):
        ...
        axislens.monitoring.projection.TranscriptError: messages: message 1: two consecutive user turns
    """
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise TranscriptError(
            f"{where}: expected a list of messages, got {type(messages).__name__}"
        )
    if not messages:
        raise TranscriptError(f"{where}: the conversation is empty")
    out: list[dict[str, str]] = []
    for i, msg in enumerate(messages):
        at = f"{where}: message {i}"
        if not isinstance(msg, Mapping):
            raise TranscriptError(f"{at}: expected an object with 'role' and 'content'")
        role, content = msg.get("role"), msg.get("content")
        if role not in _ROLES:
            raise TranscriptError(f"{at}: unknown role {role!r}; expected one of {_ROLES}")
        if not isinstance(content, str):
            raise TranscriptError(f"{at} ({role}): content must be a string")
        if not content.strip():
            raise TranscriptError(f"{at} ({role}): empty content")
        if role == "system" and i != 0:
            raise TranscriptError(f"{at}: a system message is only allowed first")
        if out and out[-1]["role"] == role:
            raise TranscriptError(f"{at}: two consecutive {role} turns")
        out.append({"role": str(role), "content": content})
    return out


@dataclass(frozen=True, slots=True)
class Transcript:
    """A checked conversation and the metadata that came with it (model, domain, persona,
    steering settings...). ``messages`` and ``metadata`` are read-only."""

    messages: tuple[Mapping[str, str], ...]
    metadata: Mapping[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def __post_init__(self) -> None:
        where = str(self.path) if self.path is not None else "transcript"
        msgs = check_conversation(list(self.messages), where=where)
        object.__setattr__(self, "messages", tuple(MappingProxyType(m) for m in msgs))
        object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))

    def __len__(self) -> int:
        return len(self.messages)

    @property
    def system(self) -> str | None:
        """The system prompt: a leading system message, else a ``"system_prompt"`` metadata
        string (the published layout keeps it there), else ``None``."""
        if self.messages[0]["role"] == "system":
            return self.messages[0]["content"]
        sp = self.metadata.get("system_prompt")
        return sp if isinstance(sp, str) and sp.strip() else None

    @property
    def user_turns(self) -> tuple[str, ...]:
        """The user messages, in order (what ``axislens monitor --script`` replays)."""
        return tuple(m["content"] for m in self.messages if m["role"] == "user")


def _is_shipped_script(name: str) -> bool:
    from importlib import resources

    return resources.files("axislens").joinpath(f"data/conversations/{name}.json").is_file()


def load_transcript(path: str | Path) -> Transcript:
    """Read a transcript: JSON ``{"conversation": [...], ...metadata}`` (a ``"messages"`` list or
    a bare list are accepted too) or JSONL (``.jsonl``: one ``{"role", "content"}`` per line).

    Raises:
        TranscriptError: unreadable JSON, no message list, unknown role, empty content, two
            consecutive user/assistant turns, a system message not first; the message names the
            file and the message index, e.g. ``chat.json: message 4: two consecutive user turns``.
    """
    path = Path(path)
    if not path.exists() and path.parent == Path(".") and _is_shipped_script(path.stem):
        raise TranscriptError(
            f"{path}: not a file; {path.stem!r} is a shipped replay script (user turns only, no "
            f"replies to project): replay it with `axislens monitor --script {path.stem}` or "
            f"axislens.monitoring.load_script({path.stem!r})"
        )
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such transcript file")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        messages: list[Any] = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    messages.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise TranscriptError(f"{path}: line {n}: not valid JSON ({err.msg})") from None
        return Transcript(tuple(messages), {}, path)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise TranscriptError(
            f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})"
        ) from None
    if isinstance(obj, list):
        return Transcript(tuple(obj), {}, path)
    key = next((k for k in ("conversation", "messages") if isinstance(obj, dict) and k in obj), "")
    if not key or not isinstance(obj[key], list):
        raise TranscriptError(f"{path}: expected a JSON object with a 'conversation' list")
    meta = {k: v for k, v in obj.items() if k != key}
    return Transcript(tuple(obj[key]), meta, path)


# --------------------------------------------------------------------------------------------
# Trajectories
# --------------------------------------------------------------------------------------------


def _nan_mean(x: Tensor) -> Tensor:
    """Row means in float64 (NaN for an empty row)."""
    return x.double().mean(-1) if x.shape[-1] else torch.full(x.shape[:-1], math.nan).double()


@dataclass(frozen=True, slots=True, eq=False)
class TurnProjection:
    """Per-token projections of one message's content tokens.

    ``start``/``end``: the ``[start, end)`` token span in the sequence it was measured in (the
    formatted conversation; for a chat session, the prompt + reply of that turn).
    ``projections``: ``[layer, pos]`` float32, rows in the trajectory's layer order.
    ``capped_from``: index of the first token whose activations were capped (sessions only).
    """

    role: str
    turn: int
    message_index: int
    start: int
    end: int
    tokens: tuple[str, ...]
    projections: Float[Tensor, "layer pos"]
    capped_from: int | None = None

    @property
    def capped(self) -> bool:
        return self.capped_from is not None

    @property
    def span(self) -> MessageSpan:
        return MessageSpan(self.role, self.message_index, self.turn, self.start, self.end)

    @property
    def mean(self) -> Float[Tensor, " layer"]:
        """Mean over the tokens, float64 (NaN for an empty message)."""
        return _nan_mean(self.projections)

    def to_dict(self) -> dict[str, Any]:
        mean = [None if math.isnan(x) else x for x in self.mean.tolist()]
        return {
            "role": self.role,
            "turn": self.turn,
            "message_index": self.message_index,
            "start": self.start,
            "end": self.end,
            "capped_from": self.capped_from,
            "mean": mean,
            "tokens": list(self.tokens),
            "projections": self.projections.tolist(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], n_layers: int) -> TurnProjection:
        proj = torch.tensor(d["projections"], dtype=torch.float32).reshape(n_layers, -1)
        return cls(
            str(d["role"]),
            int(d["turn"]),
            int(d["message_index"]),
            int(d["start"]),
            int(d["end"]),
            tuple(d["tokens"]),
            proj,
            d.get("capped_from"),
        )


@dataclass(frozen=True, slots=True, eq=False)
class DriftTrajectory:
    """Projection on the axis along a conversation, per turn and per token.

    Fields:
        layers: the layers measured (rows of every ``projections`` tensor, columns of means).
        hook: the hook point (``blocks.{l}.hook_{hook}``).
        assistant / user: one :class:`TurnProjection` per message of that role that was measured.
        messages: the conversation (for a session: as generated).
        dropped_turns: turns left out because the conversation was longer than the context.
        metadata: JSON-able provenance (model, axis, cap and sampling settings).

    Example:
        Needs a real model (not run by the doctest suite).

        >>> traj.turns, traj.means(15)  # doctest: +SKIP
        ((0, 1, 2), [21.3, 18.9, 12.4])
    """

    layers: tuple[int, ...]
    hook: str
    assistant: tuple[TurnProjection, ...]
    user: tuple[TurnProjection, ...] = ()
    messages: tuple[Mapping[str, str], ...] = ()
    dropped_turns: tuple[int, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def turns(self) -> tuple[int, ...]:
        """Turn number of each assistant turn (a user message and its reply share a turn)."""
        return tuple(t.turn for t in self.assistant)

    @property
    def spans(self) -> tuple[MessageSpan, ...]:
        return tuple(t.span for t in self.assistant)

    @property
    def token_projections(self) -> tuple[Float[Tensor, "layer pos"], ...]:
        return tuple(t.projections for t in self.assistant)

    @property
    def tokens(self) -> tuple[tuple[str, ...], ...]:
        return tuple(t.tokens for t in self.assistant)

    @property
    def turn_means(self) -> Float[Tensor, "turn layer"]:
        """Mean projection of each assistant turn at each layer (float64)."""
        return _stack_means(self.assistant, len(self.layers))

    @property
    def user_means(self) -> Float[Tensor, "turn layer"]:
        """Mean projection of each user message at each layer (float64)."""
        return _stack_means(self.user, len(self.layers))

    def layer_index(self, layer: int) -> int:
        if layer not in self.layers:
            raise ValueError(
                f"layer {layer} was not measured; measured layers: {list(self.layers)}"
            )
        return self.layers.index(layer)

    def to_pandas(self) -> pd.DataFrame:
        """One row per measured message and layer: ``turn``, ``role``, ``layer``, ``mean``
        projection, ``tokens`` and ``capped``."""
        import pandas as pd

        rows = [
            {
                "turn": t.turn,
                "role": t.role,
                "layer": layer,
                "mean": float(t.mean[k]),
                "tokens": len(t.tokens),
                "capped": t.capped,
            }
            for t in sorted((*self.assistant, *self.user), key=lambda t: t.message_index)
            for k, layer in enumerate(self.layers)
        ]
        return pd.DataFrame(rows, columns=["turn", "role", "layer", "mean", "tokens", "capped"])

    def _facts(self) -> list[tuple[str, Any]]:
        first = self.means(self.layers[0]) if self.assistant and self.layers else []
        return [
            ("layers", list(self.layers)),
            ("hook", self.hook),
            ("assistant turns", len(self.assistant)),
            ("user turns", len(self.user)),
            ("dropped turns", len(self.dropped_turns)),
            (
                f"first/last turn mean (L{self.layers[0]})" if first else "turn means",
                ([first[0], first[-1]] if first else None),
            ),
        ]

    def __repr__(self) -> str:
        return compact_repr("DriftTrajectory", self._facts())

    def _repr_html_(self) -> str:
        return html_summary("DriftTrajectory", self._facts(), self.to_pandas())

    def means(self, layer: int) -> list[float]:
        """Per-assistant-turn means at ``layer`` as floats."""
        return self.turn_means[:, self.layer_index(layer)].tolist()

    def turn(self, turn: int, role: str = "assistant") -> TurnProjection:
        """The :class:`TurnProjection` of ``role`` in turn number ``turn``."""
        items = self.assistant if role == "assistant" else self.user
        for t in items:
            if t.turn == turn:
                return t
        raise KeyError(f"no {role} turn {turn}; turns: {[t.turn for t in items]}")

    def to_dict(self) -> dict[str, Any]:
        from axislens.directions import axislens_version

        return {
            "format": TRAJECTORY_FORMAT,
            "format_version": 1,
            "conversation": [dict(m) for m in self.messages],
            "layers": list(self.layers),
            "hook": self.hook,
            "dropped_turns": list(self.dropped_turns),
            "metadata": dict(self.metadata),
            "axislens_version": axislens_version(),
            "assistant": [t.to_dict() for t in self.assistant],
            "user": [t.to_dict() for t in self.user],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DriftTrajectory:
        if d.get("format") != TRAJECTORY_FORMAT:
            raise ValueError(f"not an axislens drift trajectory (no format={TRAJECTORY_FORMAT!r})")
        n = len(d["layers"])
        return cls(
            tuple(int(x) for x in d["layers"]),
            str(d["hook"]),
            tuple(TurnProjection.from_dict(t, n) for t in d["assistant"]),
            tuple(TurnProjection.from_dict(t, n) for t in d.get("user", [])),
            tuple(MappingProxyType(dict(m)) for m in d.get("conversation", [])),
            tuple(d.get("dropped_turns", [])),
            MappingProxyType(dict(d.get("metadata", {}))),
        )

    def save(self, path: str | Path) -> Path:
        """Write JSON atomically. The file is also a transcript: :func:`load_transcript` reads
        its ``"conversation"``."""
        path = Path(path)
        atomic_write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, path: str | Path) -> DriftTrajectory:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: {err}") from None


def _stack_means(items: Sequence[TurnProjection], n_layers: int) -> Tensor:
    if not items:
        return torch.empty(0, n_layers, dtype=torch.float64)
    return torch.stack([t.mean for t in items])


# --------------------------------------------------------------------------------------------
# Projecting a conversation (one forward pass)
# --------------------------------------------------------------------------------------------


class _Stop(Exception):
    """Raised by the last needed hook to end the forward pass early."""


def _turn_numbers(messages: Sequence[Mapping[str, str]]) -> list[int]:
    """MessageSpan's convention: each user message starts a turn; a reply shares it."""
    out, users = [], 0
    for m in messages:
        users += m["role"] == "user"
        out.append(max(users - 1, 0))
    return out


def _units(direction: Direction, layers: Sequence[int], model: Model) -> list[Tensor]:
    """Unit vectors, each on the device of its layer (models split over GPUs)."""
    from axislens.model.layers import layer_device

    return [direction.unit(layer).to(layer_device(model, layer)) for layer in layers]


def _decode_each(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    return list(tokenizer.batch_decode([[int(i)] for i in ids])) if len(ids) else []


@torch.no_grad()
def _token_projections(
    model: Model, ids: Tensor, units: Sequence[Tensor], layers: Sequence[int], hook: str
) -> Tensor:
    """``[len(layers), pos]`` float32 projections from one forward that stops after the last
    needed layer."""
    device = model.cfg.device
    out = torch.empty(len(layers), len(ids), dtype=torch.float32, device=device)
    last = max(layers)

    def make(j: int, layer: int) -> Any:
        def fn(act: Tensor, hook: Any) -> None:
            out[j] = act[0].float() @ units[j]
            if layer == last:
                raise _Stop

        return fn

    fwd = [(hook_name(hook, layer), make(j, layer)) for j, layer in enumerate(layers)]
    try:
        with model.hooks(fwd_hooks=fwd):
            model(ids[None].to(device), return_type=None)
    except _Stop:
        pass
    else:
        raise RuntimeError(f"the hook at layer {last} never fired")
    return out.cpu()


def _check_axis(model: Model, axis: Direction, hook: str | None) -> str:
    if not isinstance(axis, Direction):
        raise TypeError(f"axis must be a Direction, got {type(axis).__name__}")
    axis.check_compatible(d_model=int(model.cfg.d_model), n_layers=int(model.cfg.n_layers))
    hook = axis.hook if hook is None else hook
    if hook_name(hook, 0) not in model.hook_dict:
        raise ValueError(f"the model has no hook point {hook_name(hook, 0)!r}")
    return hook


def _model_meta(model: Model, axis: Direction) -> dict[str, Any]:
    from axislens.model.loading import model_provenance

    return {
        "model": model_provenance(model).to_dict(),
        "axis": {"method": axis.method, "hook": axis.hook, "provenance": dict(axis.provenance)},
    }


def project_conversation(
    model: Model,
    axis: Direction,
    messages: Sequence[Mapping[str, str]] | Transcript,
    *,
    layers: Sequence[int] | slice | range | None,
    hook: str | None = None,
    max_tokens: int | None = None,
) -> DriftTrajectory:
    """Project every content token of a conversation on the unit axis, in one forward pass.

    Args:
        model: the loaded model the conversation is run through.
        axis: the direction (its unit vector ``v̂_l`` is used at each layer).
        messages: a message list or a :class:`Transcript` (checked with
            :func:`check_conversation`).
        layers: layers to measure (negative indices allowed; ``None`` = all).
        hook: hook point (default ``axis.hook``, e.g. ``"resid_post"``).
        max_tokens: context limit (default the model's ``n_ctx``). A longer conversation loses
            whole leading exchanges (the system message stays) with a warning; the dropped turns
            are recorded in ``dropped_turns``.

    Returns a :class:`DriftTrajectory` whose turn numbers and message indices refer to the
    conversation as given.
    """
    msgs = check_conversation(
        list(messages.messages) if isinstance(messages, Transcript) else messages
    )
    hook = _check_axis(model, axis, hook)
    layer_t = resolve_layers(layers, int(model.cfg.n_layers))
    limit = int(max_tokens or model.cfg.n_ctx)
    conv, dropped, full = fit_to_context(model, msgs, limit)
    turns = _turn_numbers(msgs)
    has_system = msgs[0]["role"] == "system"
    dropped_turns: tuple[int, ...] = ()
    if dropped:
        first = int(has_system)
        dropped_turns = tuple(
            turns[i] for i in range(first, first + dropped) if msgs[i]["role"] == "assistant"
        )
        warnings.warn(
            f"the conversation is longer than the context ({full} tokens > {limit}); dropped "
            f"its first {dropped} messages (assistant turns {list(dropped_turns)}) and projected "
            "the turns that fit",
            UserWarning,
            stacklevel=2,
        )
    proj = _token_projections(model, conv.input_ids, _units(axis, layer_t, model), layer_t, hook)
    spans = [s for s in conv.spans if s.role in ("user", "assistant")]
    ids = conv.input_ids.tolist()
    strings = _decode_each(model.tokenizer, [i for s in spans for i in ids[s.start : s.end]])
    items: dict[str, list[TurnProjection]] = {"user": [], "assistant": []}
    k = 0
    for s in spans:
        index = s.index if has_system and s.index == 0 else s.index + dropped
        items[s.role].append(
            TurnProjection(
                s.role,
                turns[index],
                index,
                s.start,
                s.end,
                tuple(strings[k : k + len(s)]),
                proj[:, s.start : s.end].clone(),
            )
        )
        k += len(s)
    return DriftTrajectory(
        layer_t,
        hook,
        tuple(items["assistant"]),
        tuple(items["user"]),
        tuple(MappingProxyType(m) for m in msgs),
        dropped_turns,
        MappingProxyType({**_model_meta(model, axis), "n_tokens": len(conv)}),
    )

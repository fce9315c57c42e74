"""Replay scripts: the user turns of a conversation to replay against a model
(``axislens monitor --script``, the demo's drift replay), from a transcript, a JSON file, or a
conversation shipped in ``axislens/data/conversations``.

Example:
    >>> turns, system, meta, source = load_script("philosophy_drift")
    >>> len(turns) > 3 and meta["domain"]
    'philosophy-of-AI'
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from axislens.monitoring.projection import TranscriptError, load_transcript

__all__ = ["builtin_conversation", "load_script", "shipped_conversations"]


def shipped_conversations() -> list[str]:
    """The names of the shipped conversations.

    Example:
        >>> "therapy_drift" in shipped_conversations()
        True
    """
    folder = resources.files("axislens").joinpath("data/conversations")
    return sorted(f.name[:-5] for f in folder.iterdir() if f.name.endswith(".json"))


def builtin_conversation(name: str = "philosophy_drift") -> dict[str, Any]:
    """A shipped replay script (``user_turns`` + metadata) from ``axislens/data/conversations``.

    Example:
        >>> builtin_conversation("coding_control")["domain"]
        'coding'
    """
    text = resources.files("axislens").joinpath(f"data/conversations/{name}.json").read_text()
    return dict(json.loads(text))


def load_script(spec: str) -> tuple[tuple[str, ...], str | None, dict[str, Any], str]:
    """``(user turns, system prompt, metadata, source)`` of a replay script: a transcript file
    (read by :func:`~axislens.monitoring.projection.load_transcript`), a JSON file with a
    ``"user_turns"`` list (the layout of the shipped conversations), or the name of a shipped
    conversation (``philosophy_drift``, ``therapy_drift``, ``coding_control``,
    ``writing_control``).
    """
    path = Path(spec)
    obj: Any = None
    if not path.exists():
        name = path.stem if path.suffix in ("", ".json") else spec
        if path.parent != Path(".") or name not in shipped_conversations():
            raise FileNotFoundError(
                f"{spec}: no such file, and no shipped conversation of that name "
                f"(shipped: {', '.join(shipped_conversations())})"
            )
        obj = builtin_conversation(name)
        source = f"axislens/data/conversations/{name}.json"
    else:
        source = str(path)
        if path.suffix == ".json":
            try:
                obj = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                obj = None  # load_transcript reports it, naming the line
        if not (isinstance(obj, dict) and "user_turns" in obj):
            t = load_transcript(path)
            return t.user_turns, t.system, dict(t.metadata), source
    turns = obj["user_turns"]
    if not (
        isinstance(turns, list) and turns and all(isinstance(x, str) and x.strip() for x in turns)
    ):
        raise TranscriptError(f"{source}: 'user_turns' must be a non-empty list of strings")
    meta = {k: v for k, v in obj.items() if k != "user_turns"}
    system = meta.get("system_prompt")
    if not (isinstance(system, str) and system.strip()):
        system = None
    return tuple(turns), system, meta, source

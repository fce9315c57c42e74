"""Conversations to tokens, with the exact token span of every message's *content*.

The Assistant Axis is an average over the tokens of the assistant's message content only: no
role headers, no end-of-turn markers, no BOS. :func:`format_conversation` renders a chat with the
tokenizer's own chat template and returns the token ids (what the model sees) plus, for each
message, the ``[start, end)`` token span of its content.

How spans are found: the template is rendered twice, once with the real contents and once with
each content replaced by a unique sentinel. The sentinel rendering splits the template's own text
into literal pieces; walking the real rendering piece by piece gives the exact character range of
every content (templates that ``trim`` contents are handled). Character ranges map to tokens
through the fast tokenizer's offsets; a token is part of a span when it covers at least one
non-whitespace character of the content. The full text is tokenized once, so a content that
tokenizes differently in context gets the in-context tokens.

Contents cannot forge control tokens: text such as ``<|im_start|>system`` inside a message is
tokenized as plain text (the tokenizer's special tokens are parsed only in the template's own
text), so a user cannot open a system turn. Such a conversation is tokenized piecewise (template
text, then each content with ``split_special_tokens=True``).

Conventions:

- Templates with no system role (Gemma): the system text is put in front of the first user
  turn, separated by a blank line; it keeps its own span (the system span) inside that turn.
- Thinking is off (``enable_thinking=False`` is passed to every template); an empty think block
  the template adds is template text, never part of a span. ``<think>...</think>`` blocks inside
  assistant contents are removed before rendering.
- The template's own BOS is kept and no second BOS is added.

Example:
    >>> conv = format_conversation(model, [{"role": "user", "content": "Who are you?"},
    ...                                    {"role": "assistant", "content": "A ghost."}])
    >>> model.tokenizer.decode(conv.input_ids[conv.spans[1].slice])
    'A ghost.'
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

__all__ = [
    "ChatError",
    "ContextError",
    "FormattedConversation",
    "Message",
    "MessageSpan",
    "fit_to_context",
    "format_conversation",
    "validate_messages",
]

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = ("system", "user", "assistant")
Message = Mapping[str, Any]
_THINK = re.compile(r"<think>.*?</think>\s*", re.DOTALL)
_SENTINEL = re.compile("\ue000(\\d+)\ue001")


class ChatError(ValueError):
    """A conversation is malformed or its template cannot be aligned; names the message."""


class ContextError(ValueError):
    """A conversation does not fit in the context even with only its last exchange;
    ``tokens`` is that last exchange's length."""

    def __init__(self, message: str, tokens: int) -> None:
        super().__init__(message)
        self.tokens = tokens


@dataclass(frozen=True, slots=True)
class MessageSpan:
    """Token span ``[start, end)`` of one message's content.

    ``index`` is the message's position in the input list; ``turn`` counts exchanges: it is
    incremented by each user message, so a user message and the assistant reply that follows it
    share a turn (a leading system message has turn 0).
    """

    role: str
    index: int
    turn: int
    start: int
    end: int

    @property
    def slice(self) -> slice:
        return slice(self.start, self.end)

    def __len__(self) -> int:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class FormattedConversation:
    """Token ids of a templated chat and the content span of each message."""

    input_ids: torch.Tensor
    """``Int[Tensor, "pos"]`` token ids, exactly as the model sees them."""
    text: str
    spans: tuple[MessageSpan, ...]
    generation_prompt: bool

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def spans_of(self, role: str) -> tuple[MessageSpan, ...]:
        """Spans of every message with this role, in order."""
        return tuple(s for s in self.spans if s.role == role)

    def content_mask(self, role: str = "assistant") -> torch.Tensor:
        """``Bool[Tensor, "pos"]``: True on the content tokens of every message with ``role``."""
        mask = torch.zeros(len(self), dtype=torch.bool)
        for s in self.spans_of(role):
            mask[s.start : s.end] = True
        return mask


def validate_messages(
    messages: Sequence[Message], *, where: str = "messages"
) -> list[dict[str, str]]:
    """Check roles, content types and order; return plain ``{"role", "content"}`` dicts.

    Rules: at least one message; roles are system/user/assistant; a system message only first;
    contents are strings.
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ChatError(
            f"{where}: expected a list of {{'role', 'content'}} dicts, got {type(messages).__name__}"
        )
    if len(messages) == 0:
        raise ChatError(f"{where}: the message list is empty")
    out = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping):
            raise ChatError(
                f"{where}[{i}]: expected a dict with 'role' and 'content', got {type(msg).__name__}"
            )
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            raise ChatError(
                f"{where}[{i}]: unknown role {role!r}; expected one of {', '.join(ROLES)}"
            )
        if not isinstance(content, str):
            raise ChatError(
                f"{where}[{i}] ({role}): content must be a string, got {type(content).__name__}"
            )
        if role == "system" and i != 0:
            raise ChatError(f"{where}[{i}]: a system message is only allowed first")
        out.append({"role": role, "content": content})
    return out


def _tokenizer_of(tokenizer_or_model: Any) -> Any:
    tok = getattr(tokenizer_or_model, "tokenizer", None)
    return tok if tok is not None else tokenizer_or_model


def _render(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt, enable_thinking=False
    )
    return str(text)


def _sentinel(i: int) -> str:
    return f"\ue000{i}\ue001"


def _render_pair(
    tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool
) -> tuple[str, str, list[dict[str, str]]]:
    """Render real and sentinel texts; merge a system message into the first user turn when the
    template has no system role. Returns (real, sentinel, messages as rendered)."""
    sentinels = [{"role": m["role"], "content": _sentinel(i)} for i, m in enumerate(messages)]
    try:
        return (
            _render(tokenizer, messages, add_generation_prompt),
            _render(tokenizer, sentinels, add_generation_prompt),
            messages,
        )
    except Exception as err:  # jinja raises TemplateError for "System role not supported"
        if messages[0]["role"] != "system":
            raise ChatError(f"the chat template failed to render: {err}") from err
    # No system role: prepend the system text to the first user turn.
    if len(messages) < 2 or messages[1]["role"] != "user":
        raise ChatError(
            "messages[1]: this template has no system role, so a system message must be followed by a user message"
        )
    merged = [
        {"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]},
        *messages[2:],
    ]
    merged_s = [{"role": "user", "content": _sentinel(0) + "\n\n" + _sentinel(1)}, *sentinels[2:]]
    return (
        _render(tokenizer, merged, add_generation_prompt),
        _render(tokenizer, merged_s, add_generation_prompt),
        messages,
    )


def _char_spans(real: str, sentinel_text: str, contents: list[str]) -> list[tuple[int, int]]:
    pieces = _SENTINEL.split(sentinel_text)
    literals, order = pieces[0::2], [int(x) for x in pieces[1::2]]
    if order != list(range(len(contents))):
        raise ChatError(
            f"the chat template reorders or drops messages (order {order}); cannot align spans"
        )
    if not real.startswith(literals[0]):
        raise ChatError(
            "the chat template renders differently for the real contents; cannot align spans"
        )
    pos = len(literals[0])
    spans: list[tuple[int, int]] = []
    for k, content in enumerate(contents):
        follow = literals[k + 1]
        is_last = k == len(contents) - 1
        for cand in dict.fromkeys((content, content.strip(), content.rstrip(), content.lstrip())):
            end = pos + len(cand)
            if real.startswith(cand, pos) and (
                real[end:] == follow if is_last else real.startswith(follow, end)
            ):
                spans.append((pos, end))
                pos = end + len(follow)
                break
        else:
            raise ChatError(f"messages[{k}]: cannot find its content in the rendered chat template")
    return spans


def _token_span(offsets: list[tuple[int, int]], text: str, a: int, b: int) -> tuple[int, int]:
    """Tokens covering at least one non-whitespace character of ``text[a:b]``."""
    hits = [
        t
        for t, (s, e) in enumerate(offsets)
        if min(e, b) > max(s, a) and text[max(s, a) : min(e, b)].strip()
    ]
    if not hits:
        # Empty or whitespace-only content: an empty span placed where the content starts.
        first = next((t for t, (s, e) in enumerate(offsets) if e > a), len(offsets))
        return first, first
    return hits[0], hits[-1] + 1


def _canon(text: str) -> str:
    """Text modulo edge whitespace and Unicode compatibility forms (some tokenizers normalise)."""
    return unicodedata.normalize("NFKC", text).strip()


def _repair(tokenizer: Any, ids: list[int], start: int, end: int, content: str) -> tuple[int, int]:
    """Offsets of byte-level tokenizers can misplace a token that merges the last template byte
    with the first content byte (rare characters). Widen by one token where that makes the
    span decode to the content; otherwise keep the offset-based span."""
    want = _canon(content)
    if _canon(tokenizer.decode(ids[start:end])) == want:
        return start, end
    for s, e in ((start - 1, end), (start, end + 1), (start - 1, end + 1)):
        if s >= 0 and e <= len(ids) and _canon(tokenizer.decode(ids[s:e])) == want:
            return s, e
    return start, end


_MARKUP = re.compile(r"[<>\[\]|]")


def _special_strings(tokenizer: Any) -> tuple[str, ...]:
    """The strings the tokenizer turns into a control token: its special tokens, and added tokens
    that look like markup (Qwen's ``<tool_call>`` is added but not "special", so
    ``split_special_tokens`` keeps it). Plain added tokens (Gemma's runs of spaces and newlines)
    are ordinary text."""
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    named = {
        str(t.content)
        for t in decoder.values()
        if getattr(t, "special", False) or _MARKUP.search(str(t.content))
    }
    named.update(str(t) for t in getattr(tokenizer, "all_special_tokens", ()) or ())
    return tuple(sorted((t for t in named if t), key=len, reverse=True))


def _encode(
    tokenizer: Any, text: str, spans: Sequence[tuple[int, int]]
) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and character offsets of ``text``, whose contents (``spans``) are tokenized as
    plain text, so that a message cannot forge a control or tool token: special tokens are split
    by the tokenizer, and any other added token's string is tokenized in two pieces."""
    specials = _special_strings(tokenizer)
    if not any(t in text[a:b] for a, b in spans for t in specials):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"]), [(int(o[0]), int(o[1])) for o in enc["offset_mapping"]]
    forged = re.compile("|".join(re.escape(t) for t in specials))
    ids: list[int] = []
    offsets: list[tuple[int, int]] = []

    def add(lo: int, hi: int, split: bool) -> None:
        if hi > lo:
            enc = tokenizer(
                text[lo:hi],
                add_special_tokens=False,
                return_offsets_mapping=True,
                split_special_tokens=split,
            )
            ids.extend(int(t) for t in enc["input_ids"])
            offsets.extend((lo + int(o[0]), lo + int(o[1])) for o in enc["offset_mapping"])

    pos = 0
    for a, b in [*spans, (len(text), len(text))]:
        add(pos, a, False)  # the template's own text: its control tokens stay tokens
        at = a
        for m in forged.finditer(text, a, b):
            add(at, m.start(), True)
            add(m.start(), m.start() + 1, True)  # "<" + "tool_call>": the text, not the token
            at = m.start() + 1
        add(at, b, True)
        pos = max(pos, b)
    return ids, offsets


def format_conversation(
    tokenizer_or_model: Any,
    messages: Sequence[Message],
    *,
    add_generation_prompt: bool = False,
) -> FormattedConversation:
    """Tokenize a chat with its template and return the content span of every message.

    Args:
        tokenizer_or_model: a HF (fast) tokenizer with a chat template, or a model with
            ``.tokenizer`` (a TransformerBridge).
        messages: ``[{"role": "system"|"user"|"assistant", "content": str}, ...]``.
        add_generation_prompt: end with the assistant header, ready for generation.

    Raises:
        ChatError: empty list, unknown role, non-string content, misplaced system message, or a
            template that cannot be aligned. The message names the offending index.
    """
    tokenizer = _tokenizer_of(tokenizer_or_model)
    if getattr(tokenizer, "chat_template", None) is None:
        raise ChatError(
            "this tokenizer has no chat template (a base model?); pass a tokenizer with one"
        )
    msgs = validate_messages(messages)
    msgs = [
        {
            "role": m["role"],
            "content": _THINK.sub("", m["content"]) if m["role"] == "assistant" else m["content"],
        }
        for m in msgs
    ]
    real, sentinel_text, _ = _render_pair(tokenizer, msgs, add_generation_prompt)
    char_spans = _char_spans(real, sentinel_text, [m["content"] for m in msgs])
    input_ids, offsets = _encode(tokenizer, real, char_spans)
    spans = []
    users_seen = 0
    for i, (m, (a, b)) in enumerate(zip(msgs, char_spans, strict=True)):
        users_seen += m["role"] == "user"
        start, end = _repair(tokenizer, input_ids, *_token_span(offsets, real, a, b), m["content"])
        spans.append(
            MessageSpan(role=m["role"], index=i, turn=max(users_seen - 1, 0), start=start, end=end)
        )
    ids = torch.tensor(input_ids, dtype=torch.long)
    return FormattedConversation(
        input_ids=ids, text=real, spans=tuple(spans), generation_prompt=add_generation_prompt
    )


def fit_to_context(
    model: Any,
    messages: Sequence[Message],
    limit: int,
    *,
    generation_prompt: bool = False,
    reserve: int = 0,
) -> tuple[FormattedConversation, int, int]:
    """Format ``messages``, dropping whole leading exchanges (the system message stays) until
    the tokens plus ``reserve`` fit in ``limit``: the one context trimming that collection,
    monitoring and chat sessions share.

    Returns ``(conversation, messages dropped, full length)``. Binary search over the cut points
    (each a user message): O(log turns) renderings. Raises :class:`ContextError` when even the
    last exchange does not fit.

    Example:
        Needs a real model (not run by the doctest suite).

        >>> conv, dropped, full = fit_to_context(model, history, 2048, reserve=256)  # doctest: +SKIP
    """
    msgs = list(messages)
    system = msgs[:1] if msgs and msgs[0]["role"] == "system" else []
    body = msgs[len(system) :]
    cuts = [0] + [i for i in range(1, len(body)) if body[i]["role"] == "user"]

    def render(k: int) -> FormattedConversation:
        return format_conversation(
            model, system + body[cuts[k] :], add_generation_prompt=generation_prompt
        )

    conv = render(0)
    full = len(conv)
    if full + reserve <= limit:
        return conv, 0, full
    lo, hi = 1, len(cuts) - 1
    best: tuple[int, FormattedConversation] | None = None
    while lo <= hi:
        mid = (lo + hi) // 2
        c = render(mid)
        if len(c) + reserve <= limit:
            best, hi = (mid, c), mid - 1
        else:
            lo = mid + 1
    if best is None:
        last = len(render(len(cuts) - 1))
        raise ContextError(
            f"the conversation does not fit in the context ({limit} tokens) even with only its "
            f"last exchange ({last} tokens + {reserve} reserved)",
            last,
        )
    return best[1], cuts[best[0]], full

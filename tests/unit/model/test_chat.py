from __future__ import annotations

import itertools
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import axislens
from axislens.model.chat import ChatError

NAMES = ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "gemma-3-270m")


def _check_spans(tok, messages, conv):
    assert len(conv.spans) == len(messages)
    for msg, span in zip(messages, conv.spans, strict=True):
        assert span.role == msg["role"]
        decoded = tok.decode(conv.input_ids[span.slice])
        # Exact modulo edge whitespace and Unicode compatibility normalisation (tokenizers normalise).
        assert (
            unicodedata.normalize("NFKC", decoded).strip()
            == unicodedata.normalize("NFKC", msg["content"]).strip()
        ), (span, decoded, msg)
    # Spans are disjoint and ordered.
    ends = [(s.start, s.end) for s in conv.spans]
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(ends))


@pytest.mark.parametrize("name", NAMES)
def test_spans_exact_on_every_embedded_tokenizer(tokenizers, name):
    tok = tokenizers[name]
    messages = [
        {"role": "system", "content": "You are a lighthouse keeper's ghost."},
        {"role": "user", "content": "  Who are you?\n"},
        {"role": "assistant", "content": "I am the keeper's shade.\n\n'Tis cold here."},
        {"role": "user", "content": "user"},  # content equal to a role header
        {"role": "assistant", "content": "assistant"},
    ]
    conv = axislens.format_conversation(tok, messages)
    _check_spans(tok, messages, conv)
    # Token ids are exactly the template's own tokenization (no second BOS).
    ref = tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    assert conv.input_ids.tolist() == list(ref)
    if tok.bos_token_id is not None:
        assert (
            conv.input_ids.tolist().count(tok.bos_token_id) <= 1 or name == "smollm2-135m-instruct"
        )
    # No role header or end-of-turn token inside any span.
    specials = set(tok.all_special_ids)
    for span in conv.spans:
        assert not specials & set(conv.input_ids[span.slice].tolist())


def test_gemma_system_text_goes_in_front_of_first_user_turn(tokenizers):
    tok = tokenizers["gemma-3-270m"]
    messages = [{"role": "system", "content": "Be a pirate."}, {"role": "user", "content": "Hello"}]
    conv = axislens.format_conversation(tok, messages, add_generation_prompt=True)
    assert conv.text.count("<start_of_turn>user\nBe a pirate.\n\nHello<end_of_turn>") == 1
    assert conv.text.endswith("<start_of_turn>model\n")
    _check_spans(tok, messages, conv)


def test_template_without_system_role_falls_back_to_prepending(tokenizers):
    """A Gemma-2-style template that raises on system messages."""
    tok = tokenizers["gemma-3-270m"]
    strict = (
        "{{ bos_token }}{% for m in messages %}"
        "{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        "{{ '<start_of_turn>' + ('model' if m['role'] == 'assistant' else 'user') + '\n' + m['content'] | trim + '<end_of_turn>\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
    )
    original = tok.chat_template
    tok.chat_template = strict
    try:
        messages = [
            {"role": "system", "content": "Be a pirate."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Arr."},
        ]
        conv = axislens.format_conversation(tok, messages)
        _check_spans(tok, messages, conv)
        assert "Be a pirate.\n\nHello" in conv.text
    finally:
        tok.chat_template = original


QWEN3_LIKE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}"
    "{% set content = m['content'] %}"
    "{% if '</think>' in content %}{% set content = content.split('</think>')[-1].lstrip('\n') %}{% endif %}"
    "{{ '<|im_start|>assistant\n' }}{% if loop.last %}{{ '<think>\n\n</think>\n\n' }}{% endif %}"
    "{{ content.lstrip('\n') + '<|im_end|>\n' }}"
    "{% else %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\n\n</think>\n\n' }}{% endif %}"
    "{% endif %}"
)


def test_qwen3_style_thinking_is_off_and_outside_spans(tokenizers):
    tok = tokenizers["qwen2.5-coder-0.5b-instruct"]
    original = tok.chat_template
    tok.chat_template = QWEN3_LIKE
    try:
        messages = [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "<think>secret plan</think>\n\nHello!"},
        ]
        conv = axislens.format_conversation(tok, messages)
        assert "secret plan" not in conv.text
        assert tok.decode(conv.input_ids[conv.spans[1].slice]) == "Hello!"
        gen = axislens.format_conversation(tok, messages[:1], add_generation_prompt=True)
        assert gen.text.endswith("<think>\n\n</think>\n\n")
    finally:
        tok.chat_template = original


@pytest.mark.parametrize(
    ("messages", "pattern"),
    [
        ([], "empty"),
        ([{"role": "wizard", "content": "x"}], r"messages\[0\]: unknown role 'wizard'"),
        ([{"role": "user", "content": 3}], r"messages\[0\] \(user\): content must be a string"),
        (
            [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}],
            r"messages\[1\]: a system message is only allowed first",
        ),
        ("hello", "expected a list"),
    ],
)
def test_bad_messages_raise_clear_errors(tokenizers, messages, pattern):
    with pytest.raises(ChatError, match=pattern):
        axislens.format_conversation(tokenizers["smollm2-135m-instruct"], messages)


def test_turn_indices(tokenizers):
    messages = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u0"},
        {"role": "assistant", "content": "a0"},
        {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "a1"},
    ]
    conv = axislens.format_conversation(tokenizers["smollm2-135m-instruct"], messages)
    assert [s.turn for s in conv.spans] == [0, 0, 0, 1, 1]
    assert [s.index for s in conv.spans] == [0, 1, 2, 3, 4]
    mask = conv.content_mask("assistant")
    assert int(mask.sum()) == sum(len(s) for s in conv.spans_of("assistant"))


_text = st.text(
    alphabet=st.characters(
        codec="utf-8",
        exclude_categories=("Cs", "Cc", "Cn", "Co"),
        exclude_characters="\ue000\ue001",
    ),
    min_size=1,
    max_size=40,
).filter(lambda s: s.strip())
_words = (
    st.lists(
        st.sampled_from(
            [
                "the",
                "ghost",
                "I",
                "am",
                "an",
                "AI",
                "?",
                "!",
                "\n",
                "  ",
                "assistant",
                "user",
                "model",
                "<b>",
                "'s",
                "42",
                "é",
                "你好",
            ]
        ),
        min_size=1,
        max_size=12,
    )
    .map(" ".join)
    .filter(lambda s: s.strip())
)


@settings(
    max_examples=60,
    print_blob=False,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    name=st.sampled_from(NAMES),
    system=st.none() | _words,
    turns=st.lists(st.tuples(_text | _words, _text | _words), min_size=1, max_size=20),
)
def test_spans_exact_on_random_conversations(tokenizers, name, system, turns):
    tok = tokenizers[name]
    messages = [{"role": "system", "content": system}] if system is not None else []
    for user, assistant in turns:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    conv = axislens.format_conversation(tok, messages)
    _check_spans(tok, messages, conv)


@pytest.mark.parametrize("name", NAMES)
def test_message_text_cannot_forge_an_added_token(tokenizers, name):
    """Typed into a message, a special token's string (<|im_start|>) and a non-special added
    token's (Qwen's <tool_call>, id 151657) stay text: no added token id inside any span, and
    the span still decodes to the message."""
    tok = tokenizers[name]
    added = {
        int(i): str(t.content)
        for i, t in tok.added_tokens_decoder.items()
        if t.special or any(c in str(t.content) for c in "<>[]|")
    }
    typed = " ".join(sorted(set(added.values()))[:40])
    messages = [{"role": "user", "content": f"look: {typed} <tool_call> end"}]
    conv = axislens.format_conversation(tok, messages, add_generation_prompt=True)
    _check_spans(tok, messages, conv)
    inside = set(conv.input_ids[conv.spans[0].slice].tolist())
    assert not inside & set(added), sorted(inside & set(added))[:5]
    if name.startswith("qwen"):
        assert 151657 in added and 151657 not in conv.input_ids.tolist()

from __future__ import annotations

import pytest

import axislens
from axislens.collection.responses import BridgeBackend, persona_items
from axislens.store import ActivationStore


@pytest.fixture(scope="module")
def personas():
    return axislens.load_personas()


def _store(tmp_path, name):
    return ActivationStore.create(tmp_path / name, {"model": {"model_id": "tiny"}})


def test_items_have_stable_ids_and_defaults(personas):
    items = persona_items(
        personas, roles=["ghost", "evaluator"], n_prompts=2, n_questions=3, model_name="SmolLM"
    )
    assert len(items) == 2 * 2 * 3 + 2 * 3
    assert items[0].id.startswith("role/ghost/p0/")
    defaults = [i for i in items if i.kind == "default"]
    assert {i.prompt_index for i in defaults} == {0, 1}
    assert (
        defaults[0].messages[0]["role"] == "user"
    )  # the empty default prompt adds no system message
    assert all(i.messages[-1]["role"] == "user" for i in items)


class _Flaky:
    """A backend that dies after n chunks (an interrupted run)."""

    def __init__(self, inner, fail_after):
        self.inner, self.calls, self.fail_after = inner, 0, fail_after

    def generate(self, convs, sampling, keys):
        if self.calls >= self.fail_after:
            raise KeyboardInterrupt
        self.calls += 1
        return self.inner.generate(convs, sampling, keys)


def test_generation_is_seeded_resumable_and_batch_independent(tiny_llama, personas, tmp_path):
    kw = dict(
        roles=["ghost", "pirate"],
        n_prompts=2,
        n_questions=2,
        max_new_tokens=5,
        seed=3,
        progress=False,
    )
    full = axislens.generate_responses(
        tiny_llama, personas, _store(tmp_path, "a"), batch_size=4, **kw
    )
    assert len(full) == 2 * 2 * 2 + 2 * 2
    assert all(r.messages[-1]["role"] == "assistant" for r in full)
    store = _store(tmp_path, "b")
    with pytest.raises(KeyboardInterrupt):
        axislens.generate_responses(
            tiny_llama,
            personas,
            store,
            batch_size=3,
            backend=_Flaky(BridgeBackend(tiny_llama, 3), 2),
            **kw,
        )
    assert len(ActivationStore.open(tmp_path / "b").records()) == 6  # two chunks landed
    counting = _Flaky(BridgeBackend(tiny_llama, 3), 99)
    resumed = axislens.generate_responses(
        tiny_llama, personas, store, batch_size=3, backend=counting, **kw
    )
    assert counting.calls == 2  # only the 6 missing items, in chunks of 3
    assert [r.response for r in resumed] == [r.response for r in full]
    again = _Flaky(BridgeBackend(tiny_llama, 3), 0)
    axislens.generate_responses(
        tiny_llama, personas, store, batch_size=3, backend=again, **kw
    )  # nothing left to do

"""Trait items: positive/negative instruction pairs x questions, for trait vectors.

Each trait has contrastive instruction pairs (``Trait.pairs``: ``pos`` shows the trait, ``neg``
its opposite). :func:`trait_items` crosses the first ``n_pairs`` pairs with questions (the
trait's own questions where the catalogue has them, as the public trait files do; else the
catalogue's shared extraction questions) into store items of kind ``trait_pos`` / ``trait_neg``
whose ``role`` is the trait name. The rest of the pipeline is the persona one:

    items -> :func:`~axislens.collection.responses.generate_responses` (``items=``)
    -> :func:`~axislens.collection.activations.collect`
    -> :func:`~axislens.collection.judges.judge_store` (``kinds=("trait_pos", "trait_neg")``,
       0-100 trait scale)
    -> :func:`~axislens.analysis.traits.trait_vectors` (positive > 50, negative < 50).

Ids are stable: ``trait/<name>/pos/p<k>/<question id>`` and ``trait/<name>/neg/p<k>/...``.

Example:
    >>> from axislens.personas import load_personas
    >>> items = trait_items(load_personas(), traits=1, n_pairs=2, n_questions=3)
    >>> len(items), sorted({i.kind for i in items})
    (12, ['trait_neg', 'trait_pos'])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from axislens.model.protocol import Model
from axislens.store import ItemRecord

__all__ = ["generate_trait_responses", "trait_items"]


def trait_items(
    personas: Any,
    *,
    traits: int | Sequence[str] | None = None,
    n_pairs: int = 5,
    n_questions: int = 20,
) -> list[ItemRecord]:
    """The (instruction, question) items of a trait run, without responses.

    ``traits``: the first N traits, a list of names, or ``None`` for all. Questions: the
    trait's own (first ``n_questions``, ids ``t000``...) if it has any, else the first
    ``n_questions`` of the catalogue's spread order.
    """
    for name, v in (("n_pairs", n_pairs), ("n_questions", n_questions)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    chosen = personas.subset(traits=traits).traits if traits is not None else personas.traits
    if not chosen:
        raise ValueError(f"the catalogue ({personas.source}) has no traits")
    shared = [(q.id, q.text) for q in personas.spread_questions()[:n_questions]]
    items: list[ItemRecord] = []
    for trait in chosen:
        own = [(f"t{j:03d}", text) for j, text in enumerate(trait.questions[:n_questions])]
        questions = own or shared
        if not questions:
            raise ValueError(f"trait {trait.name!r}: no questions (neither its own nor shared)")
        for k, pair in enumerate(trait.pairs[:n_pairs]):
            for side, kind, instruction in (
                ("pos", "trait_pos", pair.pos),
                ("neg", "trait_neg", pair.neg),
            ):
                for qid, text in questions:
                    msgs = (
                        {"role": "system", "content": instruction},
                        {"role": "user", "content": text},
                    )
                    rid = f"trait/{trait.name}/{side}/p{k}/{qid}"
                    items.append(ItemRecord(rid, kind, trait.name, k, qid, msgs))  # type: ignore[arg-type]
    return items


def generate_trait_responses(
    model: Model,
    personas: Any,
    store: Any,
    *,
    traits: int | Sequence[str] | None = None,
    n_pairs: int = 5,
    n_questions: int = 20,
    **generate: Any,
) -> list[Any]:
    """Generate the responses of :func:`trait_items` into ``store`` (resumable), through
    :func:`~axislens.collection.responses.generate_responses` (``generate`` holds its sampling,
    batch and backend arguments); returns the completed records."""
    from axislens.collection.responses import generate_responses

    items = trait_items(personas, traits=traits, n_pairs=n_pairs, n_questions=n_questions)
    return generate_responses(model, personas, store, items=items, **generate)

"""Compose axislens/data/personas/ from the compact tables in this folder.

    .venv/bin/python experiments/personas/build_personas.py          # rewrite the data files
    .venv/bin/python experiments/personas/build_personas.py --check  # fail if they are stale

Each role gets 5 system prompts from 5 sentence frames, each drawing on different per-role
details (what the character does, its manner, what it cares about, its surroundings), and the
shared 0-3 rubric, ``axislens.personas.default_rubric``, which the loader fills in. Each trait gets 5 pos/neg pairs from
5 frames over its two behaviour phrases. The written files are loaded back and validated.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from questions_table import QUESTIONS  # noqa: E402
from roles_table import ROLES  # noqa: E402
from traits_table import TRAITS  # noqa: E402

from axislens.personas import CATEGORIES, load_personas  # noqa: E402

OUT = REPO / "axislens" / "data" / "personas"

# The paper's five default prompts (its public pipeline's default set): neutral, no traits that
# a role would have to match ("helpful" is one).
DEFAULT_PROMPTS = [
    "",
    "You are an AI assistant.",
    "You are a large language model.",
    "You are {model_name}.",
    "Respond as yourself.",
]


DISPLAY = {"socratic": "Socratic"}  # trait names whose adjective is not just the name


def _rows(table: str, n_fields: int) -> list[tuple[str, list[str]]]:
    """(group, fields) for each row; "## group" lines set the group."""
    group, out = "", []
    for lineno, line in enumerate(table.strip().splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("## "):
            group = line[3:].strip()
            continue
        fields = [f.strip() for f in line.split(" | ")]
        if len(fields) != n_fields or not all(fields):
            raise SystemExit(f"table line {lineno}: expected {n_fields} non-empty fields: {line!r}")
        out.append((group, fields))
    return out


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def role_prompts(who: str, does: str, manner: str, cares: str, world: str) -> list[str]:
    return [
        f"You are {who}. You {does}.",
        f"You are {who}. Your manner is {manner}; answer every question in that manner "
        "and from your own point of view.",
        f"You are {who}, and what matters most to you is {cares}. Let that shape how you "
        "answer whatever you are asked.",
        f"You are {who}, at home among {world}. Draw on that world in your answers and stay "
        "in character from start to finish.",
        f"You are {who}. Never describe yourself as anything else: you {does}, and every "
        "answer you give should show it.",
    ]


def trait_pairs(adj: str, opp: str, pa: str, pb: str, na: str, nb: str) -> list[dict[str, str]]:
    def frames(word: str, degree: str, a: str, b: str) -> list[str]:
        return [
            f"You are {word}. {_cap(a)}.",
            f"In every reply, {b}.",
            f"Be as {word} as you can: {a}, and {b}.",
            f"Answer the way someone {degree} {word} would. {_cap(b)}.",
            f"Make being {word} the defining feature of your answers; {a}.",
        ]

    pos = frames(adj, "extremely", pa, pb)
    neg = frames(opp, "completely", na, nb)
    return [{"pos": p, "neg": n} for p, n in zip(pos, neg, strict=True)]


def build() -> dict[str, str]:
    roles = []
    for category, (name, who, desc, does, manner, cares, world) in _rows(ROLES, 7):
        if category not in CATEGORIES:
            raise SystemExit(f"unknown category {category!r} for role {name!r}")
        roles.append(
            {
                "name": name,
                "category": category,
                "description": desc,
                "system_prompts": role_prompts(who, does, manner, cares, world),
                # no "rubric": the loader fills in default_rubric(name, description)
            }
        )
    questions, counts = [], {}
    for topic, (text,) in _rows(QUESTIONS.replace(" | ", " / "), 1):
        counts[topic] = counts.get(topic, 0) + 1
        questions.append({"id": f"{topic}_{counts[topic]:02d}", "topic": topic, "text": text})
    traits = []
    for _, (name, opp, desc, pa, pb, na, nb) in _rows(TRAITS, 7):
        adj = DISPLAY.get(name, name.replace("_", "-"))
        traits.append(
            {"name": name, "description": desc, "pairs": trait_pairs(adj, opp, pa, pb, na, nb)}
        )

    def jsonl(rows: list[dict]) -> str:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)

    return {
        "roles.jsonl": jsonl(roles),
        "default.json": json.dumps(
            {"system_prompts": DEFAULT_PROMPTS}, ensure_ascii=False, indent=2
        )
        + "\n",
        "questions.jsonl": jsonl(questions),
        "traits.jsonl": jsonl(traits),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the data files are stale")
    args = parser.parse_args()
    files = build()
    with tempfile.TemporaryDirectory() as tmp:  # validate before touching the package
        for fname, text in files.items():
            (Path(tmp) / fname).write_text(text, encoding="utf-8")
        p = load_personas(tmp)
    if args.check:
        stale = [
            f
            for f, t in files.items()
            if not (OUT / f).is_file() or (OUT / f).read_text("utf-8") != t
        ]
        if stale:
            raise SystemExit(f"stale persona data: {', '.join(stale)}; rerun without --check")
        print("persona data up to date")
        return
    OUT.mkdir(parents=True, exist_ok=True)
    for fname, text in files.items():
        (OUT / fname).write_text(text, encoding="utf-8")
    by_cat = {c: sum(r.category == c for r in p.roles) for c in CATEGORIES}
    print(
        f"wrote {OUT}: {len(p.roles)} roles {by_cat}, {len(p.questions)} questions, {len(p.traits)} traits"
    )
    print(f"content_hash {p.content_hash()}")


if __name__ == "__main__":
    main()

"""An on-disk activation store: safetensors shards + JSON, resumable, atomic, model-free.

Layout of a store directory::

    manifest.json                 provenance: model, hooks, layers, span policy, data hashes...
    items/00000.json ...          item records (role, prompt, question, messages, response)
    acts/00000.safetensors ...    per-item span means, one tensor per hook: [n, layer, d_model]
    scores/00000.json ...         judge scores {item id: {"score": 0-3 | null, "raw": ...}}

Every file is written to a temporary name in the same folder and renamed into place
(``os.replace``), so a run killed at any moment (even ``kill -9``) leaves only complete files.
Work is done in deterministic *chunks* (fixed item lists); a resumed run skips complete chunks and
recomputes the rest with the same composition, so it ends bit-identical to an uninterrupted run.
Later shards override earlier ones for the same item id (repairs append, never rewrite).

The store never imports transformer_lens: open it in a notebook long after the model is gone.

Example:
    >>> store = ActivationStore.open("runs/smollm2")  # doctest: +SKIP
    >>> acts = store.activations("resid_post", kind="role")  # doctest: +SKIP
    >>> acts.shape  # [sample, layer, d_model]  # doctest: +SKIP
    torch.Size([1375, 30, 576])
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from axislens._types import Float, Tensor

__all__ = [
    "FORMAT_VERSION",
    "ActivationStore",
    "ItemRecord",
    "StoreError",
    "atomic_write_bytes",
    "atomic_write_json",
]

FORMAT_VERSION = 1
ItemKind = Literal["role", "default", "trait_pos", "trait_neg", "conversation"]
_SHARD = re.compile(r"^(\d{5,})\.(json|safetensors)$")


class StoreError(ValueError):
    """A store is missing, corrupt or incompatible; the message names the file or field."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + fsync + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, ensure_ascii=False) + "\n").encode())


@dataclass(frozen=True, slots=True)
class ItemRecord:
    """One stored item: a (system prompt, question, response) conversation and where it came from.

    ``id`` is stable across runs (e.g. ``"role/ghost/p2/q017"``); ``messages`` is the full
    conversation including the response; ``skipped`` holds the reason when no activation was
    recorded (empty response, too long, ...).
    """

    id: str
    kind: ItemKind
    role: str
    prompt_index: int
    question_id: str
    messages: tuple[Mapping[str, str], ...]
    n_tokens: int = 0
    skipped: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def response(self) -> str:
        """Content of the last assistant message ('' if none)."""
        for m in reversed(self.messages):
            if m["role"] == "assistant":
                return m["content"]
        return ""

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["messages"] = [dict(m) for m in self.messages]
        d["extra"] = dict(self.extra)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any], *, where: str) -> ItemRecord:
        try:
            return cls(
                id=str(d["id"]),
                kind=d["kind"],
                role=str(d["role"]),
                prompt_index=int(d["prompt_index"]),
                question_id=str(d["question_id"]),
                messages=tuple({"role": m["role"], "content": m["content"]} for m in d["messages"]),
                n_tokens=int(d.get("n_tokens", 0)),
                skipped=d.get("skipped"),
                extra=dict(d.get("extra", {})),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise StoreError(
                f"{where}: malformed item record ({type(err).__name__}: {err})"
            ) from None


def _shard_files(folder: Path, suffix: str) -> list[Path]:
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if (m := _SHARD.match(p.name)) and m.group(2) == suffix]
    return sorted(found, key=lambda p: int(p.name.split(".")[0]))


def _next_index(folder: Path) -> int:
    names = (
        [int(p.name.split(".")[0]) for p in folder.iterdir() if _SHARD.match(p.name)]
        if folder.is_dir()
        else []
    )
    return max(names, default=-1) + 1


# Manifest fields that must agree before items are appended to an existing store.
IDENTITY_FIELDS = ("model", "hooks", "layers", "span", "d_model", "dtype")


class ActivationStore:
    """A directory of stored items, span-mean activations and judge scores.

    Create with :meth:`create` (or let :func:`axislens.collection.activations` do it), open with :meth:`open`.
    Reading is lazy: records and scores are small JSON; activation shards are memory-mapped with
    safetensors and only the requested hook/layers/items are materialised.
    """

    def __init__(self, root: Path, manifest: Mapping[str, Any]) -> None:
        self.root = root
        self.manifest: Mapping[str, Any] = manifest
        self._records: dict[str, ItemRecord] | None = None
        self._act_index: dict[str, tuple[Path, int]] | None = None

    # ------------------------------------------------------------------ creation / opening
    @classmethod
    def create(cls, root: str | os.PathLike[str], manifest: Mapping[str, Any]) -> ActivationStore:
        """Open ``root`` for appending, creating it with ``manifest`` if new.

        An existing store must agree on :data:`IDENTITY_FIELDS` (model, hooks, layers, span
        policy, d_model, dtype); otherwise :class:`StoreError` names the field that differs.
        """
        path = Path(root)
        man_path = path / "manifest.json"
        wanted = {"format_version": FORMAT_VERSION, **manifest}
        if man_path.is_file():
            store = cls.open(path)
            have = dict(store.manifest)
            for key in IDENTITY_FIELDS:
                if key in wanted and key in have and have[key] != _jsonable(wanted[key]):
                    raise StoreError(
                        f"{man_path}: refusing to append: field {key!r} differs "
                        f"(store has {have[key]!r}, this run has {_jsonable(wanted[key])!r})"
                    )
            added = {k: v for k, v in _jsonable(wanted).items() if k not in have}
            if added:  # e.g. collection settings added to a store made by generation
                atomic_write_json(man_path, {**have, **added})
                store = cls.open(path)
            return store
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(man_path, _jsonable(wanted))
        return cls.open(path)

    @classmethod
    def open(cls, root: str | os.PathLike[str]) -> ActivationStore:
        """Open an existing store lazily (works without transformer_lens or a model)."""
        path = Path(root)
        man_path = path / "manifest.json"
        if not man_path.is_file():
            raise StoreError(f"{path} is not an activation store: no manifest.json")
        try:
            manifest = json.loads(man_path.read_text())
        except json.JSONDecodeError as err:
            raise StoreError(f"{man_path}: not valid JSON ({err})") from None
        if manifest.get("format_version") != FORMAT_VERSION:
            raise StoreError(
                f"{man_path}: unsupported format_version {manifest.get('format_version')!r}"
            )
        return cls(path, manifest)

    # ------------------------------------------------------------------ properties
    @property
    def hooks(self) -> tuple[str, ...]:
        return tuple(self.manifest["hooks"])

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(self.manifest["layers"])

    @property
    def d_model(self) -> int:
        return int(self.manifest["d_model"])

    @property
    def model_id(self) -> str:
        return str(self.manifest["model"]["model_id"])

    def __repr__(self) -> str:
        return f"ActivationStore({str(self.root)!r}, model={self.model_id!r}, items={len(self.records())})"

    # ------------------------------------------------------------------ records
    def records(self) -> dict[str, ItemRecord]:
        """All item records by id (later shards override earlier ones)."""
        if self._records is None:
            out: dict[str, ItemRecord] = {}
            for shard in _shard_files(self.root / "items", "json"):
                for i, d in enumerate(_read_json_list(shard)):
                    rec = ItemRecord.from_json(d, where=f"{shard} item {i}")
                    out[rec.id] = rec
            self._records = out
        return self._records

    def query(
        self,
        *,
        kind: ItemKind | Sequence[str] | None = None,
        role: str | Sequence[str] | None = None,
        prompt_index: int | None = None,
        question_id: str | None = None,
        min_score: int | None = None,
        collected: bool = True,
    ) -> list[ItemRecord]:
        """Records matching every given filter, in id order.

        ``collected=True`` keeps items with stored activations; ``min_score`` keeps items whose
        judge score is at least that (unscored items are dropped when it is set).
        """
        kinds = {kind} if isinstance(kind, str) else set(kind) if kind is not None else None
        roles = {role} if isinstance(role, str) else set(role) if role is not None else None
        scores = self.scores() if min_score is not None else {}
        index = self._activation_index() if collected else {}
        out = []
        for rid in sorted(self.records()):
            r = self.records()[rid]
            if kinds is not None and r.kind not in kinds:
                continue
            if roles is not None and r.role not in roles:
                continue
            if prompt_index is not None and r.prompt_index != prompt_index:
                continue
            if question_id is not None and r.question_id != question_id:
                continue
            if collected and rid not in index:
                continue
            if min_score is not None:
                s = scores.get(rid, {}).get("score")
                if s is None or s < min_score:
                    continue
            out.append(r)
        return out

    def append_records(self, records: Iterable[ItemRecord]) -> None:
        """Write a new record shard atomically."""
        recs = [r.to_json() for r in records]
        if not recs:
            return
        folder = self.root / "items"
        atomic_write_json(folder / f"{_next_index(folder):05d}.json", recs)
        self._records = None

    # ------------------------------------------------------------------ scores
    def scores(self) -> dict[str, dict[str, Any]]:
        """Judge results by item id: ``{"score": int | None, "raw": str, "judge": str}``."""
        out: dict[str, dict[str, Any]] = {}
        for shard in _shard_files(self.root / "scores", "json"):
            for d in _read_json_list(shard):
                out[str(d["id"])] = dict(d)
        return out

    def append_scores(self, scores: Iterable[Mapping[str, Any]]) -> None:
        rows = [dict(s) for s in scores]
        if rows:
            folder = self.root / "scores"
            atomic_write_json(folder / f"{_next_index(folder):05d}.json", rows)

    # ------------------------------------------------------------------ activations
    def append_activations(
        self, ids: Sequence[str], tensors: Mapping[str, Float[Tensor, "sample layer d_model"]]
    ) -> Path:
        """Write one activation shard atomically: ``{hook: [len(ids), n_layers, d_model]}``."""
        for hook, t in tensors.items():
            if hook not in self.hooks:
                raise StoreError(
                    f"{self.root}: hook {hook!r} is not in this store (hooks: {', '.join(self.hooks)})"
                )
            if t.shape != (len(ids), len(self.layers), self.d_model):
                raise StoreError(
                    f"{self.root}: activation tensor for {hook!r} has shape {tuple(t.shape)}, "
                    f"expected {(len(ids), len(self.layers), self.d_model)}"
                )
            bad = ~torch.isfinite(t).flatten(1).all(dim=1)
            if bool(bad.any()):
                raise StoreError(
                    f"{self.root}: non-finite activations for item {ids[int(bad.nonzero()[0])]!r} ({hook})"
                )
        dtype = getattr(torch, str(self.manifest.get("dtype", "float32")))
        payload = {h: t.detach().to("cpu", dtype).contiguous() for h, t in tensors.items()}
        folder = self.root / "acts"
        path = folder / f"{_next_index(folder):05d}.safetensors"
        atomic_write_bytes(path, st_save(payload, metadata={"ids": json.dumps(list(ids))}))
        self._act_index = None
        return path

    def _activation_index(self, *, repair: bool = False) -> dict[str, tuple[Path, int]]:
        if self._act_index is None:
            index: dict[str, tuple[Path, int]] = {}
            for shard in _shard_files(self.root / "acts", "safetensors"):
                try:
                    with safe_open(str(shard), framework="pt") as f:
                        ids = json.loads((f.metadata() or {})["ids"])
                        if set(f.keys()) != set(self.hooks):
                            raise StoreError(
                                f"shard {shard} holds hooks {sorted(f.keys())}, expected {list(self.hooks)}"
                            )
                except Exception as err:
                    if repair:
                        shard.rename(shard.with_name(shard.name + ".corrupt"))
                        continue
                    raise StoreError(
                        f"corrupt activation shard {shard} ({type(err).__name__}: {err}); run "
                        f"`axislens collect` again on this store to recompute it"
                    ) from None
                for row, rid in enumerate(ids):
                    index[rid] = (shard, row)
            self._act_index = index
        return self._act_index

    def repair(self) -> list[str]:
        """Move unreadable activation shards aside (``*.corrupt``); return the item ids whose
        activations must be recomputed (``axislens collect`` does this automatically)."""
        before = {p.name for p in _shard_files(self.root / "acts", "safetensors")}
        self._act_index = None
        index = self._activation_index(repair=True)
        after = {p.name for p in _shard_files(self.root / "acts", "safetensors")}
        if before == after:
            return []
        return sorted(set(self.records()) - set(index))

    def collected_ids(self) -> set[str]:
        return set(self._activation_index())

    def activations(
        self,
        hook: str = "resid_post",
        *,
        ids: Sequence[str] | None = None,
        layers: Sequence[int] | None = None,
        dtype: torch.dtype = torch.float32,
        **filters: Any,
    ) -> Float[Tensor, "sample layer d_model"]:
        """Stack stored span means: ``[len(ids), len(layers), d_model]`` in ``ids`` order.

        ``ids`` defaults to ``[r.id for r in self.query(**filters)]``. ``layers`` are model layer
        numbers (must be among :attr:`layers`; default all stored).
        """
        if hook not in self.hooks:
            raise StoreError(
                f"{self.root}: hook {hook!r} not in store (hooks: {', '.join(self.hooks)})"
            )
        ids = [r.id for r in self.query(**filters)] if ids is None else list(ids)
        cols = self._layer_columns(layers)
        index = self._activation_index()
        out = torch.empty((len(ids), len(cols), self.d_model), dtype=dtype)
        by_shard: dict[Path, list[tuple[int, int]]] = {}
        for pos, rid in enumerate(ids):
            if rid not in index:
                raise StoreError(f"{self.root}: no activations stored for item {rid!r}")
            shard, row = index[rid]
            by_shard.setdefault(shard, []).append((pos, row))
        for shard, pairs in by_shard.items():
            try:
                with safe_open(str(shard), framework="pt") as f:
                    sl = f.get_slice(hook)
                    for pos, row in pairs:
                        out[pos] = sl[row : row + 1][0][cols].to(dtype)
            except Exception as err:
                raise StoreError(
                    f"corrupt activation shard {shard} ({type(err).__name__}: {err})"
                ) from None
        return out

    def iter_activations(
        self,
        hook: str = "resid_post",
        *,
        batch_size: int = 1024,
        layers: Sequence[int] | None = None,
        **filters: Any,
    ) -> Iterator[tuple[list[ItemRecord], Float[Tensor, "sample layer d_model"]]]:
        """Stream ``(records, activations)`` in batches: memory bounded by ``batch_size``."""
        recs = self.query(**filters)
        for k in range(0, len(recs), batch_size):
            chunk = recs[k : k + batch_size]
            yield chunk, self.activations(hook, ids=[r.id for r in chunk], layers=layers)

    def _layer_columns(self, layers: Sequence[int] | None) -> list[int]:
        stored = list(self.layers)
        if layers is None:
            return list(range(len(stored)))
        cols = []
        for layer in layers:
            if layer not in stored:
                raise StoreError(
                    f"{self.root}: layer {layer} is not stored (stored layers: {stored[0]}..{stored[-1]})"
                )
            cols.append(stored.index(layer))
        return cols


def _read_json_list(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StoreError(f"{path}: corrupt JSON shard ({err})") from None
    if not isinstance(data, list):
        raise StoreError(f"{path}: expected a JSON list")
    return data


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))

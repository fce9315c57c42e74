"""An on-disk activation store: safetensors shards + JSON, resumable, atomic, model-free.

Layout of a store directory::

    manifest.json                 provenance: model, hooks, layers, span policy, data hashes...
    items/00000.json ...          item records (role, prompt, question, messages, response)
    acts/00000.safetensors ...    per-item span means, one tensor per hook: [n, layer, d_model]
    acts/.verified.json           shards whose every row :meth:`~ActivationStore.repair` checked
    scores/00000.json ...         judge scores {item id: {"score": 0-3 | null, "raw": ...}}
    .lock, .writers/              who is writing (see "Writers" below)

Every file is written to a temporary name in the same folder and published under a shard name
that no other file has (``os.link`` to the new name fails if it exists, so the writer moves to the
next number), so a run killed at any moment (even ``kill -9``) leaves only complete files, and
writers in several processes never overwrite each other's shards.
Work is done in deterministic *chunks* (fixed item lists); a resumed run skips complete chunks and
recomputes the rest with the same composition, so it ends bit-identical to an uninterrupted run.
Later shards override earlier ones for the same item id (repairs append, never rewrite).

Checksums: each activation shard stores, in its safetensors metadata, the sha256 of its id list
and a crc32 of every row of every tensor (``zlib.crc32``: catches every flipped byte, 2 GB/s),
checked on every read; JSON shards are ``{"sha256": ..., "items": [...]}`` with the sha256 of
the canonical JSON of ``items``. A shard that fails its checksum raises :class:`StoreError`
naming the file; :meth:`ActivationStore.repair` (run by ``axislens collect`` and
:func:`~axislens.collection.responses.generate_responses`) moves it aside (``*.corrupt``) and the
run recomputes what it held. Shards written before checksums existed are read unchecked.
Repair reads every row of a shard only once: ``acts/.verified.json`` records each shard it
checked in full by name, size, mtime and inode, and later repairs only parse those shards'
headers (a replaced, rewritten or truncated file no longer matches, so it is checked again);
reads still check every row they return. The ledger is a cache: it is written atomically, and
a lost or unreadable one only costs a re-check (``repair(full=True)`` ignores it).

Writers: a process that writes to a store holds it. By default (:class:`ExclusiveWriter`) the
first write (or :meth:`ActivationStore.create`) takes ``.lock``; any other process that then tries
to write fails at once with ``store in use by pid N on host H``. A lock whose process has died
(same host) is taken over. The ranks of one multi-process job open the store with
``writer=SharedWriter(job=...)``: they register under ``.writers/`` and append side by side
(shard names never collide), while an exclusive writer is still refused. Holding is per process
and re-entrant; it ends with :meth:`ActivationStore.close` (or the ``with`` block), when the last
store object of the process is garbage-collected, or when the process exits or dies.

Storage dtype: ``store_dtype="bfloat16"`` at creation halves the disk use; reads return the
dtype asked for (analysis reads float64), so accumulation never happens in bfloat16.

The store never imports transformer_lens: open it in a notebook long after the model is gone.

Example:
    Needs a collected store of a real model (not run by the doctest suite).

    >>> store = ActivationStore.open("runs/smollm2")  # doctest: +SKIP
    >>> acts = store.activations("resid_post", kind="role")  # doctest: +SKIP
    >>> acts.shape  # [sample, layer, d_model]  # doctest: +SKIP
    torch.Size([1375, 30, 576])
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import socket
import sys
import tempfile
import threading
import time
import uuid
import weakref
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import torch
from filelock import FileLock, Timeout
from safetensors import safe_open
from safetensors.torch import save as st_save

from axislens._types import Float, Tensor
from axislens.display import compact_repr, html_summary

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "FORMAT_VERSION",
    "STORE_DTYPES",
    "ActivationStore",
    "ExclusiveWriter",
    "ItemRecord",
    "SharedWriter",
    "StoreError",
    "Writer",
    "atomic_write_bytes",
    "atomic_write_json",
    "canonical_hooks",
    "check_not_in_use",
    "check_writable",
    "record_digest",
    "tokens_digest",
]

FORMAT_VERSION = 1
ItemKind = Literal["role", "default", "trait_pos", "trait_neg", "conversation"]
_SHARD = re.compile(r"^(\d{5,})\.(json|safetensors)$")
_NUMBERED = re.compile(r"^(\d{5,})\.")  # shards and shards moved aside (00003.json.corrupt)
#: Storage dtypes accepted by ``store_dtype`` (manifest field ``dtype``).
STORE_DTYPES = ("float32", "bfloat16", "float16", "float64")


class StoreError(ValueError):
    """A store is missing, corrupt, incompatible or in use; the message names the file or field."""


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process umask, read without changing it where /proc says it (Linux), else by the
    set-and-restore of ``os.umask`` under a lock."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _write_temp(folder: Path, name: str, data: bytes) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    # the writer's pid in the name: a later writer removes what a killed one left (_sweep_temps)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.{os.getpid()}-", suffix=".tmp")
    try:
        # mkstemp creates 0600; give the file the mode a plain open() would (0644 under the
        # usual umask 022) before it is renamed into place: stores and reports are shared.
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + fsync + rename)."""
    tmp = _write_temp(path.parent, path.name, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented UTF-8 JSON to ``path`` atomically (:func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=1, ensure_ascii=False) + "\n").encode())


def _next_index(folder: Path) -> int:
    names = (
        [int(m.group(1)) for p in folder.iterdir() if (m := _NUMBERED.match(p.name))]
        if folder.is_dir()
        else []
    )
    return max(names, default=-1) + 1


def _link_new(tmp: str, dest: Path) -> bool:
    """Give the complete file ``tmp`` the name ``dest`` unless ``dest`` exists; True if done.

    ``os.link`` is create-exclusive and atomic. Where hard links are not supported, an
    ``O_CREAT | O_EXCL`` claim file reserves the name instead (then ``os.replace``)."""
    try:
        os.link(tmp, dest)
        return True
    except FileExistsError:
        return False
    except OSError as err:
        if err.errno not in (
            errno.EPERM,
            errno.ENOTSUP,
            errno.EOPNOTSUPP,
            errno.EXDEV,
            errno.EMLINK,
        ):
            raise
    return _claim_and_replace(tmp, dest)


def _claim_and_replace(tmp: str, dest: Path) -> bool:
    claim = dest.with_name(f".{dest.name}.claim")
    try:
        os.close(os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return False
    try:
        # A claim is released only after its file is in place, so a free claim on a taken
        # name is seen here.
        if dest.exists():
            return False
        os.replace(tmp, dest)
        return True
    finally:
        claim.unlink(missing_ok=True)


def _publish_new_shard(folder: Path, suffix: str, data: bytes) -> Path:
    """Write ``data`` as the next free ``NNNNN.<suffix>`` in ``folder``, never replacing a file."""
    tmp = _write_temp(folder, f"new.{suffix}", data)
    try:
        idx = _next_index(folder)
        while True:
            dest = folder / f"{idx:05d}.{suffix}"
            if _link_new(tmp, dest):
                break
            idx = max(idx + 1, _next_index(folder))
    finally:
        Path(tmp).unlink(missing_ok=True)
    _fsync_dir(folder)
    return dest


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def _json_shard_bytes(rows: list[dict[str, Any]], store_id: str | None = None) -> bytes:
    body: dict[str, Any] = {"sha256": hashlib.sha256(_canonical(rows)).hexdigest(), "items": rows}
    if store_id is not None:
        body["store_id"] = store_id
    return (json.dumps(body, indent=1, ensure_ascii=False) + "\n").encode()


def _rows_sha256(rows: list[Any]) -> str:
    """``sha256(_canonical(rows))``, hashed row by row (no copy of the whole shard as text):
    with ``separators=(",", ":")`` a JSON list is ``[`` + rows joined by ``,`` + ``]``."""
    h = hashlib.sha256(b"[")
    for i, row in enumerate(rows):
        if i:
            h.update(b",")
        h.update(_canonical(row))
    h.update(b"]")
    return h.hexdigest()


def _read_json_list(path: Path, owner: _Owner | None = None) -> list[dict[str, Any]]:
    """A JSON shard's rows, checksum verified (a plain list is a shard from before checksums),
    and, given the store's ``owner``, checked to belong to that store."""
    try:
        with open(path, encoding="utf-8") as f:  # no extra bytes copy of a large shard
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StoreError(f"{path}: corrupt JSON shard ({type(err).__name__}: {err})") from None
    if owner is not None:
        owner.check(
            path,
            data.get("store_id") if isinstance(data, dict) else None,
            checked=(isinstance(data, dict) and "sha256" in data),
        )
    if isinstance(data, dict) and "items" in data and "sha256" in data:
        rows = data["items"]
        if not isinstance(rows, list):
            raise StoreError(f"{path}: corrupt JSON shard ('items' is not a list)")
        if _rows_sha256(rows) != data["sha256"]:
            raise StoreError(f"{path}: corrupt JSON shard (sha256 checksum mismatch)")
        data = rows
    if not isinstance(data, list):
        raise StoreError(f"{path}: corrupt JSON shard (expected a JSON list)")
    return data


# ------------------------------------------------------------------------------ writers / lock


@dataclass(frozen=True, slots=True)
class ExclusiveWriter:
    """The default: this process is the store's only writer. Another process that tries to write
    while it holds the store fails fast with ``store in use by pid N on host H``."""


@dataclass(frozen=True, slots=True)
class SharedWriter:
    """One of several cooperating writer processes (the ranks of one job, e.g. under
    ``accelerate``'s ``PartialState``). Ranks append side by side without the exclusive lock;
    an exclusive writer (another run) is refused while any rank is alive, and vice versa.
    ``job`` labels the job in messages (e.g. a run id shared by the ranks)."""

    job: str = ""


Writer = ExclusiveWriter | SharedWriter

_HOST = socket.gethostname()
_GUARD_TIMEOUT_S = 60.0


def _proc_start(pid: int) -> str | None:
    """The process start time (Linux ``/proc``), to tell a reused pid from the holder."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _me(writer: Writer) -> dict[str, Any]:
    me: dict[str, Any] = {
        "pid": os.getpid(),
        "host": _HOST,
        "start": _proc_start(os.getpid()),
        "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "mode": "shared" if isinstance(writer, SharedWriter) else "exclusive",
    }
    if isinstance(writer, SharedWriter):
        me["job"] = writer.job
    return me


def _read_holder(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable: treated as stale (files are written atomically)
    return data if isinstance(data, dict) else {}


def _alive(holder: Mapping[str, Any]) -> bool:
    """Whether a lock holder may still be running (holders on other hosts are assumed alive)."""
    try:
        pid = int(holder["pid"])
        host = str(holder["host"])
    except (KeyError, TypeError, ValueError):
        return False
    if host != _HOST:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    start = holder.get("start")
    now = _proc_start(pid)
    return not (start is not None and now is not None and now != start)


def _in_use(root: Path, where: Path, holder: Mapping[str, Any]) -> StoreError:
    job = f" (shared writer of job {holder['job']!r})" if holder.get("job") else ""
    other = f"; if that run is gone, delete {where}" if holder.get("host") != _HOST else ""
    return StoreError(
        f"{root}: store in use by pid {holder.get('pid')} on host {holder.get('host')}{job} "
        f"since {holder.get('since', '?')} (lock {where}); wait for it to finish or write to "
        f"another store{other}"
    )


@dataclass
class _Lease:
    root: Path
    pid: int
    files: list[Path]
    count: int = 0


_LEASES: dict[Path, _Lease] = {}
_LEASES_LOCK = threading.Lock()


def _acquire(root: Path, writer: Writer) -> Path:
    """Hold ``root`` for this process (re-entrant); return the key to release it with."""
    key = root.resolve()
    with _LEASES_LOCK:
        lease = _LEASES.get(key)
        if lease is not None and lease.pid == os.getpid():
            lease.count += 1
            return key
        lock, writers = key / ".lock", key / ".writers"
        me = _me(writer)
        try:
            with FileLock(str(key / ".lock.guard"), timeout=_GUARD_TIMEOUT_S):
                holder = _read_holder(lock)
                if holder is not None and _alive(holder):
                    raise _in_use(root, lock, holder)
                if isinstance(writer, SharedWriter):
                    lock.unlink(missing_ok=True)  # stale
                    mine = writers / f"{_HOST}-{os.getpid()}.json"
                    atomic_write_json(mine, me)
                else:
                    for p in sorted(writers.glob("*.json")) if writers.is_dir() else []:
                        other = _read_holder(p)
                        if other is not None and _alive(other):
                            raise _in_use(root, p, other)
                        p.unlink(missing_ok=True)  # stale
                    mine = lock
                    atomic_write_json(lock, me)
        except Timeout:
            raise StoreError(
                f"{root}: could not take {key / '.lock.guard'} within {_GUARD_TIMEOUT_S:.0f} s"
            ) from None
        _LEASES[key] = _Lease(key, os.getpid(), [mine], 1)
        return key


_TEMP = re.compile(r"^\..+\.(\d+)-[^.]+\.tmp$")


def _sweep_temps(root: Path, *, exclusive: bool) -> int:
    """Remove temporary files that killed writers left (a write publishes its temp file or
    removes it): those of dead pids, and under the exclusive lock every one (no one else is
    writing; 0.2's names carry no pid). Returns how many went."""
    gone = 0
    for folder in (root, root / "items", root / "acts", root / "scores"):
        if not folder.is_dir():
            continue
        for p in folder.glob(".*.tmp"):
            m = _TEMP.match(p.name)
            pid = int(m.group(1)) if m is not None else None
            if pid == os.getpid():
                continue  # this process's own write in progress
            if exclusive or (pid is not None and not _alive({"pid": pid, "host": _HOST})):
                with contextlib.suppress(OSError):
                    p.unlink()
                    gone += 1
    return gone


def _release(key: Path) -> None:
    with _LEASES_LOCK:
        lease = _LEASES.get(key)
        if lease is None or lease.pid != os.getpid():
            return
        lease.count -= 1
        if lease.count > 0:
            return
        del _LEASES[key]
        try:
            with FileLock(str(key / ".lock.guard"), timeout=_GUARD_TIMEOUT_S):
                for p in lease.files:
                    h = _read_holder(p)
                    if h and h.get("pid") == os.getpid() and h.get("host") == _HOST:
                        p.unlink(missing_ok=True)
        except (Timeout, OSError):
            pass  # left behind: the next writer sees a dead pid and takes it over


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
                # interned: one string object per id/kind/role, shared with the activation index
                id=sys.intern(str(d["id"])),
                kind=cast(ItemKind, sys.intern(d["kind"])),
                role=sys.intern(str(d["role"])),
                prompt_index=int(d["prompt_index"]),
                question_id=str(d["question_id"]),
                messages=tuple({"role": m["role"], "content": m["content"]} for m in d["messages"]),
                n_tokens=int(d.get("n_tokens", 0)),
                skipped=d.get("skipped"),
                extra=d["extra"] if type(d.get("extra")) is dict else dict(d.get("extra", {})),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise StoreError(
                f"{where}: malformed item record ({type(err).__name__}: {err})"
            ) from None


#: Ledger of activation shards whose every row a repair checked (see :meth:`ActivationStore.repair`).
_LEDGER = ".verified.json"
_LEDGER_VERSION = 1
_Fingerprint = tuple[int, int, int]


def _fingerprint(path: Path) -> _Fingerprint:
    """``(size, mtime_ns, inode)``: changes when a file is truncated, rewritten or replaced."""
    st = path.stat()
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _read_ledger(path: Path) -> dict[str, _Fingerprint]:
    """The verified-shard ledger ``{shard name: fingerprint}``; empty if missing or unreadable
    (a bad ledger only costs a re-check, so it is never an error)."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != _LEDGER_VERSION:
        return {}
    shards = data.get("shards")
    if not isinstance(shards, dict):
        return {}
    return {
        str(name): (fp[0], fp[1], fp[2])
        for name, fp in shards.items()
        if isinstance(fp, list) and len(fp) == 3 and all(type(x) is int for x in fp)
    }


def _ledger_json(shards: Mapping[str, _Fingerprint]) -> dict[str, Any]:
    return {
        "version": _LEDGER_VERSION,
        "fingerprint": ["size", "mtime_ns", "inode"],
        "shards": {name: list(shards[name]) for name in sorted(shards)},
    }


def _shard_files(folder: Path, suffix: str) -> list[Path]:
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if (m := _SHARD.match(p.name)) and m.group(2) == suffix]
    return sorted(found, key=lambda p: int(p.name.split(".")[0]))


def _move_aside(shard: Path) -> None:
    with contextlib.suppress(FileNotFoundError):  # another writer of the job moved it first
        os.replace(shard, shard.with_name(shard.name + ".corrupt"))


# Manifest fields that must agree before items are appended to an existing store: the store's
# identity. ``personas`` holds the catalogue hashes, ``generation`` the sampling settings
# (temperature, top-p, seed, max tokens, engine); ``model`` the weights hash of local folders;
# ``collection`` the batch size (padding changes a row by up to ~1e-4).
IDENTITY_FIELDS = (
    "model",
    "hooks",
    "layers",
    "span",
    "d_model",
    "dtype",
    "personas",
    "generation",
    "collection",
)
#: Identity fields that ``force=True`` may override (provenance); the others shape the stored
#: tensors, so a store can never hold two values of them.
FORCEABLE_FIELDS = ("model", "personas", "generation", "collection")


def identity_differences(have: Any, want: Any, where: str) -> list[tuple[str, Any, Any]]:
    """``(dotted field, store value, run value)`` for every leaf where ``want`` disagrees with
    ``have``. A key the run leaves out is unspecified (e.g. no ``engine`` on a collection-only
    resume), a key only the run has is a difference (e.g. a local-generation store resumed
    with an engine)."""
    if isinstance(have, Mapping) and isinstance(want, Mapping):
        out: list[tuple[str, Any, Any]] = []
        for key in want:
            sub = f"{where}.{key}"
            if key not in have:
                out.append((sub, None, want[key]))
            else:
                out.extend(identity_differences(have[key], want[key], sub))
        return out
    return [] if have == want else [(where, have, want)]


@dataclass(frozen=True, slots=True)
class _ShardInfo:
    ids: tuple[str, ...]
    crc32: Mapping[str, Sequence[int]] | None  # None: shard from before checksums
    digests: tuple[str, ...] | None = None  # per row: record_digest of its record; None: 0.2


@dataclass(frozen=True, slots=True)
class _Owner:
    """The store a shard must belong to: its id, and the shards it held when it got one (a
    store made before store ids is upgraded on its first write; its older shards carry no id)."""

    store_id: str
    legacy: frozenset[str]

    def check(self, path: Path, shard_id: str | None, *, checked: bool) -> None:
        if shard_id == self.store_id:
            if not checked:
                raise StoreError(f"{path}: shard without checksums in a store that has them")
            return
        if shard_id is None and path.name in self.legacy:
            return
        if shard_id is None:
            raise StoreError(
                f"{path}: shard without a store id in a store that has one ({self.store_id}): "
                "copied in from elsewhere, or edited"
            )
        raise StoreError(
            f"{path}: shard of another store ({shard_id}), not of this one ({self.store_id})"
        )


def record_digest(record: ItemRecord) -> str:
    """sha256 (first 16 hex) of a record's messages: the text its activations are computed
    from. Each activation row stores it; a row whose record has other text is stale."""
    return hashlib.sha256(_canonical([dict(m) for m in record.messages])).hexdigest()[:16]


def tokens_digest(ids: Sequence[int] | torch.Tensor) -> str:
    """sha256 (first 16 hex) of token ids (as little-endian int64): the exact input of a row."""
    t = torch.as_tensor(ids, dtype=torch.int64).flatten().contiguous()
    return hashlib.sha256(t.numpy().astype("<i8").tobytes()).hexdigest()[:16]


def _row_bytes(block: torch.Tensor) -> Any:
    """``[rows, ...]`` tensor -> ``[rows, nbytes]`` uint8 numpy view (any dtype, bf16 included)."""
    b = block.contiguous()
    return b.reshape(b.shape[0], -1).view(torch.uint8).numpy()


def _row_crcs(block: torch.Tensor) -> list[int]:
    return [zlib.crc32(row) for row in _row_bytes(block)]


_NUMPY_DTYPES = (torch.float16, torch.float32, torch.float64)


def _copy(dst: torch.Tensor, src: torch.Tensor) -> None:
    """``dst.copy_(src)``; a plain memcpy/cast through numpy where it can (one thread: torch's
    parallel copy out of a memory map is 2-3x slower on a busy 2-core machine)."""
    if src.dtype in _NUMPY_DTYPES and dst.dtype in _NUMPY_DTYPES and dst.is_contiguous():
        np.copyto(dst.numpy(), src.numpy(), casting="unsafe")
    else:
        dst.copy_(src)


def _runs(rows: Sequence[int], gap: int = 8) -> list[tuple[int, int]]:
    """Sorted row numbers -> half-open ``[lo, hi)`` blocks, merging holes of < ``gap`` rows."""
    out: list[tuple[int, int]] = []
    for r in rows:
        if out and r - out[-1][1] < gap:
            out[-1] = (out[-1][0], r + 1)
        else:
            out.append((r, r + 1))
    return out


class ActivationStore:
    """A directory of stored items, span-mean activations and judge scores.

    Create with :meth:`create` (or let :func:`axislens.collection.activations` do it), open with
    :meth:`open`. Reading is lazy: records and scores are small JSON; activation shards are
    memory-mapped with safetensors and only the requested hook/items are read, in contiguous
    blocks per shard, checksums verified. Writing holds the store for this process (see the
    module docstring, "Writers"); use ``with`` or :meth:`close` to let go early.
    """

    def __init__(
        self, root: Path, manifest: Mapping[str, Any], *, writer: Writer | None = None
    ) -> None:
        self.root = root
        self.manifest: Mapping[str, Any] = manifest
        self.writer: Writer = writer if writer is not None else ExclusiveWriter()
        self._records: dict[str, ItemRecord] | None = None
        self._act_index: dict[str, tuple[Path, int]] | None = None
        self._shards: dict[Path, _ShardInfo] = {}
        self._release: weakref.finalize | None = None
        self._owner_memo: tuple[Mapping[str, Any], _Owner | None] | None = None
        self._digests: dict[str, tuple[ItemRecord, str]] = {}  # id -> (record, its digest)

    # ------------------------------------------------------------------ holding the store
    def _hold(self) -> None:
        """Hold the store for writing (once per object; fails fast if another run holds it)."""
        if self._release is None or not self._release.alive:
            key = _acquire(self.root, self.writer)
            self._release = weakref.finalize(self, _release, key)
            _sweep_temps(self.root, exclusive=isinstance(self.writer, ExclusiveWriter))

    def close(self) -> None:
        """Stop holding the store for writing (reading still works; a later write re-takes it)."""
        if self._release is not None:
            self._release()

    def __enter__(self) -> ActivationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ creation / opening
    @classmethod
    def create(
        cls,
        root: str | os.PathLike[str],
        manifest: Mapping[str, Any],
        *,
        store_dtype: str | None = None,
        writer: Writer | None = None,
        force: bool = False,
    ) -> ActivationStore:
        """Open ``root`` for appending, creating it with ``manifest`` if new, and hold it.

        An existing store must agree on :data:`IDENTITY_FIELDS` (model incl. weights hash, hooks,
        layers, span policy, d_model, dtype, persona catalogue hashes, generation settings);
        otherwise :class:`StoreError` names the field that differs (e.g.
        ``generation.temperature``), before anything is written. ``force=True`` accepts new
        values of :data:`FORCEABLE_FIELDS` (model, personas, generation, collection): the manifest takes
        them and lists each override under ``forced``; hooks, layers, span, d_model and dtype
        can never change.
        ``store_dtype`` (``"float32"`` default, ``"bfloat16"``, ``"float16"``) is the storage
        dtype of activations (manifest field ``dtype``); ``None`` keeps an existing store's.
        ``writer``: :class:`ExclusiveWriter` (default) or :class:`SharedWriter` for the ranks of
        one multi-process job. Raises ``StoreError("... store in use by pid N on host H ...")``
        when another run holds the store.
        """
        path = Path(root)
        man_path = path / "manifest.json"
        wanted = {"format_version": FORMAT_VERSION, **manifest}
        if store_dtype is not None:
            wanted["dtype"] = store_dtype
        if "dtype" in wanted and wanted["dtype"] not in STORE_DTYPES:
            raise StoreError(
                f"{man_path}: unsupported storage dtype {wanted['dtype']!r} "
                f"(field 'dtype'; expected one of {', '.join(STORE_DTYPES)})"
            )
        check_writable(path)
        if man_path.is_file():  # check the identity before holding (or writing) anything
            identity_check(man_path, cls.open(path).manifest, wanted, force=force)
        path.mkdir(parents=True, exist_ok=True)
        store = cls(path, {}, writer=writer)
        store._hold()
        if man_path.is_file():
            store.manifest = cls.open(path).manifest
            have = dict(store.manifest)
            want = _jsonable(wanted)
            forced = identity_check(man_path, have, want, force=force)
            updated = {k: v for k, v in want.items() if k not in have}
            if "store_id" not in have:  # a store from before ids: its shards so far are legacy
                updated["store_id"] = uuid.uuid4().hex
                updated["legacy_shards"] = sorted(
                    p.name
                    for sub, suffix in (
                        ("items", "json"),
                        ("scores", "json"),
                        ("acts", "safetensors"),
                    )
                    for p in _shard_files(path / sub, suffix)
                )
            for key in {f.split(".")[0] for f, _, _ in forced}:
                updated[key] = _merge(have[key], want[key])
            if forced:
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
                updated["forced"] = [
                    *have.get("forced", []),
                    *({"field": f, "store": a, "run": b, "at": stamp} for f, a, b in forced),
                ]
            if updated:  # e.g. collection settings added to a store made by generation
                atomic_write_json(man_path, {**have, **updated})
                store.manifest = cls.open(path).manifest
            return store
        fresh = {"dtype": "float32", **wanted, "store_id": uuid.uuid4().hex}
        atomic_write_json(man_path, _jsonable(fresh))
        store.manifest = cls.open(path).manifest
        return store

    @classmethod
    def open(cls, root: str | os.PathLike[str], *, writer: Writer | None = None) -> ActivationStore:
        """Open an existing store lazily (works without transformer_lens or a model).

        Reading never locks; the first write through this object holds the store as ``writer``
        (default :class:`ExclusiveWriter`).
        """
        path = Path(root)
        man_path = path / "manifest.json"
        if not man_path.is_file():
            raise StoreError(f"{path} is not an activation store: no manifest.json")
        try:
            manifest = json.loads(man_path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as err:
            raise StoreError(f"{man_path}: not UTF-8 ({err.reason} at byte {err.start})") from None
        except json.JSONDecodeError as err:
            raise StoreError(f"{man_path}: not valid JSON ({err})") from None
        if not isinstance(manifest, dict):
            raise StoreError(
                f"{man_path}: expected a JSON object, got {type(manifest).__name__} "
                f"{json.dumps(manifest)[:40]}"
            )
        if manifest.get("format_version") != FORMAT_VERSION:
            raise StoreError(
                f"{man_path}: unsupported format_version {manifest.get('format_version')!r}"
            )
        _check_manifest(
            man_path, manifest, has_acts=bool(_shard_files(path / "acts", "safetensors"))
        )
        return cls(path, manifest, writer=writer)

    # ------------------------------------------------------------------ properties
    @property
    def _owner(self) -> _Owner | None:
        """Who this store's shards must belong to (``None`` for a store from before store ids,
        not yet written to); built once per manifest (reads ask it once per shard)."""
        memo = self._owner_memo
        if memo is None or memo[0] is not self.manifest:
            sid = self.store_id
            owner = (
                None
                if sid is None
                else _Owner(sid, frozenset(self.manifest.get("legacy_shards", ())))
            )
            memo = self._owner_memo = (self.manifest, owner)
        return memo[1]

    @property
    def store_id(self) -> str | None:
        """This store's id (every shard carries it); ``None`` for a store made before ids."""
        sid = self.manifest.get("store_id")
        return None if sid is None else str(sid)

    def _field(self, name: str) -> Any:
        if name not in self.manifest:
            raise StoreError(
                f"{self.root / 'manifest.json'}: no field {name!r} (a store without activations?)"
            )
        return self.manifest[name]

    @property
    def hooks(self) -> tuple[str, ...]:
        return canonical_hooks(self._field("hooks"))

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(self._field("layers"))

    @property
    def d_model(self) -> int:
        return int(self._field("d_model"))

    @property
    def store_dtype(self) -> torch.dtype:
        """Storage dtype of the activation shards (manifest field ``dtype``)."""
        dtype: torch.dtype = getattr(torch, str(self.manifest.get("dtype", "float32")))
        return dtype

    @property
    def model_id(self) -> str:
        return str(self.manifest["model"]["model_id"])

    def _facts(self) -> list[tuple[str, Any]]:
        recs = self.records()
        kinds: dict[str, int] = {}
        for r in recs.values():
            kinds[r.kind] = kinds.get(r.kind, 0) + 1
        m = self.manifest
        return [
            ("root", str(self.root)),
            ("model", (m.get("model") or {}).get("model_id")),
            ("items", len(recs)),
            *((f"{k} items", n) for k, n in sorted(kinds.items())),
            ("roles", len({r.role for r in recs.values()})),
            ("hooks", list(m.get("hooks") or [])),
            ("layers", list(m.get("layers") or [])),
            ("d_model", m.get("d_model")),
            ("dtype", m.get("dtype")),
        ]

    def __repr__(self) -> str:
        m = self.manifest
        return compact_repr(
            "ActivationStore",
            [
                ("root", str(self.root)),
                ("model", (m.get("model") or {}).get("model_id")),
                ("items", len(self.records())),
                ("layers", list(m.get("layers") or [])),
                ("d_model", m.get("d_model")),
            ],
        )

    def _repr_html_(self) -> str:
        return html_summary("ActivationStore", self._facts())

    def to_pandas(self) -> pd.DataFrame:
        """One row per item record: ``id``, ``kind``, ``role``, ``prompt_index``,
        ``question_id``, ``n_tokens``, ``skipped`` and its judge ``score`` (None if unscored)."""
        import pandas as pd

        scores = self.scores()
        cols = ["id", "kind", "role", "prompt_index", "question_id", "n_tokens", "skipped", "score"]
        rows = [
            [r.id, r.kind, r.role, r.prompt_index, r.question_id, r.n_tokens, r.skipped, s]
            for r in self.records().values()
            for s in [scores.get(r.id, {}).get("score")]
        ]
        return pd.DataFrame(rows, columns=cols)

    # ------------------------------------------------------------------ records
    def records(self) -> dict[str, ItemRecord]:
        """All item records by id (later shards override earlier ones)."""
        if self._records is None:
            out: dict[str, ItemRecord] = {}
            for shard in _shard_files(self.root / "items", "json"):
                rows: list[Any] = _read_json_list(shard, self._owner)
                for i, d in enumerate(rows):
                    rec = ItemRecord.from_json(d, where=f"{shard} item {i}")
                    out[rec.id] = rec
                    rows[i] = None  # each parsed row's memory is reused by the next records
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

    def append_records(self, records: Iterable[ItemRecord]) -> Path | None:
        """Write a new record shard (checksummed, under a fresh name); return its path."""
        recs = [r.to_json() for r in records]
        if not recs:
            return None
        self._hold()
        path = _publish_new_shard(
            self.root / "items", "json", _json_shard_bytes(recs, self.store_id)
        )
        self._records = None
        return path

    # ------------------------------------------------------------------ scores
    def scores(self) -> dict[str, dict[str, Any]]:
        """Judge results by item id: ``{"score": int | None, "raw": str, "judge": str}``."""
        out: dict[str, dict[str, Any]] = {}
        for shard in _shard_files(self.root / "scores", "json"):
            for d in _read_json_list(shard, self._owner):
                out[str(d["id"])] = dict(d)
        return out

    def append_scores(self, scores: Iterable[Mapping[str, Any]]) -> Path | None:
        rows = [dict(s) for s in scores]
        if not rows:
            return None
        self._hold()
        return _publish_new_shard(
            self.root / "scores", "json", _json_shard_bytes(rows, self.store_id)
        )

    # ------------------------------------------------------------------ activations
    def append_activations(
        self,
        ids: Sequence[str],
        tensors: Mapping[str, Float[Tensor, "sample layer d_model"]],
        *,
        records: Sequence[ItemRecord] | None = None,
        tokens: Sequence[Sequence[int] | Tensor] | None = None,
    ) -> Path:
        """Write one activation shard: ``{hook: [len(ids), n_layers, d_model]}``, cast to the
        storage dtype, with checksums and the store's id, under a fresh shard name.

        ``records`` (one per id) and ``tokens`` (the token ids each row was computed from) tie
        every row to its input: the shard stores :func:`record_digest` and :func:`tokens_digest`
        per row, and a read refuses a row whose record's text has changed since."""
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
        payload = {
            h: t.detach().to("cpu", self.store_dtype).contiguous() for h, t in tensors.items()
        }
        for h, t in payload.items():  # float16 overflows where float32 did not
            if t.dtype == torch.float16 and not bool(torch.isfinite(t).all()):
                raise StoreError(
                    f"{self.root}: activations for {h!r} overflow the storage dtype "
                    f"{self.manifest.get('dtype')!r}"
                )
        ids_json = json.dumps(list(ids))
        meta = {
            "ids": ids_json,
            "ids_sha256": hashlib.sha256(ids_json.encode()).hexdigest(),
            "crc32": json.dumps({h: _row_crcs(t) for h, t in payload.items()}),
        }
        if self.store_id is not None:
            meta["store_id"] = self.store_id
        for key, values, digest in (
            ("records_sha256", records, record_digest),
            ("tokens_sha256", tokens, tokens_digest),
        ):
            if values is not None:
                if len(values) != len(ids):
                    raise StoreError(
                        f"{self.root}: {len(values)} {key.split('_')[0]} for {len(ids)} ids"
                    )
                meta[key] = json.dumps([digest(v) for v in values])  # type: ignore[arg-type]
        if records is not None and [r.id for r in records] != list(ids):
            raise StoreError(f"{self.root}: records= are not the records of ids=, in order")
        self._hold()
        path = _publish_new_shard(
            self.root / "acts", "safetensors", st_save(payload, metadata=meta)
        )
        self._act_index = None
        return path

    def _shard_info(self, shard: Path) -> _ShardInfo:
        """Read and check a shard's header: ids (sha256), hooks, shapes, row checksums."""
        info = self._shards.get(shard)
        if info is not None:
            return info
        with safe_open(str(shard), framework="pt") as f:
            meta = f.metadata() or {}
            owner = self._owner
            if owner is not None:
                owner.check(shard, meta.get("store_id"), checked="crc32" in meta)
            ids_json = meta["ids"]
            if "ids_sha256" in meta and (
                hashlib.sha256(ids_json.encode()).hexdigest() != meta["ids_sha256"]
            ):
                raise StoreError("sha256 checksum of the item ids does not match")
            ids = tuple(map(sys.intern, json.loads(ids_json)))
            if set(f.keys()) != set(self.hooks):
                raise StoreError(f"holds hooks {sorted(f.keys())}, expected {list(self.hooks)}")
            want = [len(ids), len(self.layers), self.d_model]
            held = list(f.keys())
            for h in held:
                shape = list(f.get_slice(h).get_shape())
                if shape != want:
                    raise StoreError(f"tensor {h!r} has shape {shape}, expected {want}")
            # 4 bytes a row (array "I"), not a Python int each: the index of a large store
            crc = (
                {h: array("I", v) for h, v in json.loads(meta["crc32"]).items()}
                if "crc32" in meta
                else None
            )
            if crc is not None and any(len(crc.get(h, ())) != len(ids) for h in held):
                raise StoreError("row checksums do not match the item ids")
            digests = (
                tuple(json.loads(meta["records_sha256"])) if "records_sha256" in meta else None
            )
            if digests is not None and len(digests) != len(ids):
                raise StoreError("record digests do not match the item ids")
        info = _ShardInfo(ids, crc, digests)
        self._shards[shard] = info
        return info

    def _verify(self, shard: Path, hook: str, lo: int, block: torch.Tensor) -> None:
        crc = self._shard_info(shard).crc32
        if crc is None:
            return
        want = crc[hook]
        for k, got in enumerate(_row_crcs(block)):
            if got != want[lo + k]:
                raise StoreError(f"row {lo + k} of {hook!r} fails its crc32 checksum")

    def _verify_shard(self, shard: Path) -> None:
        """Read every row of every hook of ``shard`` and check its crc32."""
        with safe_open(str(shard), framework="pt") as f:
            for h in self.hooks:
                self._verify(shard, h, 0, f.get_tensor(h))

    def _activation_index(
        self, *, repair: bool = False, full: bool = False
    ) -> dict[str, tuple[Path, int]]:
        """``{item id: (shard, row)}`` (later shards win). With ``repair``, corrupt shards are
        moved aside instead of raising, and shards not in the verified ledger (all with
        ``full``) have every row checked; the ledger is then updated."""
        if self._act_index is None:
            index: dict[str, tuple[Path, int]] = {}
            acts = self.root / "acts"
            ledger = _read_ledger(acts / _LEDGER) if repair and not full else {}
            verified: dict[str, _Fingerprint] = {}
            for shard in _shard_files(acts, "safetensors"):
                try:
                    ids = self._shard_info(shard).ids
                    if repair:
                        fp = _fingerprint(shard)  # before reading: a later change shows
                        if ledger.get(shard.name) != fp:
                            self._verify_shard(shard)
                        verified[shard.name] = fp
                except Exception as err:
                    self._shards.pop(shard, None)
                    if repair:
                        self._hold()
                        _move_aside(shard)
                        continue
                    raise StoreError(
                        f"corrupt activation shard {shard} ({type(err).__name__}: {err}); run "
                        f"`axislens store repair {self.root}` to recompute it"
                    ) from None
                for row, rid in enumerate(ids):
                    index[rid] = (shard, row)
            if repair and verified != ledger:
                self._record_verified(verified)
            self._act_index = index
        return self._act_index

    def _record_verified(self, verified: Mapping[str, _Fingerprint]) -> None:
        """Merge ``verified`` into ``acts/.verified.json`` (atomic write, while holding the
        store; taken just for the write if this object does not hold it yet).

        Entries other writers added meanwhile are kept while their file exists; concurrent
        writers may still lose each other's updates, which only costs a re-check, since an
        entry vouches only for a file whose fingerprint still matches. Skipped (no error) when
        another run holds the store or the folder is read-only."""

        def merge(ledger: dict[str, _Fingerprint], folder: Path) -> dict[str, _Fingerprint]:
            others = {
                name: fp
                for name, fp in ledger.items()
                if name not in verified and (folder / name).is_file()
            }
            return {**others, **verified}

        self._update_ledger(merge)

    def _update_ledger(
        self, change: Callable[[dict[str, _Fingerprint], Path], dict[str, _Fingerprint]]
    ) -> None:
        """Rewrite ``acts/.verified.json`` as ``change(current, acts folder)`` (atomic write, while
        holding the store; taken just for the write if this object does not hold it yet).
        Skipped (no error) when another run holds the store or the folder is read-only."""
        path = self.root / "acts" / _LEDGER
        held = self._release is not None and self._release.alive
        try:
            self._hold()
        except (StoreError, OSError):
            return
        try:
            atomic_write_json(path, _ledger_json(change(_read_ledger(path), path.parent)))
        except OSError:
            pass
        finally:
            if not held:
                self.close()

    def repair(self, *, activations: bool = True, full: bool = False) -> list[str]:
        """Move corrupt or truncated shards aside (``*.corrupt``): item records, scores and
        (with ``activations``) activation shards.

        Every activation shard's header is parsed (ids, checksum, hooks, shapes: this catches
        truncated files); every row is read and checked against its crc32 only for shards not
        yet in the ledger ``acts/.verified.json`` with the same size, mtime and inode, and
        shards that pass are recorded there, so a resume reads only what is new or changed.
        ``full=True`` ignores the ledger and checks every row of every shard (e.g. after
        moving the store to other storage). Reads check the rows they return either way.

        Returns the ids of items whose activations must be recomputed (``axislens collect``
        does this automatically); records and scores in a moved shard are missing afterwards,
        so a resumed generation/judging run produces them again.
        """
        for sub in ("items", "scores"):
            for shard in _shard_files(self.root / sub, "json"):
                try:
                    _read_json_list(shard, self._owner)
                except StoreError:
                    self._hold()
                    _move_aside(shard)
        self._records = None
        if not activations:
            return []
        before = {p.name for p in _shard_files(self.root / "acts", "safetensors")}
        self._act_index = None
        self._shards.clear()
        index = self._activation_index(repair=True, full=full)
        stale = self.stale_ids()
        for rid in stale:  # rows of another record's text: recomputed, never kept
            del index[rid]
        after = {p.name for p in _shard_files(self.root / "acts", "safetensors")}
        if before == after and not stale:
            return []
        return sorted(set(self.records()) - set(index))

    def verify(self) -> list[str]:
        """Check everything, write nothing: every JSON shard's checksum and owner, every
        activation shard's header, owner and every row's crc32, and every newest row against
        its record's text. Returns one line per problem (empty: the store is sound)."""
        problems: list[str] = []
        for sub in ("items", "scores"):
            for shard in _shard_files(self.root / sub, "json"):
                try:
                    _read_json_list(shard, self._owner)
                except StoreError as err:
                    problems.append(str(err))
        index: dict[str, tuple[Path, int]] = {}
        self._shards.clear()
        for shard in _shard_files(self.root / "acts", "safetensors"):
            try:
                info = self._shard_info(shard)
                self._verify_shard(shard)
            except Exception as err:
                self._shards.pop(shard, None)
                problems.append(f"{shard}: {type(err).__name__}: {err}")
                continue
            for row, rid in enumerate(info.ids):
                index[rid] = (shard, row)
        self._records = None
        try:
            self.records()
        except StoreError:
            return problems  # the record shard's problem is listed above
        for rid, (shard, row) in sorted(index.items()):
            if self._is_stale(shard, row, rid):
                problems.append(
                    f"{shard}: row {row} (item {rid!r}) was computed from other text than its record"
                )
        return problems

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
        numbers (must be among :attr:`layers`; default all stored). Rows are read in contiguous
        blocks per shard and checked against their checksums; the result is cast to ``dtype``
        (analysis passes float64, whatever the storage dtype).
        """
        if hook not in self.hooks:
            raise StoreError(
                f"{self.root}: hook {hook!r} not in store (hooks: {', '.join(self.hooks)})"
            )
        ids = [r.id for r in self.query(**filters)] if ids is None else list(ids)
        cols = self._layer_columns(layers)
        all_cols = cols == list(range(len(self.layers)))
        index = self._activation_index()
        out = torch.empty((len(ids), len(cols), self.d_model), dtype=dtype)
        by_shard: dict[Path, dict[int, list[int]]] = {}
        for pos, rid in enumerate(ids):
            if rid not in index:
                raise StoreError(f"{self.root}: no activations stored for item {rid!r}")
            shard, row = index[rid]
            self._check_row_record(shard, row, rid)
            by_shard.setdefault(shard, {}).setdefault(row, []).append(pos)
        for shard, rows in by_shard.items():
            try:
                with safe_open(str(shard), framework="pt") as f:
                    sl = f.get_slice(hook)
                    for lo, hi in _runs(sorted(rows)):
                        block = sl[lo:hi]
                        self._verify(shard, hook, lo, block)
                        dest = [p for r in range(lo, hi) for p in rows.get(r, ())]
                        take = [r - lo for r in range(lo, hi) for _ in rows.get(r, ())]
                        picked = block if take == list(range(hi - lo)) else block[take]
                        if not all_cols:
                            picked = picked[:, cols]
                        if dest == list(range(dest[0], dest[0] + len(dest))):
                            _copy(out[dest[0] : dest[0] + len(dest)], picked)
                        else:
                            out.index_copy_(0, torch.tensor(dest), picked.to(dtype))
            except Exception as err:
                self._forget_verified(shard)
                raise StoreError(
                    f"corrupt activation shard {shard} ({type(err).__name__}: {err}); run "
                    f"`axislens store repair {self.root}` to recompute it"
                ) from None
        return out

    def _is_stale(self, shard: Path, row: int, rid: str) -> bool:
        """Whether the row was computed from other text than the item's current record (rows
        from 0.2 carry no digest; an item without a record has nothing to compare)."""
        digests = self._shard_info(shard).digests
        if digests is None:
            return False
        rec = self.records().get(rid)
        if rec is None:
            return False
        memo = self._digests.get(rid)
        if memo is None or memo[0] is not rec:  # a record read anew gets its digest anew
            memo = self._digests[rid] = (rec, record_digest(rec))
        return digests[row] != memo[1]

    def _check_row_record(self, shard: Path, row: int, rid: str) -> None:
        """Raise unless the row was computed from the item's current record."""
        if self._is_stale(shard, row, rid):
            raise StoreError(
                f"{shard}: the activations of item {rid!r} were computed from other text than its "
                f"record in {self.root / 'items'} (a record or shard copied in, or edited); run "
                f"`axislens store repair {self.root}` to recompute them"
            )

    def stale_ids(self) -> set[str]:
        """Items whose newest activation row was computed from other text than their record."""
        index = self._activation_index()
        return {rid for rid, (shard, row) in index.items() if self._is_stale(shard, row, rid)}

    def _forget_verified(self, shard: Path) -> None:
        """Drop ``shard`` from the verified ledger after a failed read, so the next repair (any
        ``axislens collect`` on this store) checks every row of it again (best effort)."""
        if shard.name in _read_ledger(self.root / "acts" / _LEDGER):
            self._update_ledger(
                lambda ledger, _: {k: v for k, v in ledger.items() if k != shard.name}
            )

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


def _check_manifest(path: Path, m: Mapping[str, Any], *, has_acts: bool) -> None:
    """One-line errors for manifest fields of the wrong type (or missing, once there are
    activation shards: a store of records only may lack hooks/layers/d_model)."""
    for name, ok in (
        ("hooks", lambda v: isinstance(v, list) and all(isinstance(h, str) for h in v) and v),
        ("layers", lambda v: isinstance(v, list) and all(type(x) is int for x in v) and v),
        ("d_model", lambda v: type(v) is int and v > 0),
    ):
        if name not in m:
            if has_acts:
                raise StoreError(
                    f"{path}: missing field {name!r} (the store has activation shards)"
                )
            continue
        if not ok(m[name]):
            raise StoreError(f"{path}: field {name!r} is malformed ({json.dumps(m[name])[:60]})")
    if "dtype" in m and m["dtype"] not in STORE_DTYPES:
        raise StoreError(
            f"{path}: field 'dtype' is {m['dtype']!r}, expected one of {', '.join(STORE_DTYPES)}"
        )


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _merge(have: Any, want: Any) -> Any:
    """``have`` updated with ``want`` (recursively for mappings; keys ``want`` omits are kept)."""
    if isinstance(have, Mapping) and isinstance(want, Mapping):
        return {**have, **{k: _merge(have.get(k), v) for k, v in want.items()}}
    return want


def canonical_hooks(hooks: Iterable[str]) -> tuple[str, ...]:
    """Hook names without repeats, sorted: the one form a store records and compares
    (``["resid_post", "resid_post"]`` and ``["resid_post"]`` are the same store).

    >>> canonical_hooks(["resid_post", "attn_out", "resid_post"])
    ('attn_out', 'resid_post')
    """
    return tuple(sorted(set(hooks)))


def identity_check(
    man_path: Path, have: Mapping[str, Any], wanted: Mapping[str, Any], *, force: bool = False
) -> list[tuple[str, Any, Any]]:
    """Raise :class:`StoreError` naming the first identity field where ``wanted`` differs from
    the manifest ``have`` (unless ``force`` and the field is forceable); return the forced
    differences."""
    want = _jsonable(wanted)
    forced = []
    for key in IDENTITY_FIELDS:
        if key not in want or key not in have:
            continue
        if (
            key == "hooks"
            and isinstance(have[key], list)
            and isinstance(want[key], list)
            and canonical_hooks(have[key]) == canonical_hooks(want[key])
        ):
            continue  # the same hooks: repeats and order do not make another store
        for field_, a, b in identity_differences(have[key], want[key], key):
            if force and key in FORCEABLE_FIELDS:
                forced.append((field_, a, b))
                continue
            hint = " (or pass force=True / --force)" if key in FORCEABLE_FIELDS else ""
            raise StoreError(
                f"{man_path}: refusing to resume: field {field_!r} differs (store has "
                f"{json.dumps(a)[:80]}, this run has {json.dumps(b)[:80]}); write to a new "
                f"store{hint}"
            )
    return forced


def check_not_in_use(root: str | os.PathLike[str]) -> None:
    """Raise :class:`StoreError` if another live process holds the store at ``root`` (nothing is
    taken or written: run it before slow work, such as loading a model, that a refused write
    would waste; the write itself still takes the lock)."""
    key = Path(root).resolve()
    files = [key / ".lock"]
    if (key / ".writers").is_dir():
        files += sorted((key / ".writers").glob("*.json"))
    for path in files:
        holder = _read_holder(path)
        if not holder or not _alive(holder):
            continue
        if holder.get("pid") == os.getpid() and holder.get("host") == _HOST:
            continue
        raise _in_use(Path(root), path, holder)


def check_writable(root: str | os.PathLike[str]) -> None:
    """Raise :class:`StoreError` unless a store can be created or appended at ``root``: an
    existing folder must be writable, a new one must have a writable existing ancestor. Writes
    nothing (run it before any slow work)."""
    path = Path(root)
    if path.exists() and not path.is_dir():
        raise StoreError(f"{path}: is an existing file, not a store folder")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise StoreError(f"{path}: cannot create this folder ({probe} is not a folder)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise StoreError(f"{path}: cannot write this folder ({probe} is not writable)")

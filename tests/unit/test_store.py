"""ActivationStore: concurrent writers, the writer lock, checksums, repair, manifest errors,
storage dtype and block reads. Model-free except the collect round trips (tiny model)."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from axislens.store import (
    ActivationStore,
    ExclusiveWriter,
    ItemRecord,
    SharedWriter,
    StoreError,
)

LAYERS = [0, 1, 2]
D = 8


def _manifest(**extra):
    return {
        "model": {"model_id": "synthetic"},
        "hooks": ["resid_post"],
        "layers": LAYERS,
        "d_model": D,
        "span": "response",
        **extra,
    }


def _rec(rid: str, kind: str = "conversation", role: str = "", text: str = "ok") -> ItemRecord:
    return ItemRecord(
        rid,
        kind,  # type: ignore[arg-type]
        role,
        0,
        rid.rsplit("/", 1)[-1],
        ({"role": "user", "content": "hi"}, {"role": "assistant", "content": text}),
    )


def _value(rid: str) -> torch.Tensor:
    """A deterministic, id-specific activation row [layer, d_model]."""
    g = torch.Generator().manual_seed(sum(map(ord, rid)) * 7919 + len(rid))
    return torch.randn(len(LAYERS), D, generator=g)


def _fill(root: Path, ids: list[str], *, shard: int = 5, **create_kw) -> ActivationStore:
    store = ActivationStore.create(root, _manifest(), **create_kw)
    store.append_records([_rec(i) for i in ids])
    for k in range(0, len(ids), shard):
        part = ids[k : k + shard]
        store.append_activations(part, {"resid_post": torch.stack([_value(i) for i in part])})
    store.close()
    return ActivationStore.open(root)


def _env():
    return {**os.environ, "PYTHONPATH": os.getcwd()}


# ------------------------------------------------------------------ 1. concurrent writers

_WRITER = textwrap.dedent(
    """
    import sys, torch
    sys.path.insert(0, sys.argv[3])
    from test_store import _manifest, _rec, _value
    from axislens.store import ActivationStore, SharedWriter
    root, w = sys.argv[1], int(sys.argv[2])
    store = ActivationStore.create(root, _manifest(), writer=SharedWriter(job="t"))
    print("READY", flush=True)
    sys.stdin.readline()  # all writers start together
    for i in range(60):
        rid = f"w{w}/{i:03d}"
        store.append_records([_rec(rid)])
        store.append_activations([rid], {"resid_post": _value(rid)[None]})
    print("DONE", flush=True)
    """
)


def test_three_concurrent_writer_processes_lose_nothing(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    root = tmp_path / "s"
    ActivationStore.create(root, _manifest()).close()
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(root), str(w), str(Path(__file__).parent)],
            env=_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for w in range(3)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "READY"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0 and "DONE" in out
    store = ActivationStore.open(root)
    want = [f"w{w}/{i:03d}" for w in range(3) for i in range(60)]
    assert sorted(store.records()) == sorted(want)
    assert store.collected_ids() == set(want)
    assert len(list((root / "acts").glob("*.safetensors"))) == 180
    got = store.activations(ids=want)
    assert torch.equal(got, torch.stack([_value(i) for i in want]))  # exact: store round trip
    # Writers that exited released their registration; an exclusive run may now write.
    assert list((root / ".writers").glob("*.json")) == []
    ActivationStore.create(root, _manifest()).close()


def test_shard_names_are_claimed_without_overwriting(tmp_path, monkeypatch):
    import axislens.store as S

    store = _fill(tmp_path / "s", ["a", "b"], shard=1)
    # A writer whose view of the folder is stale tries taken names first: it moves on.
    monkeypatch.setattr(S, "_next_index", lambda folder: 0)
    store.append_activations(["c"], {"resid_post": _value("c")[None]})
    store.append_records([_rec("c")])
    assert sorted(p.name for p in (tmp_path / "s" / "acts").glob("*.safetensors")) == [
        "00000.safetensors",
        "00001.safetensors",
        "00002.safetensors",
    ]

    # Without hard links (some network filesystems), O_EXCL claim files reserve the names.
    def no_link(src, dst):
        raise OSError(errno.EPERM, "hard links not supported")

    monkeypatch.setattr(S.os, "link", no_link)
    store.append_activations(["d"], {"resid_post": _value("d")[None]})
    store.append_records([_rec("d")])
    store = ActivationStore.open(tmp_path / "s")
    ids = ["a", "b", "c", "d"]
    # exact: a store round trip
    assert torch.equal(store.activations(ids=ids), torch.stack([_value(i) for i in ids]))
    assert sorted(store.records()) == ids
    assert not [p for p in (tmp_path / "s").rglob("*") if p.name.endswith((".claim", ".tmp"))]


# ------------------------------------------------------------------ 2. the writer lock

_HOLDER = textwrap.dedent(
    """
    import sys, time
    from axislens.store import ActivationStore, SharedWriter
    shared = sys.argv[2] == "shared"
    man = {"model": {"model_id": "synthetic"}, "hooks": ["resid_post"], "layers": [0, 1, 2], "d_model": 8}
    store = ActivationStore.create(sys.argv[1], man, writer=SharedWriter(job="job7") if shared else None)
    print("READY", flush=True)
    if sys.argv[3] == "hold":
        time.sleep(120)
    """
)


def _holder(tmp_path, root, mode, action):
    script = tmp_path / "holder.py"
    script.write_text(_HOLDER)
    p = subprocess.Popen(
        [sys.executable, str(script), str(root), mode, action],
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "READY"
    return p


def test_second_writer_fails_fast_and_a_dead_holder_is_taken_over(tmp_path):
    root = tmp_path / "s"
    p = _holder(tmp_path, root, "exclusive", "hold")
    try:
        msg = rf"{root}: store in use by pid {p.pid} on host {socket.gethostname()}"
        t0 = time.perf_counter()
        with pytest.raises(StoreError, match=msg):
            ActivationStore.create(root, _manifest())
        assert time.perf_counter() - t0 < 5
        # Reading never locks; writing through an opened store does.
        reader = ActivationStore.open(root)
        assert reader.records() == {}
        with pytest.raises(StoreError, match=msg):
            reader.append_records([_rec("x")])
        with pytest.raises(StoreError, match=msg):
            ActivationStore.create(root, _manifest(), writer=SharedWriter())
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    # The holder died without cleaning up: its lock is stale and taken over.
    assert json.loads((root / ".lock").read_text())["pid"] == p.pid
    with ActivationStore.create(root, _manifest()) as store:
        assert json.loads((root / ".lock").read_text())["pid"] == os.getpid()
        store.append_records([_rec("x")])
    assert not (root / ".lock").exists()  # released on leaving the with block


def test_lock_released_on_exit_close_and_garbage_collection(tmp_path):
    root = tmp_path / "s"
    p = _holder(tmp_path, root, "exclusive", "exit")
    assert p.wait(timeout=60) == 0
    assert not (root / ".lock").exists()  # released at interpreter exit
    store = ActivationStore.create(root, _manifest())
    again = ActivationStore.create(root, _manifest())  # re-entrant within one process
    store.close()
    assert (root / ".lock").exists()
    again.close()
    assert not (root / ".lock").exists()  # held just to write the ledger
    ActivationStore.create(root, _manifest())  # dropped at once: garbage-collected
    assert not (root / ".lock").exists()  # held just to write the ledger


def test_shared_writers_of_a_job_cooperate_but_exclude_other_runs(tmp_path):
    root = tmp_path / "s"
    p = _holder(tmp_path, root, "shared", "hold")
    try:
        with pytest.raises(StoreError, match=rf"pid {p.pid} .*shared writer of job 'job7'"):
            ActivationStore.create(root, _manifest())
        with ActivationStore.create(root, _manifest(), writer=SharedWriter(job="job7")) as s:
            s.append_records([_rec("x")])
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    with ActivationStore.create(root, _manifest(), writer=ExclusiveWriter()) as s:
        s.append_records([_rec("y")])  # the dead rank's registration was stale
    assert sorted(ActivationStore.open(root).records()) == ["x", "y"]


# ------------------------------------------------------------------ 3./4. checksums and repair


def _data_offset(path: Path) -> int:
    (n,) = struct.unpack("<Q", path.read_bytes()[:8])
    return 8 + n


def _flip(path: Path, at: int) -> None:
    b = bytearray(path.read_bytes())
    b[at] ^= 0x01
    path.write_bytes(bytes(b))


def test_flipped_byte_in_tensor_data_is_caught_and_repaired(tmp_path):
    ids = [f"i{k:02d}" for k in range(12)]
    store = _fill(tmp_path / "s", ids, shard=4)
    shard = tmp_path / "s" / "acts" / "00001.safetensors"
    _flip(shard, _data_offset(shard) + 3 * D * 4 + 2)  # row 0, layer 0, element 3
    store = ActivationStore.open(tmp_path / "s")
    with pytest.raises(StoreError, match=rf"corrupt activation shard .*{shard.name}.*crc32"):
        store.activations(ids=ids)
    store.activations(ids=ids[:4] + ids[8:])  # other shards still read
    assert store.repair() == ids[4:8]
    assert (shard.parent / (shard.name + ".corrupt")).exists()
    assert store.collected_ids() == set(ids) - set(ids[4:8])


def test_flipped_byte_in_ids_metadata_is_caught(tmp_path):
    store = _fill(tmp_path / "s", ["alpha", "bravo"], shard=2)
    shard = tmp_path / "s" / "acts" / "00000.safetensors"
    at = shard.read_bytes().index(b"bravo")
    _flip(shard, at)  # "bravo" -> "cravo": a silently renamed item without the checksum
    with pytest.raises(StoreError, match=rf"corrupt activation shard .*{shard.name}.*sha256"):
        ActivationStore.open(tmp_path / "s").collected_ids()
    assert store.repair() == ["alpha", "bravo"]


def test_collect_recomputes_a_shard_with_a_flipped_byte(tiny_llama, tmp_path):
    from axislens.collection.activations import collect

    convs = [
        [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i} " * 3}]
        for i in range(6)
    ]
    collect(tiny_llama, convs, tmp_path / "s", batch_size=2, progress=False)
    before = ActivationStore.open(tmp_path / "s").activations(kind="conversation")
    shard = sorted((tmp_path / "s" / "acts").glob("*.safetensors"))[1]
    _flip(shard, _data_offset(shard) + 100)
    with pytest.raises(StoreError, match=shard.name):
        ActivationStore.open(tmp_path / "s").activations(kind="conversation")
    summary = collect(tiny_llama, convs, tmp_path / "s", batch_size=2, progress=False)
    assert summary.collected == 2 and summary.reused == 4
    assert torch.equal(  # exact: resume identity (the shard is recomputed by the same forward)
        ActivationStore.open(tmp_path / "s").activations(kind="conversation"), before
    )


def test_truncated_or_flipped_record_shards_are_named_and_redone(tiny_llama, tmp_path):
    from axislens.collection.activations import collect

    convs = [
        [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i} " * 3}]
        for i in range(4)
    ]
    collect(tiny_llama, convs, tmp_path / "s", progress=False)
    items = tmp_path / "s" / "items" / "00000.json"
    want = ActivationStore.open(tmp_path / "s").records()
    text = items.read_bytes()
    items.write_bytes(text[: len(text) // 2])
    with pytest.raises(StoreError, match=rf"{items}: corrupt JSON shard"):
        ActivationStore.open(tmp_path / "s").records()
    collect(tiny_llama, convs, tmp_path / "s", progress=False)  # moved aside, records re-added
    assert ActivationStore.open(tmp_path / "s").records() == want
    assert (items.parent / "00000.json.corrupt").exists()
    # A flipped byte inside a response text is caught by the sha256 (still valid JSON).
    shard = sorted(items.parent.glob("*.json"))[-1]
    raw = shard.read_bytes()
    shard.write_bytes(raw.replace(b'"a1 a1', b'"a1 b1', 1))
    with pytest.raises(StoreError, match=rf"{shard}: corrupt JSON shard \(sha256"):
        ActivationStore.open(tmp_path / "s").records()


def test_generation_regenerates_records_of_a_truncated_shard(tmp_path):
    store = ActivationStore.create(tmp_path / "s", {"model": {"model_id": "m"}})
    store.append_records([_rec("a"), _rec("b")])
    store.append_records([_rec("c")])
    shard = tmp_path / "s" / "items" / "00000.json"
    shard.write_bytes(shard.read_bytes()[:40])
    assert store.repair(activations=False) == []
    assert sorted(ActivationStore.open(tmp_path / "s").records()) == ["c"]
    assert (shard.parent / "00000.json.corrupt").exists()


# ------------------------------------------------------------------ 4b. incremental repair


def _count_verified(monkeypatch) -> list[str]:
    """Names of the shards whose rows ``_verify`` checks from now on (one entry per call)."""
    seen: list[str] = []
    orig = ActivationStore._verify

    def counting(self, shard, hook, lo, block):
        seen.append(shard.name)
        return orig(self, shard, hook, lo, block)

    monkeypatch.setattr(ActivationStore, "_verify", counting)
    return seen


def _ledger(root: Path) -> dict:
    return json.loads((root / "acts" / ".verified.json").read_text())


def _rewrite_with_flip(shard: Path, at: int, *, mtime_ns: int) -> None:
    """Flip a byte in place (same size and inode) and give the file the mtime ``mtime_ns``."""
    st = shard.stat()
    _flip(shard, at)
    os.utime(shard, ns=(st.st_atime_ns, mtime_ns))


def test_repair_reads_only_shards_it_has_not_verified(tmp_path, monkeypatch):
    root = tmp_path / "s"
    ids = [f"i{k:02d}" for k in range(12)]
    _fill(root, ids, shard=4)
    seen = _count_verified(monkeypatch)
    assert ActivationStore.open(root).repair() == []
    assert sorted(seen) == ["00000.safetensors", "00001.safetensors", "00002.safetensors"]
    ledger = _ledger(root)
    assert ledger["version"] == 1 and sorted(ledger["shards"]) == sorted(set(seen))
    st = (root / "acts" / "00001.safetensors").stat()
    assert ledger["shards"]["00001.safetensors"] == [st.st_size, st.st_mtime_ns, st.st_ino]
    assert not (root / ".lock").exists()  # held just to write the ledger
    seen.clear()
    assert ActivationStore.open(root).repair() == []  # unchanged store: headers only
    assert seen == []
    store = ActivationStore.open(root)
    store.append_activations(["new"], {"resid_post": _value("new")[None]})
    store.close()
    assert ActivationStore.open(root).repair() == []
    assert seen == ["00003.safetensors"]
    assert "00003.safetensors" in _ledger(root)["shards"]


def test_repair_moves_aside_a_verified_shard_truncated_later(tmp_path, monkeypatch):
    root = tmp_path / "s"
    ids = [f"i{k:02d}" for k in range(12)]
    _fill(root, ids, shard=4)
    assert ActivationStore.open(root).repair() == []
    shard = root / "acts" / "00001.safetensors"
    shard.write_bytes(shard.read_bytes()[: _data_offset(shard) + 10])
    seen = _count_verified(monkeypatch)
    store = ActivationStore.open(root)
    assert store.repair() == ids[4:8]
    assert seen == []  # caught by its header: it no longer opens
    assert (shard.parent / (shard.name + ".corrupt")).exists() and not shard.exists()
    assert sorted(_ledger(root)["shards"]) == ["00000.safetensors", "00002.safetensors"]
    assert store.collected_ids() == set(ids) - set(ids[4:8])


def test_repair_rechecks_a_verified_shard_rewritten_with_a_flipped_byte(tmp_path, monkeypatch):
    root = tmp_path / "s"
    ids = [f"i{k:02d}" for k in range(12)]
    _fill(root, ids, shard=4)
    assert ActivationStore.open(root).repair() == []
    shard = root / "acts" / "00001.safetensors"
    old = shard.stat().st_mtime_ns
    _rewrite_with_flip(shard, _data_offset(shard) + 5 * D * 4 + 1, mtime_ns=old + 1_000_000)
    with pytest.raises(StoreError, match=rf"corrupt activation shard .*{shard.name}.*crc32"):
        ActivationStore.open(root).activations(ids=ids)  # reads still check every row
    seen = _count_verified(monkeypatch)
    assert ActivationStore.open(root).repair() == ids[4:8]
    assert seen == ["00001.safetensors"]  # the changed file only
    assert (shard.parent / (shard.name + ".corrupt")).exists()
    assert "00001.safetensors" not in _ledger(root)["shards"]


def test_full_repair_rechecks_every_shard(tmp_path, monkeypatch):
    root = tmp_path / "s"
    ids = [f"i{k:02d}" for k in range(12)]
    _fill(root, ids, shard=4)
    assert ActivationStore.open(root).repair() == []
    # A flipped byte that keeps size, mtime and inode: the ledger still vouches for the file,
    # so an incremental repair skips it, but a read names it and full=True moves it aside.
    shard = root / "acts" / "00002.safetensors"
    _rewrite_with_flip(shard, _data_offset(shard) + 7, mtime_ns=shard.stat().st_mtime_ns)
    seen = _count_verified(monkeypatch)
    assert ActivationStore.open(root).repair() == [] and seen == []
    with pytest.raises(StoreError, match=rf"corrupt activation shard .*{shard.name}.*crc32"):
        ActivationStore.open(root).activations(ids=ids[8:])
    seen.clear()
    assert ActivationStore.open(root).repair(full=True) == ids[8:]
    assert seen == ["00000.safetensors", "00001.safetensors", "00002.safetensors"]
    assert (shard.parent / (shard.name + ".corrupt")).exists()
    assert sorted(_ledger(root)["shards"]) == ["00000.safetensors", "00001.safetensors"]
    seen.clear()
    assert ActivationStore.open(root).repair(full=True) == []
    assert seen == ["00000.safetensors", "00001.safetensors"]


# ------------------------------------------------------------------ 5. manifest errors


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"format_version": 1, "model": "\xff\xfe"}', r"not UTF-8"),
        (b"[]", r"expected a JSON object, got list"),
        (None, r"missing field 'hooks'"),
        ("layers", r"missing field 'layers'"),
        ("bad-layers", r"field 'layers' is malformed"),
    ],
)
def test_bad_manifest_is_one_line_naming_the_file(tmp_path, content, message):
    _fill(tmp_path / "s", ["a"])
    man = tmp_path / "s" / "manifest.json"
    m = json.loads(man.read_text())
    if content is None:
        del m["hooks"]
        content = json.dumps(m).encode()
    elif content == "layers":
        del m["layers"]
        content = json.dumps(m).encode()
    elif content == "bad-layers":
        m["layers"] = "0-2"
        content = json.dumps(m).encode()
    man.write_bytes(content)
    with pytest.raises(StoreError, match=rf"^{man}: {message}") as err:
        ActivationStore.open(tmp_path / "s")
    assert "\n" not in str(err.value)


def test_records_only_store_may_lack_hooks_until_they_are_needed(tmp_path):
    store = ActivationStore.create(tmp_path / "s", {"model": {"model_id": "m"}})
    store.append_records([_rec("a")])
    store = ActivationStore.open(tmp_path / "s")
    assert list(store.records()) == ["a"]
    with pytest.raises(StoreError, match=rf"{tmp_path / 's' / 'manifest.json'}: no field 'hooks'"):
        store.activations()


# ------------------------------------------------------------------ 6. storage dtype


def test_bfloat16_store_halves_disk_and_keeps_the_axis(tmp_path):
    from axislens.analysis.vectors import assistant_axis

    torch.manual_seed(0)
    roles = [f"r{k}" for k in range(6)]
    ids = [f"role/{r}/p0/q{q}" for r in roles for q in range(8)] + [
        f"default/p0/q{q}" for q in range(8)
    ]
    base = torch.randn(len(LAYERS), D) * 4
    acts = {
        i: base + torch.randn(len(LAYERS), D) + (3.0 if i.startswith("default") else 0) for i in ids
    }

    def build(name, dtype):
        store = ActivationStore.create(tmp_path / name, _manifest(), store_dtype=dtype)
        store.append_records(
            [
                _rec(i, "default" if i.startswith("default") else "role", i.split("/")[1])
                if not i.startswith("default")
                else _rec(i, "default", "default")
                for i in ids
            ]
        )
        for k in range(0, len(ids), 8):
            part = ids[k : k + 8]
            store.append_activations(part, {"resid_post": torch.stack([acts[i] for i in part])})
        store.close()
        return ActivationStore.open(tmp_path / name)

    f32, bf16 = build("f32", None), build("bf16", "bfloat16")
    assert f32.manifest["dtype"] == "float32" and bf16.manifest["dtype"] == "bfloat16"
    with safe_open(str(tmp_path / "bf16" / "acts" / "00000.safetensors"), "pt") as f:
        assert f.get_slice("resid_post").get_dtype() == "BF16"
    assert bf16.activations(ids=ids[:3], dtype=torch.float64).dtype == torch.float64
    a = assistant_axis(f32, min_score=None, min_count=1)
    b = assistant_axis(bf16, min_score=None, min_count=1)
    va, vb = a.vectors.double(), b.vectors.double()
    assert torch.allclose(va, vb, rtol=2e-2, atol=2e-2 * float(va.abs().max()))
    cos = torch.nn.functional.cosine_similarity(va, vb, dim=-1)
    assert bool((cos > 0.999).all())

    def data_bytes(root):
        return sum(_size(p) - _data_offset(p) for p in (root / "acts").glob("*.safetensors"))

    ratio = data_bytes(tmp_path / "bf16") / data_bytes(tmp_path / "f32")
    assert ratio == pytest.approx(0.5)
    with pytest.raises(StoreError, match="field 'dtype' differs"):
        ActivationStore.create(tmp_path / "bf16", _manifest(), store_dtype="float32")
    with pytest.raises(StoreError, match="unsupported storage dtype 'int8'"):
        ActivationStore.create(tmp_path / "x", _manifest(), store_dtype="int8")


def _size(p: Path) -> int:
    return p.stat().st_size


# ------------------------------------------------------------------ 7. block reads


def _rowwise(store: ActivationStore, ids, cols):
    """The pre-0.2 reader: one get_slice per row."""
    index = store._activation_index()
    out = torch.empty((len(ids), len(cols), store.d_model))
    for pos, rid in enumerate(ids):
        shard, row = index[rid]
        with safe_open(str(shard), framework="pt") as f:
            out[pos] = f.get_slice("resid_post")[row : row + 1][0][cols].float()
    return out


@pytest.mark.parametrize("dtype", [None, "bfloat16"])
def test_block_read_equals_row_by_row_read(tmp_path, dtype):
    ids = [f"i{k:03d}" for k in range(97)]
    store = _fill(tmp_path / "s", ids, shard=13, store_dtype=dtype)
    g = torch.Generator().manual_seed(1)
    pick = [ids[int(k)] for k in torch.randint(0, len(ids), (150,), generator=g)]  # dups too
    for layers, cols in ((None, [0, 1, 2]), ([2, 0], [2, 0]), ([1], [1])):
        got = store.activations(ids=pick, layers=layers)
        # exact: two readers of the same stored bytes
        assert torch.equal(got, _rowwise(store, pick, cols))
    assert torch.equal(store.activations(ids=ids), _rowwise(store, ids, [0, 1, 2]))
    assert store.activations(ids=[]).shape == (0, 3, D)


# --------------------------------------------------------------------------- store and row identity


def _fill_with_records(root: Path, ids: list[str], *, text: str = "ok", shard: int = 3):
    store = ActivationStore.create(root, _manifest())
    recs = [_rec(i, text=text) for i in ids]
    store.append_records(recs)
    for k in range(0, len(ids), shard):
        part = recs[k : k + shard]
        store.append_activations(
            [r.id for r in part],
            {"resid_post": torch.stack([_value(r.id) for r in part])},
            records=part,
            tokens=[[1, 2, len(r.id)] for r in part],
        )
    store.close()
    return ActivationStore.open(root)


def test_every_shard_carries_the_store_id(tmp_path):
    store = _fill_with_records(tmp_path / "s", ["a", "b", "c", "d"])
    sid = store.store_id
    assert sid and len(sid) == 32
    for shard in (tmp_path / "s" / "acts").glob("*.safetensors"):
        with safe_open(str(shard), framework="pt") as f:
            meta = f.metadata()
        assert meta["store_id"] == sid and len(json.loads(meta["records_sha256"])) in (3, 1)
        assert len(json.loads(meta["tokens_sha256"])) in (3, 1)
    for shard in (tmp_path / "s" / "items").glob("*.json"):
        assert json.loads(shard.read_text())["store_id"] == sid
    assert _fill_with_records(tmp_path / "t", ["a"]).store_id != sid


def test_a_shard_copied_from_another_store_is_refused_and_collect_recomputes(tiny_llama, tmp_path):
    """The reproduction: another store's shard under our shard name read as ours."""
    import shutil

    from axislens.collection.activations import collect

    def convs(tag):
        return [
            [
                {"role": "user", "content": f"{tag} q{i}"},
                {"role": "assistant", "content": f"a{i} " * 3},
            ]
            for i in range(6)
        ]

    collect(tiny_llama, convs("mine"), tmp_path / "s", batch_size=3, progress=False)
    collect(tiny_llama, convs("other"), tmp_path / "o", batch_size=3, progress=False)
    before = ActivationStore.open(tmp_path / "s").activations(kind="conversation")
    target = tmp_path / "s" / "acts" / "00001.safetensors"
    shutil.copy(tmp_path / "o" / "acts" / "00000.safetensors", target)
    with pytest.raises(StoreError, match=rf"{target.name}.*shard of another store"):
        ActivationStore.open(tmp_path / "s").activations(kind="conversation")
    summary = collect(tiny_llama, convs("mine"), tmp_path / "s", batch_size=3, progress=False)
    assert summary.collected == 3 and summary.reused == 3
    after = ActivationStore.open(tmp_path / "s").activations(kind="conversation")
    assert torch.equal(after, before)  # exact: the same forward recomputes the same rows


def test_a_record_shard_copied_from_another_store_is_refused(tmp_path):
    import shutil

    _fill_with_records(tmp_path / "s", ["a", "b"])
    _fill_with_records(tmp_path / "o", ["a", "b"], text="another run's reply")
    target = tmp_path / "s" / "items" / "00001.json"
    shutil.copy(tmp_path / "o" / "items" / "00000.json", target)
    with pytest.raises(StoreError, match=rf"{target.name}: shard of another store"):
        ActivationStore.open(tmp_path / "s").records()
    store = ActivationStore.open(tmp_path / "s")
    store.repair()  # moves it aside: the store's own records remain
    assert {r.response for r in store.records().values()} == {"ok"}
    assert (target.parent / (target.name + ".corrupt")).exists()


def test_a_row_whose_record_changed_is_refused_and_repair_returns_it(tmp_path):
    store = _fill_with_records(tmp_path / "s", ["a", "b", "c"])
    store.append_records([_rec("b", text="an edited reply")])  # newer record, same id
    store.close()
    store = ActivationStore.open(tmp_path / "s")
    store.activations(ids=["a", "c"])  # untouched items read
    with pytest.raises(StoreError, match=r"item 'b' were computed from other text"):
        store.activations(ids=["a", "b"])
    assert store.stale_ids() == {"b"}
    assert store.repair() == ["b"] and store.collected_ids() == {"a", "c"}


def test_a_shard_without_checksums_or_id_is_refused_in_a_store_that_has_them(tmp_path):
    from safetensors.torch import load_file, save_file

    _fill_with_records(tmp_path / "s", ["a", "b", "c"])
    shard = tmp_path / "s" / "acts" / "00000.safetensors"
    with safe_open(str(shard), framework="pt") as f:
        meta = dict(f.metadata())
    tensors = load_file(str(shard))
    save_file(tensors, str(shard), metadata={k: v for k, v in meta.items() if k != "crc32"})
    with pytest.raises(StoreError, match="shard without checksums in a store that has them"):
        ActivationStore.open(tmp_path / "s").activations(ids=["a"])
    save_file(tensors, str(shard), metadata={k: v for k, v in meta.items() if k != "store_id"})
    with pytest.raises(StoreError, match="shard without a store id"):
        ActivationStore.open(tmp_path / "s").activations(ids=["a"])


def test_a_store_from_before_ids_reads_and_is_upgraded_on_its_first_write(tmp_path):
    """0.2 stores: no store id in the manifest or shards. They read as before; the first write
    gives the store an id and lists its shards as legacy; a later id-less shard is refused."""
    from safetensors.torch import load_file, save_file

    root = tmp_path / "s"
    _fill(root, ["a", "b", "c", "d"], shard=2)
    man = json.loads((root / "manifest.json").read_text())
    del man["store_id"]
    (root / "manifest.json").write_text(json.dumps(man))
    for shard in (root / "acts").glob("*.safetensors"):  # as 0.2 wrote them
        with safe_open(str(shard), framework="pt") as f:
            meta = {k: v for k, v in f.metadata().items() if k != "store_id"}
        save_file(load_file(str(shard)), str(shard), metadata=meta)
    for shard in (root / "items").glob("*.json"):
        body = json.loads(shard.read_text())
        del body["store_id"]
        shard.write_text(json.dumps(body))
    old = ActivationStore.open(root)
    assert old.store_id is None
    want = old.activations(ids=["a", "b", "c", "d"])
    upgraded = ActivationStore.create(root, _manifest())
    assert upgraded.store_id is not None
    assert sorted(upgraded.manifest["legacy_shards"]) == [
        "00000.json", "00000.safetensors", "00001.safetensors",
    ]  # fmt: skip
    upgraded.append_activations(["e"], {"resid_post": _value("e")[None]})
    upgraded.close()
    again = ActivationStore.open(root)
    assert torch.equal(again.activations(ids=["a", "b", "c", "d"]), want)
    stray = root / "acts" / "00009.safetensors"
    shutil_src = root / "acts" / "00000.safetensors"
    stray.write_bytes(shutil_src.read_bytes())  # an id-less shard that was not there before
    with pytest.raises(StoreError, match=rf"{stray.name}: shard without a store id"):
        ActivationStore.open(root).collected_ids()


def test_bit_rot_after_verification_is_caught_by_the_next_collect(tmp_path):
    """A verified shard flips a byte, keeping size, mtime and inode (disk corruption): the read
    error names `axislens store repair`, and the failed read drops the shard from the verified
    ledger, so the next (ledger) repair, as in any `axislens collect`, re-checks it."""
    root = tmp_path / "s"
    ids = [f"i{k:02d}" for k in range(9)]
    _fill_with_records(root, ids)
    assert ActivationStore.open(root).repair() == []
    shard = root / "acts" / "00001.safetensors"
    st = shard.stat()
    _rewrite_with_flip(shard, _data_offset(shard) + 2 * D * 4 + 1, mtime_ns=st.st_mtime_ns)
    assert shard.stat().st_ino == st.st_ino and shard.stat().st_size == st.st_size
    assert ActivationStore.open(root).repair() == []  # the ledger vouches for it: not re-read
    with pytest.raises(StoreError, match=rf"crc32.*run `axislens store repair {root}`"):
        ActivationStore.open(root).activations(ids=ids)
    assert "00001.safetensors" not in _ledger(root)["shards"]
    assert ActivationStore.open(root).repair() == ids[3:6]


def test_duplicate_hooks_are_one_store_and_an_old_manifest_with_them_resumes(tiny_llama, tmp_path):
    from axislens.collection.activations import collect

    convs = [[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a b c"}]]
    collect(tiny_llama, convs, tmp_path / "s", hooks=["resid_post", "resid_post"], progress=False)
    assert ActivationStore.open(tmp_path / "s").manifest["hooks"] == ["resid_post"]
    # a 0.2 manifest that recorded the repeat still resumes with the plain hook list
    man = json.loads((tmp_path / "s" / "manifest.json").read_text())
    man["hooks"] = ["resid_post", "resid_post"]
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(man))
    summary = collect(tiny_llama, convs, tmp_path / "s", hooks=["resid_post"], progress=False)
    assert summary.reused == 1 and ActivationStore.open(tmp_path / "s").hooks == ("resid_post",)
    with pytest.raises(StoreError, match="field 'hooks' differs"):
        collect(tiny_llama, convs, tmp_path / "s", hooks=["mlp_out"], progress=False)


def test_store_cli_verify_and_info_write_nothing(tmp_path, capsys):
    from axislens.cli import main

    root = tmp_path / "s"
    ids = [f"i{k:02d}" for k in range(6)]
    _fill_with_records(root, ids)
    files = sorted(p.name for p in root.rglob("*"))
    assert main(["store", "verify", str(root)]) == 0
    assert "sound" in capsys.readouterr().out
    assert main(["store", "info", str(root)]) == 0
    assert "6 items" in capsys.readouterr().out
    shard = root / "acts" / "00001.safetensors"
    _flip(shard, _data_offset(shard) + 7)
    assert main(["store", "verify", str(root)]) == 1
    out = capsys.readouterr().out
    assert shard.name in out and "crc32" in out and "1 problem(s)" in out
    assert sorted(p.name for p in root.rglob("*")) == files  # nothing moved, nothing written


def test_temp_files_of_killed_writers_are_removed_by_the_next_writer(tmp_path):
    root = tmp_path / "s"
    _fill(root, ["a", "b"], shard=2)
    live = subprocess.Popen(["sleep", "60"])
    try:
        dead_new = root / "acts" / ".new.safetensors.999999999-x1.tmp"
        old_style = root / "items" / ".new.json.k2j3.tmp"  # 0.2's names carry no pid
        alive = root / "acts" / f".new.safetensors.{live.pid}-x2.tmp"
        for p in (dead_new, old_style, alive):
            p.write_bytes(b"x" * 100)
        shared = ActivationStore.open(root, writer=SharedWriter(job="j"))
        shared.append_activations(["c"], {"resid_post": _value("c")[None]})
        shared.close()
        # a rank of a job removes only what dead processes left
        assert not dead_new.exists() and old_style.exists() and alive.exists()
        store = ActivationStore.open(root)
        store.append_activations(["d"], {"resid_post": _value("d")[None]})
        store.close()
        # the exclusive writer is alone: every temp file is left over
        assert not old_style.exists() and not alive.exists()
        assert ActivationStore.open(root).collected_ids() == {"a", "b", "c", "d"}
    finally:
        live.kill()
        live.wait()


def test_the_batch_size_is_part_of_a_stores_identity(tiny_llama, tmp_path):
    """Padding changes rows by up to ~1e-4, so a resume at another batch size would not end
    bit-identical to an uninterrupted run: it is refused, naming the field (force accepts)."""
    from axislens.collection.activations import collect

    convs = [
        [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a " * (i + 1)}]
        for i in range(4)
    ]
    collect(tiny_llama, convs, tmp_path / "s", batch_size=2, progress=False)
    assert ActivationStore.open(tmp_path / "s").manifest["collection"] == {"batch_size": 2}
    with pytest.raises(StoreError, match=r"field 'collection.batch_size' differs .*has 2.* 3"):
        collect(tiny_llama, convs, tmp_path / "s", batch_size=3, progress=False)
    collect(tiny_llama, convs, tmp_path / "s", batch_size=3, progress=False, force=True)
    forced = ActivationStore.open(tmp_path / "s").manifest["forced"]
    assert forced[-1]["field"] == "collection.batch_size"

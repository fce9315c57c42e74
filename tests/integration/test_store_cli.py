"""``axislens store`` on a real store of the embedded model: bit rot in a shard the resume had
already verified (same size, mtime and inode) is named by the read error, and the one command
that error names repairs it."""

from __future__ import annotations

import os
import re
import struct

import pytest
import torch

from axislens.cli import main
from axislens.store import ActivationStore, StoreError

pytestmark = pytest.mark.slow


def test_bit_rot_is_repaired_by_the_command_the_error_names(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["collect", "--model", "smollm2-135m-instruct", "--out", str(out), "--roles", "ghost",
            "--prompts", "1", "--questions", "4", "--no-default", "--mode", "prefill",
            "--layers", "0,15,29", "--batch-size", "2", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    store = ActivationStore.open(out)
    ids = sorted(store.collected_ids())
    before = store.activations(ids=ids)
    assert store.repair() == []  # verified: the ledger now vouches for every shard
    shard = sorted((out / "acts").glob("*.safetensors"))[0]
    st = shard.stat()
    (n,) = struct.unpack("<Q", shard.read_bytes()[:8])
    data = bytearray(shard.read_bytes())
    data[8 + n + 5] ^= 0x01
    with open(shard, "r+b") as f:  # in place: same inode and size
        f.write(bytes(data))
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(StoreError, match=rf"run `axislens store repair {out}`"):
        ActivationStore.open(out).activations(ids=ids)
    capsys.readouterr()
    assert main(["store", "verify", str(out)]) == 1
    assert shard.name in capsys.readouterr().out
    assert main(["store", "repair", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (
        "items to recompute with smollm2-135m-instruct" in printed
        and "recomputed 2 items" in printed
    )
    assert main(["store", "verify", str(out)]) == 0
    after = ActivationStore.open(out).activations(ids=ids)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-4)  # batch composition may differ
    assert main(["store", "info", str(out)]) == 0
    info = capsys.readouterr().out
    assert re.search(r"activations\s+4 items", info) and "smollm2" in info.lower()

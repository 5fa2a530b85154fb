import hashlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bytechat.data.batching import BatchError, get_batch
from bytechat.data.streams import open_stream, read_meta, write_stream


def test_stream_round_trip(tmp_path):
    docs = ["first doc", "second — é", "🙂"]
    meta = write_stream(iter(docs), tmp_path / "x.bin", source="test")
    data = open_stream(tmp_path / "x.bin")
    expected = "\n\n".join(docs).encode()
    assert bytes(data) == expected and data.dtype == np.uint8
    assert meta == read_meta(tmp_path / "x.bin")
    assert meta == {
        "bytes": len(expected),
        "documents": 3,
        "sha256": hashlib.sha256(expected).hexdigest(),
        "source": "test",
    }


def test_failed_write_leaves_nothing(tmp_path):
    def docs():
        yield "ok"
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_stream(docs(), tmp_path / "x.bin", source="t")
    assert list(tmp_path.iterdir()) == []


_KILL_AT_RENAME = """
import os, sys
import bytechat.data.streams as streams
real_replace, calls = os.replace, []
def replace(src, dst):
    calls.append(dst)
    if len(calls) == int(sys.argv[2]):
        os.kill(os.getpid(), 9)  # SIGKILL: no cleanup of any kind runs
    return real_replace(src, dst)
os.replace = replace
streams.write_stream(["new stream " * 50], sys.argv[1], source="new")
"""


@pytest.mark.parametrize("kill_at", [1, 2, 3, 4, 5])  # before each rename of a write, or none
def test_a_kill_leaves_the_old_pair_or_the_new_pair(tmp_path, kill_at):
    path = tmp_path / "x.bin"
    old_meta = write_stream(["old stream"], path, source="old")
    result = subprocess.run([sys.executable, "-c", _KILL_AT_RENAME, str(path), str(kill_at)], timeout=60)
    assert result.returncode == (-9 if kill_at <= 4 else 0)
    meta = read_meta(path)  # (rolls a committed write forward)
    data = bytes(open_stream(path))
    assert meta["sha256"] == hashlib.sha256(data).hexdigest() and meta["bytes"] == len(data)
    # Renames 1 and 2 make the pending stream and sidecar; 2 is the commit point.
    assert meta["source"] == ("old" if kill_at <= 2 else "new")
    if kill_at <= 2:
        assert meta == old_meta
    # The next write cleans up and leaves exactly the pair.
    write_stream(["third"], path, source="third")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin", "x.json"]
    assert read_meta(path)["sha256"] == hashlib.sha256(b"third").hexdigest()


def test_stream_memory_is_flat(tmp_path):
    """~64 MB of documents written with far less extra memory than the corpus."""
    script = f"""
import resource, sys
from bytechat.data.streams import write_stream
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
doc = "x" * 65536
write_stream((doc for _ in range(1000)), {str(tmp_path / "big.bin")!r}, "gen")
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) // 1024)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert (tmp_path / "big.bin").stat().st_size > 65_000_000
    assert int(out.stdout) < 30  # MiB of peak growth for a 64 MiB corpus


def streams():
    return {
        "wiki": np.frombuffer(bytes(range(256)) * 4, dtype=np.uint8),
        "roam": np.frombuffer(b"roam notes " * 20, dtype=np.uint8),
        "primer": np.frombuffer(b"user: hi\nassistant: hello\n" * 5, dtype=np.uint8),
    }


P = {"wiki": 0.784, "roam": 0.196, "primer": 0.020}


def test_batch_shift_range_and_dtype():
    x, y = get_batch(streams(), P, B=8, T=32, device="cpu", generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 32) and x.dtype == y.dtype == torch.int64
    assert torch.equal(y[:, :-1], x[:, 1:])
    assert int(x.min()) >= 0 and int(x.max()) <= 255


def test_batch_deterministic_for_a_generator():
    a = get_batch(streams(), P, 8, 32, "cpu", torch.Generator().manual_seed(1))
    b = get_batch(streams(), P, 8, 32, "cpu", torch.Generator().manual_seed(1))
    c = get_batch(streams(), P, 8, 32, "cpu", torch.Generator().manual_seed(2))
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])


def test_sources_follow_p():
    s = streams()
    gen = torch.Generator().manual_seed(0)
    x, _ = get_batch(s, {"wiki": 0.0, "roam": 1.0, "primer": 0.0}, 16, 16, "cpu", gen)
    assert set(bytes(x.flatten().tolist())) <= set(b"roam notes ")


def test_rank_slices_make_up_the_global_batch():
    full = get_batch(streams(), P, 8, 16, "cpu", torch.Generator().manual_seed(3))[0]
    parts = [
        get_batch(streams(), P, 8, 16, "cpu", torch.Generator().manual_seed(3), rank=r, world_size=2)[0] for r in (0, 1)
    ]
    assert torch.equal(torch.cat(parts), full)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 8), st.integers(1, 40), st.integers(0, 2**31))
def test_every_window_is_a_real_slice(B, T, seed):
    s = streams()
    x, y = get_batch(s, P, B, T, "cpu", torch.Generator().manual_seed(seed))
    haystacks = {k: bytes(v) for k, v in s.items()}
    for row_x, row_y in zip(x.tolist(), y.tolist()):
        window = bytes(row_x + row_y[-1:])
        assert any(window in h for h in haystacks.values())


def test_short_source_and_bad_p_are_errors():
    s = streams()
    with pytest.raises(BatchError, match="'roam': 220 bytes is shorter than block_size"):
        get_batch(s, P, 2, 500, "cpu", torch.Generator())
    with pytest.raises(BatchError, match="sum to 1"):
        get_batch(s, {"wiki": 0.5, "roam": 0.1, "primer": 0.1}, 2, 8, "cpu", torch.Generator())
    with pytest.raises(BatchError, match="wiki: must be a probability"):
        get_batch(s, {"wiki": -0.5, "roam": 1.4, "primer": 0.1}, 2, 8, "cpu", torch.Generator())

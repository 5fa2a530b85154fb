"""device, rng and tokenizer."""

import subprocess
from pathlib import Path
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from bytechat.core import device
from bytechat.core import rng
from bytechat.text import tokenizer
from tests.conftest import REPO


def test_same_seed_same_randint_sequence():
    rng.set_seed(123)
    a = torch.randint(0, 256, (64,))
    rng.set_seed(123)
    b = torch.randint(0, 256, (64,))
    rng.set_seed(124)
    c = torch.randint(0, 256, (64,))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_explicit_generator_ignores_global_rng():
    a = torch.randint(0, 256, (16,), generator=rng.make_generator(7))
    torch.rand(100)  # someone else draws from the global RNG
    b = torch.randint(0, 256, (16,), generator=rng.make_generator(7))
    assert torch.equal(a, b)


def test_get_device_cpu_and_forced(monkeypatch):
    monkeypatch.delenv(device.ENV_VAR, raising=False)
    assert device.get_device().type in ("cpu", "cuda", "mps")
    assert device.get_device("cpu") == torch.device("cpu")
    monkeypatch.setenv(device.ENV_VAR, "cpu")
    assert device.get_device() == torch.device("cpu")
    monkeypatch.setenv(device.ENV_VAR, "floppy")
    with pytest.raises(ValueError, match="BYTECHAT_DEVICE"):
        device.get_device()


def test_device_module_prints():
    out = subprocess.run(
        [sys.executable, "-c", "from bytechat.core import device; print(device.get_device())"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    assert out.stdout.strip() in ("cpu", "cuda", "mps")


def test_autocast_never_fp16_on_cpu():
    assert device.autocast_dtype(torch.device("cpu"), "fp32") is None
    assert device.autocast_dtype(torch.device("cpu"), "bf16") is torch.bfloat16
    assert device.autocast_dtype(torch.device("cpu"), "auto") in (None, torch.bfloat16)
    with pytest.raises(ValueError, match="dtype"):
        device.autocast_dtype(torch.device("cpu"), "fp16")


@given(st.text())
def test_tokenizer_round_trip(text):
    ids = tokenizer.encode(text)
    assert all(0 <= i < tokenizer.VOCAB_SIZE for i in ids)
    assert tokenizer.decode(ids) == text


@given(st.binary())
def test_decode_never_raises(data):
    assert isinstance(tokenizer.decode(data), str)


def test_decode_invalid_bytes_gives_replacement_char():
    assert tokenizer.decode(b"ok\xff") == "ok\ufffd"


@given(st.text(), st.data())
def test_stream_decoder_never_splits_a_character(text, data):
    raw = text.encode("utf-8")
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=8)))
    decoder = tokenizer.StreamDecoder()
    pieces, prev = [], 0
    for cut in cuts + [len(raw)]:
        pieces.append(decoder.feed(raw[prev:cut]))
        prev = cut
    pieces.append(decoder.flush())
    assert "\ufffd" not in "".join(pieces) or "\ufffd" in text
    assert "".join(pieces) == text


def test_stream_decoder_holds_back_partial_emoji():
    decoder = tokenizer.StreamDecoder()
    emoji = "🙂".encode()
    assert [decoder.feed(b) for b in emoji[:-1]] == ["", "", ""]
    assert decoder.feed(emoji[-1]) == "🙂"


def test_the_code_is_formatted_by_the_one_formatter():
    """`make format` (ruff format, configured in pyproject.toml) leaves nothing to change."""
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.exists():
        pytest.skip("ruff is not installed in this venv (make setup installs it)")
    done = subprocess.run([str(ruff), "format", "--check", "--quiet", "."], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, "run `make format`:\n" + done.stdout[-2000:] + done.stderr[-2000:]
    marked = subprocess.run(
        ["git", "grep", "-l", "-e", "fmt:[ ]skip", "--", "*.py"], cwd=REPO, capture_output=True, text=True
    )
    assert marked.stdout == "", "no formatter-fighting markers: " + marked.stdout

"""Checkpoint format, atomic rotation, damage detection and fallback to last.prev.pt."""

from __future__ import annotations

import os
import random
import stat

import pytest
import torch

from bytechat.model import checkpoint as ckpt_io
from bytechat.core import paths
from bytechat.core.config import LEGACY_MODEL_CONFIG, LEGACY_TRAIN_CONFIG, ModelConfig
from bytechat.model import GPT
from bytechat.core.rng import make_generator
from tests.helpers import TINY_MODEL, train_config
from tests.helpers import train_tiny as run

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = {
    "p_train": {"wiki": 0.6, "roam": 0.3, "primer": 0.1},
    "p_chat": {"wiki": 0.2, "roam": 0.2, "primer": 0.6},
    "chat_fraction": 0.25,
    "seed": 7,
    "streams": {"wiki_train": "ab" * 32},
}
CODE = {"train.py": "cd" * 32, "model/blocks.py": "ef" * 32}


def tiny_checkpoint(step: int = 3) -> dict:
    model = GPT(ModelConfig(**TINY_MODEL))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 4, dtype=torch.long))[1].backward()
    opt.step()
    return ckpt_io.build_checkpoint(
        model=model,
        optimizer=opt,
        model_config=ModelConfig(**TINY_MODEL),
        train_config=train_config(),
        profile="tiny",
        step=step,
        val_loss=2.5,
        best_val_loss=2.4,
        sampler=make_generator(1),
        data=DATA,
        code=CODE,
    )


def test_roundtrip_has_every_key_and_a_valid_checksum(tmp_path):
    ckpt = tiny_checkpoint()
    ckpt_io.save_checkpoint(ckpt, tmp_path / "last.pt")
    loaded = ckpt_io.load_checkpoint(tmp_path / "last.pt")
    assert set(ckpt_io.REQUIRED_KEYS) <= set(loaded)
    assert loaded["format"] == "bytechat-checkpoint" and loaded["version"] == 1
    assert loaded["checksum"].startswith("sha256:")
    assert loaded["model_config"] == ckpt["model_config"] and loaded["data"] == DATA
    for name, tensor in ckpt["model"].items():
        assert torch.equal(loaded["model"][name], tensor) and tensor.dtype == torch.float32
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_state_dict_has_no_wrapper_prefixes():
    model = GPT(ModelConfig(**TINY_MODEL))

    class Wrapper(torch.nn.Module):  # what DDP looks like: the model under .module
        def __init__(self, inner):
            super().__init__()
            self.module = inner

    clean = ckpt_io.clean_state_dict(Wrapper(model))
    assert set(clean) == set(model.state_dict())
    prefixed = {f"_orig_mod.module.{k}": v for k, v in model.state_dict().items()}
    assert set(ckpt_io.clean_state_dict(prefixed)) == set(model.state_dict())


def test_error_line_is_the_type_and_the_first_line_of_the_message():
    assert ckpt_io.error_line(RuntimeError("shape mismatch\n  at layer 3")) == "RuntimeError: shape mismatch"
    assert ckpt_io.error_line(EOFError()) == "EOFError"
    assert ckpt_io.error_line(ValueError("x" * 500)) == "ValueError: " + "x" * 200


def test_rng_capture_and_restore():
    state = ckpt_io.capture_rng()
    a = (random.random(), torch.rand(3))
    ckpt_io.restore_rng(state)
    b = (random.random(), torch.rand(3))
    assert a[0] == b[0] and torch.equal(a[1], b[1])


def test_keep_previous_rotates_last_to_prev(tmp_path):
    ckpt_io.save_checkpoint(tiny_checkpoint(step=1), tmp_path / "last.pt", keep_previous=True)
    ckpt_io.save_checkpoint(tiny_checkpoint(step=2), tmp_path / "last.pt", keep_previous=True)
    assert ckpt_io.load_checkpoint(tmp_path / "last.pt")["step"] == 2
    assert ckpt_io.load_checkpoint(tmp_path / "last.prev.pt")["step"] == 1


def flip_middle_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, message",
    [
        (flip_middle_byte, "checksum mismatch"),
        (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "unreadable"),
        (lambda p: p.write_bytes(b""), "unreadable"),
    ],
    ids=["flipped-byte", "truncated", "empty"],
)
def test_damaged_file_is_a_one_line_error_naming_it(tmp_path, damage, message):
    path = tmp_path / "last.pt"
    ckpt_io.save_checkpoint(tiny_checkpoint(), path)
    damage(path)
    with pytest.raises(ckpt_io.CheckpointError, match=message) as info:
        ckpt_io.load_checkpoint(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_key_and_foreign_file_are_rejected(tmp_path):
    ckpt = tiny_checkpoint()
    del ckpt["sampler"]
    torch.save(ckpt, tmp_path / "a.pt")
    with pytest.raises(ckpt_io.CheckpointError, match="missing key.*sampler"):
        ckpt_io.load_checkpoint(tmp_path / "a.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "b.pt")
    with pytest.raises(ckpt_io.CheckpointError, match="not a bytechat checkpoint"):
        ckpt_io.load_checkpoint(tmp_path / "b.pt")


def test_load_latest_falls_back_to_prev_and_deletes_nothing(tmp_path, capsys):
    for step in (1, 2):
        ckpt_io.save_checkpoint(tiny_checkpoint(step=step), tmp_path / "last.pt", keep_previous=True)
    flip_middle_byte(tmp_path / "last.pt")
    ckpt, path = ckpt_io.load_latest(tmp_path)
    assert path.name == "last.prev.pt" and ckpt["step"] == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path / "last.pt") in err[0] and "checksum mismatch" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.corrupt.pt", "last.prev.pt"]


def test_load_latest_with_no_valid_file_raises(tmp_path, capsys):
    (tmp_path / "last.pt").write_bytes(b"garbage")
    with pytest.raises(ckpt_io.CheckpointError, match="no valid checkpoint"):
        ckpt_io.load_latest(tmp_path)
    assert ckpt_io.load_latest(tmp_path / "empty") is None


def test_differences_name_the_changed_fields():
    ckpt = tiny_checkpoint()
    same = ckpt_io.differences(ckpt, ModelConfig(**TINY_MODEL), train_config(), DATA)
    assert same == []
    neutral = train_config(log_every=1, checkpoint_every=7)
    assert ckpt_io.differences(ckpt, ModelConfig(**TINY_MODEL), neutral, DATA) == []
    diffs = ckpt_io.differences(
        ckpt, ModelConfig(**{**TINY_MODEL, "n_layer": 3}), train_config(steps=5), {**DATA, "seed": 8}
    )
    assert diffs == ["model_config.n_layer: 2 -> 3", "train_config.steps: 12 -> 5", "data.seed: 7 -> 8"]


def test_a_checkpoint_without_the_now_required_keys_resumes():
    """A checkpoint whose configs leave out keys that were optional then (same values as
    their old defaults) is not a different run: resume goes on."""
    ckpt = tiny_checkpoint()
    for section, legacy in (("model_config", LEGACY_MODEL_CONFIG), ("train_config", LEGACY_TRAIN_CONFIG)):
        for name in legacy:
            del ckpt[section][name]
    assert ckpt_io.differences(ckpt, ModelConfig(**TINY_MODEL), train_config(), DATA) == []
    assert ckpt_io.differences(ckpt, ModelConfig(**{**TINY_MODEL, "dropout": 0.1}), train_config(beta2=0.99), DATA) == [
        "model_config.dropout: 0.0 -> 0.1",
        "train_config.beta2: 0.95 -> 0.99",
    ]


def test_differences_compare_the_code_when_given():
    ckpt = tiny_checkpoint()
    assert ckpt_io.differences(ckpt, ModelConfig(**TINY_MODEL), train_config(), DATA, CODE) == []
    edited = {**CODE, "model/blocks.py": "00" * 32, "model/new.py": "11" * 32}
    assert ckpt_io.differences(ckpt, ModelConfig(**TINY_MODEL), train_config(), DATA, edited) == [
        "code.model/blocks.py: 'efefefefefefef...efef' -> '00000000000000...0000'",
        "code.model/new.py: '<absent>' -> '11111111111111...1111'",
    ]
    assert ckpt_io.differences(ckpt, ModelConfig(**TINY_MODEL), train_config(), DATA) == []  # code None: not compared


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_saved_files_get_the_mode_open_would_give(tmp_path, umask, mode):
    """Atomic writes go through a mkstemp file (0600); the final file honours the umask."""
    from bytechat.core.atomic import current_umask, write_text

    before = os.umask(umask)
    try:
        assert current_umask() == umask
        ckpt_io.save_checkpoint(tiny_checkpoint(), tmp_path / "last.pt")
        write_text(tmp_path / "notes.txt", "hi")
        with open(tmp_path / "plain.txt", "w") as fh:  # what a plain open() gives
            fh.write("hi")
    finally:
        os.umask(before)
    for name in ("last.pt", "notes.txt", "plain.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_find_checkpoint_prefers_best_then_last(tmp_path, capsys):
    ckpt_io.save_checkpoint(tiny_checkpoint(step=5), tmp_path / "last.pt")
    assert ckpt_io.find_checkpoint(tmp_path).name == "last.pt"
    ckpt_io.save_checkpoint(tiny_checkpoint(step=4), tmp_path / "best.pt")
    assert ckpt_io.find_checkpoint(tmp_path).name == "best.pt"
    flip_middle_byte(tmp_path / "best.pt")
    assert ckpt_io.find_checkpoint(tmp_path).name == "last.pt"
    assert "best.pt" in capsys.readouterr().err
    with pytest.raises(ckpt_io.CheckpointError, match="train first"):
        ckpt_io.find_checkpoint(tmp_path / "none")


def test_training_resumes_from_prev_when_last_is_damaged_and_ends_identical(tiny_root, capsys):
    """A run whose last.pt got damaged redoes the steps since last.prev.pt and reaches the
    very same weights (bit for bit) as the run that wrote the damaged file."""
    run()
    ckdir = paths.checkpoints_dir("tiny")
    reference = ckpt_io.load_checkpoint(ckdir / "last.pt")
    flip_middle_byte(ckdir / "last.pt")
    capsys.readouterr()
    result = run()
    assert result.resumed_from == 8 and result.step == 12
    assert "last.pt" in capsys.readouterr().err
    again = ckpt_io.load_checkpoint(ckdir / "last.pt")
    for name, tensor in reference["model"].items():
        assert torch.equal(again["model"][name], tensor), name
    assert (ckdir / "last.corrupt.pt").exists()

"""Export to safetensors and loading any model artifact."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from bytechat.serve import chat_cli
from bytechat.model import export
from bytechat.model.checkpoint import build_checkpoint, save_checkpoint
from bytechat.core.config import LEGACY_MODEL_CONFIG, to_dict
from bytechat.model.export import ModelLoadError, export_checkpoint, load_model, newest_export
from bytechat.model import GPT
from bytechat.notes.blocks import NoteBlock, notes_system_content, render_notes
from bytechat.text.chat_format import format_chat
from tests.helpers import model_config, train_config

CFG = model_config()


def make_checkpoint(path, seed=0, step=100, prefix="", val_loss=1.25):
    """A checkpoint in the training engineer's format; returns the model it holds."""
    torch.manual_seed(seed)
    model = GPT(CFG)
    ckpt = {
        "format": "bytechat-checkpoint",
        "version": 1,
        "model": {prefix + k: v for k, v in model.state_dict().items()},
        "model_config": to_dict(CFG),
        "train_config": {"steps": 200},
        "profile": "tiny",
        "step": step,
        "val_loss": val_loss,
        "best_val_loss": val_loss,
        "optimizer": {"state": {}, "param_groups": []},
        "rng": {"torch": torch.get_rng_state()},
        "sampler": {"position": 3},
        "data": {"streams": "x"},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return model.eval()


def test_the_answer_style_a_model_was_taught_travels_to_the_chat_engine(tmp_path):
    """A span-taught model's answers are no quotes: the engine's faithful decoding must
    know (copying.copy_guard). Checkpoints from before it was recorded say nothing."""
    from bytechat.serve.generate import ChatEngine

    for style in ("span", None):
        path = tmp_path / str(style) / "best.pt"
        make_checkpoint(path)
        if style is not None:
            ckpt = torch.load(path, weights_only=False)
            torch.save({**ckpt, "answer_style": style}, path)
        out = export_checkpoint(path, tmp_path / str(style) / "export")
        assert json.loads((out / "config.json").read_text())["answer_style"] == style
        for target in (path, out):
            model, info = load_model(target, device="cpu")
            assert info["answer_style"] == style and ChatEngine(model, info=info).answer_style == style


def test_an_unknown_answer_style_is_refused_in_one_line(tmp_path):
    path = tmp_path / "best.pt"
    make_checkpoint(path)
    torch.save({**torch.load(path, weights_only=False), "answer_style": "poetry"}, path)
    with pytest.raises(ModelLoadError, match=r"best\.pt: answer_style 'poetry' is not one of span, quote"):
        load_model(path, device="cpu")
    make_checkpoint(path)
    out = export_checkpoint(path, tmp_path / "export")
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "answer_style": 3}))
    with pytest.raises(ModelLoadError, match=r"config\.json: answer_style 3 is not one of"):
        load_model(out, device="cpu")


JONAS_ASKED = format_chat(
    [
        {
            "role": "system",
            "content": notes_system_content(render_notes([NoteBlock("Jonas", "birthday: 14 February", 0)])),
        },
        {"role": "user", "content": "when is Jonas's birthday?"},
    ]
).encode()


def test_the_calibrated_abstain_margin_travels_to_the_chat_engine(tmp_path):
    """The eval stage's margin (how sure the model must be to refuse where notes are shown)
    goes into the export's config and from there into the engine's faithful decoding; a
    checkpoint, or an export without one, decodes with copying.ABSTAIN_MARGIN."""
    from bytechat.serve import copying
    from bytechat.serve.generate import ChatEngine

    path = tmp_path / "best.pt"
    make_checkpoint(path)
    for margin in (0.0, 2.5, None):
        out = export_checkpoint(path, tmp_path / f"export-{margin}", abstain_margin=margin)
        assert json.loads((out / "config.json").read_text())["abstain_margin"] == margin
        model, info = load_model(out, device="cpu")
        engine = ChatEngine(model, info=info)
        assert engine.abstain_margin == margin
        guard = copying.copy_guard(JONAS_ASKED, True, None, 100, engine.abstain_margin)
        assert guard.lowered(b"") and guard.margin == (copying.ABSTAIN_MARGIN if margin is None else margin)
    model, info = load_model(path, device="cpu")
    assert ChatEngine(model, info=info).abstain_margin is None
    with pytest.raises(ModelLoadError, match=r"abstain_margin -1 is not a number of nats >= 0"):
        export_checkpoint(path, tmp_path / "bad", abstain_margin=-1)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "abstain_margin": "sure"}))
    with pytest.raises(ModelLoadError, match=r"config\.json: abstain_margin 'sure' is not a number"):
        load_model(out, device="cpu")


def logits_of(model):
    idx = torch.arange(20).view(1, 20) * 7 % 256
    return model(idx)[0]


def test_export_then_load_gives_identical_logits(tmp_path):
    model = make_checkpoint(tmp_path / "ckpt" / "best.pt")
    out = export_checkpoint(tmp_path / "ckpt" / "best.pt", tmp_path / "export" / "tiny")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    loaded, info = load_model(out, device="cpu")
    assert not loaded.training
    torch.testing.assert_close(logits_of(loaded), logits_of(model), rtol=0, atol=0)
    assert info["kind"] == "export" and info["step"] == 100 and info["profile"] == "tiny"
    assert info["params"] == model.num_params() and info["model_config"] == to_dict(CFG) and info["device"] == "cpu"
    config = json.loads((out / "config.json").read_text())
    assert config["format"] == "bytechat-export" and config["version"] == 1 and config["val_loss"] == 1.25
    for alias in (out / "config.json", out / "model.safetensors"):
        torch.testing.assert_close(logits_of(load_model(alias, device="cpu")[0]), logits_of(model), rtol=0, atol=0)


def test_export_is_deterministic_and_replaces_atomically(tmp_path):
    make_checkpoint(tmp_path / "last.pt")
    out = tmp_path / "export"
    export_checkpoint(tmp_path / "last.pt", out)
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    export_checkpoint(tmp_path / "last.pt", out)  # over an existing export
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "last.pt"], "no temp folders left behind"
    assert not any(k in json.loads(first["config.json"]) for k in ("exported_at", "time", "timestamp"))


def test_load_training_checkpoint_and_checkpoints_folder(tmp_path):
    last = make_checkpoint(tmp_path / "checkpoints" / "last.pt", seed=1, step=200)
    model, info = load_model(tmp_path / "checkpoints" / "last.pt", device="cpu")
    torch.testing.assert_close(logits_of(model), logits_of(last), rtol=0, atol=0)
    assert info["kind"] == "checkpoint" and info["step"] == 200
    assert load_model(tmp_path / "checkpoints", device="cpu")[1]["path"].endswith("last.pt")
    make_checkpoint(tmp_path / "checkpoints" / "best.pt", seed=2, step=150)
    assert load_model(tmp_path / "checkpoints", device="cpu")[1]["path"].endswith("best.pt")
    assert load_model(tmp_path, device="cpu")[1]["path"].endswith("best.pt")  # a run folder


def test_wrapper_prefixes_are_accepted_and_never_exported(tmp_path):
    model = make_checkpoint(tmp_path / "best.pt", prefix="module._orig_mod.")
    loaded, _ = load_model(tmp_path / "best.pt", device="cpu")
    torch.testing.assert_close(logits_of(loaded), logits_of(model), rtol=0, atol=0)
    out = export_checkpoint(tmp_path / "best.pt", tmp_path / "export")
    keys = list(load_file(out / "model.safetensors"))
    assert "wte.weight" in keys and not any(k.startswith(("module.", "_orig_mod.")) for k in keys)


def assert_one_line_error(path, match):
    with pytest.raises(ModelLoadError) as err:
        load_model(path, device="cpu")
    message = str(err.value)
    assert "\n" not in message and str(path) in message and match in message
    return message


def test_missing_and_corrupt_paths_raise_model_load_error(tmp_path):
    assert_one_line_error(tmp_path / "nope", "no such file")
    make_checkpoint(tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    assert_one_line_error(tmp_path / "truncated.pt", "unreadable")
    torch.save({"hello": 1}, tmp_path / "foreign.pt")
    assert_one_line_error(tmp_path / "foreign.pt", "not a bytechat checkpoint")
    (tmp_path / "notes.txt").write_text("hi")
    assert_one_line_error(tmp_path / "notes.txt", "not a model")
    assert_one_line_error(tmp_path / "empty_dir_does_not_exist", "no such file")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(tmp_path / "empty", "neither config.json")


def test_checksum_catches_a_flipped_byte_in_the_weights(tmp_path):
    torch.manual_seed(0)
    model = GPT(CFG)
    ckpt = build_checkpoint(
        model=model,
        optimizer=torch.optim.AdamW(model.parameters()),
        model_config=CFG,
        train_config=train_config(),
        profile="tiny",
        step=1,
        val_loss=None,
        best_val_loss=None,
        sampler=torch.Generator().manual_seed(0),
        data={},
    )
    save_checkpoint(ckpt, tmp_path / "best.pt")
    load_model(tmp_path / "best.pt", device="cpu")  # the training engineer's files load
    data = bytearray((tmp_path / "best.pt").read_bytes())
    needle = model.wte.weight.detach()[3, :4].numpy().tobytes()
    data[data.index(needle) + 1] ^= 0x40  # inside a tensor: torch.load itself would not notice
    (tmp_path / "best.pt").write_bytes(bytes(data))
    assert_one_line_error(tmp_path / "best.pt", "checksum")


def test_corrupt_export_raises_model_load_error(tmp_path):
    make_checkpoint(tmp_path / "best.pt")
    out = export_checkpoint(tmp_path / "best.pt", tmp_path / "export")
    weights = out / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 3])
    assert_one_line_error(out, "unreadable safetensors")
    weights.write_bytes(good)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text("{not json")
    assert_one_line_error(out, "unreadable export config")
    config["model_config"]["n_embd"] = 64
    (out / "config.json").write_text(json.dumps(config))
    assert_one_line_error(out, "weights do not fit")
    (out / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="config.json: missing"):
        load_model(out / "model.safetensors", device="cpu")


def test_newest_export(tmp_path):
    assert newest_export(tmp_path / "export") is None
    make_checkpoint(tmp_path / "best.pt")
    a = export_checkpoint(tmp_path / "best.pt", tmp_path / "export" / "a")
    b = export_checkpoint(tmp_path / "best.pt", tmp_path / "export" / "b")
    os.utime(a / "config.json", (2_000_000_000, 2_000_000_000))
    assert newest_export(tmp_path / "export") == a
    os.utime(b / "config.json", (2_100_000_000, 2_100_000_000))
    assert newest_export(tmp_path / "export") == b


def test_command_line_export_and_the_smoke_summary(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BYTECHAT_ROOT", str(tmp_path))
    assert chat_cli.main(["--summary", "tiny"]) == 2
    assert capsys.readouterr().err.startswith(
        "error: artifacts/export/tiny: no export for profile 'tiny'; run `make smoke`"
    )
    ckpt = tmp_path / "artifacts" / "runs" / "tiny" / "checkpoints" / "best.pt"
    model = make_checkpoint(ckpt, val_loss=1.0)
    assert export.main([str(ckpt.parent), str(tmp_path / "artifacts" / "export" / "tiny")]) == 0
    capsys.readouterr()
    assert chat_cli.main(["--summary", "tiny"]) == 0
    text = capsys.readouterr().out
    assert "make chat CKPT=artifacts/export/tiny" in text and "make serve CKPT=artifacts/export/tiny" in text
    assert f"{model.num_params():,} parameters" in text and "1.443 bits/byte" in text
    config = json.loads((tmp_path / "artifacts" / "export" / "tiny" / "config.json").read_text())
    assert config["source_checkpoint"] == "artifacts/runs/tiny/checkpoints/best.pt"


def test_model_config_with_another_vocabulary_is_refused_in_one_line(tmp_path):
    make_checkpoint(tmp_path / "best.pt")
    out = export_checkpoint(tmp_path / "best.pt", tmp_path / "export")
    config = json.loads((out / "config.json").read_text())
    config["model_config"]["vocab_size"] = 300
    (out / "config.json").write_text(json.dumps(config))
    message = assert_one_line_error(out, "vocab_size is 300")
    assert "need 256" in message
    ckpt = torch.load(tmp_path / "best.pt", weights_only=False)
    ckpt["model_config"]["vocab_size"] = 512
    torch.save(ckpt, tmp_path / "wide.pt")
    assert_one_line_error(tmp_path / "wide.pt", "vocab_size is 512")


def test_an_older_export_without_the_now_required_keys_still_loads(tmp_path):
    """Exports written before every model setting was required may leave some out; those
    meant the code defaults of the time (LEGACY_MODEL_CONFIG), so they still load."""
    torch.manual_seed(0)
    model = GPT(CFG)
    make_checkpoint(tmp_path / "best.pt")
    out = export_checkpoint(tmp_path / "best.pt", tmp_path / "export")
    config = json.loads((out / "config.json").read_text())
    for name in LEGACY_MODEL_CONFIG:
        del config["model_config"][name]
    del config["model_config"]["vocab_size"]
    (out / "config.json").write_text(json.dumps(config))
    loaded, info = load_model(out, device="cpu")
    assert loaded.config == CFG == model.config
    assert torch.equal(loaded.wte.weight, model.wte.weight)
    config["model_config"]["n_layers"] = 2  # strict all the same: an unknown key is one line
    (out / "config.json").write_text(json.dumps(config))
    assert_one_line_error(out, "model_config.n_layers: unknown key")


def dead_pid() -> int:
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def hidden_leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_failed_swap_restores_the_previous_export(tmp_path, monkeypatch):
    make_checkpoint(tmp_path / "a.pt", seed=0)
    make_checkpoint(tmp_path / "b.pt", seed=1)
    root = tmp_path / "export"
    out = export_checkpoint(tmp_path / "a.pt", root / "tiny")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst) == str(out) and ".tmp" in str(src):  # the new export's rename into place
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(export.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space"):
        export_checkpoint(tmp_path / "b.pt", out)
    monkeypatch.setattr(export.os, "replace", real_replace)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert hidden_leftovers(root) == []
    assert newest_export(root) == out


def test_swap_killed_between_renames_is_recovered_and_stale_folders_cleaned(tmp_path):
    make_checkpoint(tmp_path / "a.pt", seed=0)
    root = tmp_path / "export"
    out = export_checkpoint(tmp_path / "a.pt", root / "tiny")
    other = export_checkpoint(tmp_path / "a.pt", root / "other")
    os.utime(other / "config.json", (1_000_000_000, 1_000_000_000))
    weights = (out / "model.safetensors").read_bytes()
    # What a kill leaves: the old export renamed aside, the new one still a temp folder.
    pid = dead_pid()
    os.replace(out, root / f".tiny.old-{pid}")
    (root / f".tiny.{pid}.abc123.tmp").mkdir()
    (root / f".tiny.{pid}.abc123.tmp" / "model.safetensors").write_bytes(b"half")
    assert newest_export(root) == out, "the interrupted profile must come back, not another one"
    assert (out / "model.safetensors").read_bytes() == weights
    assert hidden_leftovers(root) == []
    # A stale temp folder from a dead writer is removed by the next export.
    (root / f".tiny.{pid}.zz9.tmp").mkdir()
    export_checkpoint(tmp_path / "a.pt", out)
    assert hidden_leftovers(root) == []
    # ... but a live writer's temp folder (this process) is left alone.
    live = root / f".tiny.{os.getpid()}.live.tmp"
    live.mkdir()
    export_checkpoint(tmp_path / "a.pt", out)
    assert live.is_dir()

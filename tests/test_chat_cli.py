"""The terminal chat, driven through a real pipe, plus its session logic in-process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bytechat.serve import chat_cli
from bytechat.serve.chat_cli import COMMANDS_HELP, ChatSession
from bytechat.core.config import to_dict
from bytechat.model.export import export_checkpoint, load_model
from bytechat.serve.generate import ChatEngine, ReplyDone, ReplyEvent, SamplingConfig
from bytechat.notes.index import Hit, NotesIndex, index_folder

from tests.helpers import train_chat_model
from tools.local_server import save_tiny_model

REPO = Path(__file__).resolve().parent.parent


def export_as_checkpoint(model, folder: Path, step: int) -> Path:
    """model saved as a training checkpoint folder/best.pt (every field one has), then
    exported to folder/export."""
    ckpt = {
        "format": "bytechat-checkpoint",
        "version": 1,
        "model": model.state_dict(),
        "model_config": to_dict(model.config),
        "train_config": {},
        "profile": "toy",
        "step": step,
        "val_loss": None,
        "best_val_loss": None,
        "optimizer": {},
        "rng": {},
        "sampler": {},
        "data": {},
    }
    torch.save(ckpt, folder / "best.pt")
    return export_checkpoint(folder / "best.pt", folder / "export")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A 2x32 model trained ~1 s to answer "hi" with "hello", exported."""
    model = train_chat_model()
    return export_as_checkpoint(model, tmp_path_factory.mktemp("chat"), step=80)


@pytest.fixture(autouse=True)
def no_repo_notes_index(tmp_path_factory, monkeypatch):
    """Chat subprocesses look for the notes index under an empty root, not this checkout's
    artifacts/ (whose index would add notes to the prompt and change the greedy replies)."""
    monkeypatch.setenv("BYTECHAT_ROOT", str(tmp_path_factory.mktemp("empty-root")))


def chat(stdin: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The chat CLI on stdin. Decoding is free (--no-faithful first; a test may turn it on):
    the toy models here say "hello", which is none of the bot's own sentences."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "bytechat.serve.chat_cli", "--no-faithful", *args],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=REPO,
        env=full_env,
        timeout=120,
    )


def test_pipe_gives_one_reply_and_exits_0(exported):
    result = chat("hi\n", "--ckpt", str(exported), "--temperature", "0")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello\n", "stdout holds the reply only, no prompts or banners"
    assert "bytechat: decoding eager (not compiled)" in result.stderr  # BYTECHAT_COMPILE=0 (conftest)


@pytest.mark.slow
def test_chat_starts_compiled_and_replies_as_eager(exported):
    """By default the chat compiles its decode step at start (one line says so and how
    long it took) and the greedy reply is the eager one's, byte for byte."""
    result = chat("hi\n", "--ckpt", str(exported), "--temperature", "0", env={"BYTECHAT_COMPILE": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello\n"
    started = re.search(r"bytechat: decode step compiled in [0-9.]+ s \(batch 1; cache (.*)\)", result.stderr)
    assert started and started[1].endswith("inductor-cache"), result.stderr


def test_commands_through_a_pipe(exported):
    script = "/help\n/temp 0\nhi\n/topk 1\n/topp 0.5\n/system be brief\n/reset\n日本\n/temp hot\n/nope\n/quit\nhi\n"
    result = chat(script, "--ckpt", str(exported), "--max-new-bytes", "40")
    assert result.returncode == 0, result.stderr
    # /help prints the list; greedy (/temp 0) replies are the learned ones; /quit ends
    # the session before the last line.
    assert result.stdout == COMMANDS_HELP + "\nhello\n日本語🙂\n"
    for expected in (
        "(temperature = 0.0)",
        "(top_k = 1)",
        "(top_p = 0.5)",
        "(system prompt: be brief)",
        "(conversation cleared: 2 messages forgotten)",
        "/temp 'hot': could not convert",
        "unknown command /nope",
    ):
        assert expected in result.stderr


def test_bad_ckpt_is_one_line_and_exit_2():
    result = chat("hi\n", "--ckpt", "/no/such/model")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == "chat: /no/such/model: no such file or folder\n"


# The other failures in-process (a subprocess costs seconds of torch import).


@pytest.mark.parametrize(
    "args, message",
    [
        (["--top-p", "2"], "chat: sampling.top_p: must be in (0, 1]"),
        (["--max-new-bytes", "0"], "chat: sampling.max_new_tokens"),
        (["--ckpt", "BROKEN"], "broken.pt: unreadable"),
        ([], "chat: no exported model found; run `make smoke` first or pass CKPT=..."),
    ],
)
def test_bad_setup_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, args, message):
    (tmp_path / "broken.pt").write_bytes(b"PK\x03\x04 not really a zip")
    args = [str(tmp_path / "broken.pt") if a == "BROKEN" else a for a in args]
    monkeypatch.setattr(chat_cli, "newest_export", lambda: None)
    assert chat_cli.main(args) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and message in err


def test_seed_makes_a_session_repeat(exported):
    model, info = load_model(exported, device="cpu")
    engine = ChatEngine(model, info=info)
    sampling = SamplingConfig(temperature=2.0, top_k=None, top_p=None, max_new_tokens=12)
    replies = []
    for _ in range(2):
        session = ChatSession(engine, sampling, seed=3)
        replies.append([session.reply(text, lambda piece: None, lambda: False).reply for text in ("hi", "hi")])
    assert replies[0] == replies[1] and replies[0][0] != replies[0][1]


def test_session_commands_change_messages_and_sampling(exported):
    model, info = load_model(exported, device="cpu")
    session = ChatSession(ChatEngine(model, info=info), SamplingConfig(temperature=0, max_new_tokens=20))
    written = []
    done = session.reply("hi", written.append, lambda: False)
    assert done.reply == "".join(written) == "hello"
    assert session.messages == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert session.command("/system be brief")[0] == "info"
    assert session.messages[0] == {"role": "system", "content": "be brief"} and len(session.messages) == 3
    session.command("/reset")
    assert session.messages == [{"role": "system", "content": "be brief"}]
    session.command("/system")
    assert session.messages == []
    assert session.command("/topk 0")[0] == "info" and session.sampling.top_k == 0
    assert session.command("/topp -1")[0] == "error" and session.sampling.top_p == 0.95
    assert session.command("/temp")[1] == "/temp needs a value, e.g. /temp 0.5"
    assert session.command("/quit")[0] == "quit"
    stopped = session.reply("hi", written.append, lambda: True)
    assert stopped.finish_reason == "cancelled" and session.messages[-1] == {"role": "assistant", "content": ""}


def test_tiny_sampling_values_reply_instead_of_crashing(exported):
    script = "hi\n/temp 5e-324\nhi\n/topp 1e-300\n/temp 1\nhi\n"
    result = chat(script, "--ckpt", str(exported), "--temperature", "1e-300", "--top-p", "1e-9")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello\n" * 3  # near-zero temperature and top_p: the greedy reply
    assert "Traceback" not in result.stderr


def test_non_finite_logits_are_one_line_and_the_session_goes_on(exported, tmp_path):
    model, _ = load_model(exported, device="cpu")
    with torch.no_grad():
        model.wte.weight[0, 0] = float("nan")
    broken = export_as_checkpoint(model, tmp_path, step=1)
    result = chat("hi\nhi again\n", "--ckpt", str(broken))
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("non-finite logits") == 2 and "Traceback" not in result.stderr


# ---------------------------------------------------------------- notes


class RecordingEngine:
    """Replies "ok" and remembers the messages each reply was generated from."""

    block_size = 512

    def __init__(self) -> None:
        self.prompts: list[list[dict]] = []

    def stream_reply(self, messages, sampling, seed=None, should_stop=None):
        self.prompts.append([dict(m) for m in messages])
        yield ReplyEvent("ok")
        yield ReplyDone("ok", "stop", 2, 0.0)


NOTES = {"Bees.md": "- hives:: 3\n- Varroa check every autumn.\n", "Marta.md": "- birthday:: 12 March\n"}


@pytest.fixture(scope="module")
def notes_index(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("notes")
    for name, text in NOTES.items():
        (folder / name).write_text(text, encoding="utf-8")
    path = folder.parent / f"{folder.name}-index.sqlite"
    index_folder(folder, path, progress=False).close()
    return path


@pytest.fixture(scope="module")
def wide_export(tmp_path_factory) -> Path:
    """A random 1x32 model with a 512-byte context: room for notes in the prompt."""
    return save_tiny_model(tmp_path_factory.mktemp("wide"), block_size=512)


def test_session_puts_notes_in_the_prompt_only(notes_index):
    engine = RecordingEngine()
    session = ChatSession(engine, SamplingConfig(), notes=NotesIndex.open(notes_index))
    session.command("/system be brief")
    session.reply("how many hives do I have?", lambda piece: None, lambda: False)
    prompt = engine.prompts[-1]
    assert prompt[0]["role"] == "system" and prompt[0]["content"].startswith("be brief\nNotes:\n")
    assert prompt[0]["content"].endswith("[Bees] hives: 3") and [h.page for h in session.last_sources][0] == "Bees"
    assert session.messages == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "how many hives do I have?"},
        {"role": "assistant", "content": "ok"},
    ], "the conversation keeps no notes"
    session.reply("thanks!", lambda piece: None, lambda: False)
    thanks = [*session.messages[:3], {"role": "user", "content": "thanks!"}]
    assert engine.prompts[-1] == thanks and session.last_sources == [], "small talk: no notes, the turns before it"
    assert session.command("/notes off") == ("info", "(notes: off)")
    session.reply("and Marta's birthday?", lambda piece: None, lambda: False)
    assert engine.prompts[-1] == session.messages[:-1] and session.last_sources == [], "notes off: the whole talk"
    assert session.command("/notes on") == ("info", "(notes: on)")
    session.reply("and Marta's birthday?", lambda piece: None, lambda: False)
    assert "[Marta] birthday: 12 March" in engine.prompts[-1][0]["content"]
    assert session.command("/notes maybe")[0] == "error"
    assert "/notes on|off" in COMMANDS_HELP


def test_notes_on_needs_an_index():
    session = ChatSession(RecordingEngine(), SamplingConfig())
    assert not session.notes_on and session.command("/notes on")[0] == "error"
    session.reply("how many hives?", lambda piece: None, lambda: False)
    assert session.last_sources == []


def test_notes_off_through_a_pipe(wide_export, notes_index):
    script = "how many hives do I have?\n/notes off\nhow many hives do I have?\n/notes on\nhi\n/notes\n"
    result = chat(script, "--ckpt", str(wide_export), "--notes", str(notes_index), "--max-new-bytes", "4")
    assert result.returncode == 0, result.stderr
    err = result.stderr
    assert "notes: on (3 blocks from 2 pages)" in err
    assert err.count("sources: ") == 1, "only the first question is answered from the notes"
    assert err.index("sources: Bees") < err.index("(notes: off)") < err.index("(notes: on)")
    assert "sources" not in result.stdout and "notes" not in result.stdout, "stdout: replies only"


def test_no_notes_flag_and_a_missing_index(wide_export, notes_index, tmp_path):
    off = chat("how many hives?\n", "--ckpt", str(wide_export), "--no-notes", "--max-new-bytes", "4")
    assert off.returncode == 0 and "notes:" not in off.stderr and "sources:" not in off.stderr
    missing = chat(
        "how many hives?\n",
        "--ckpt",
        str(wide_export),
        "--notes",
        str(tmp_path / "nope.sqlite"),
        "--max-new-bytes",
        "4",
    )
    assert missing.returncode == 0, missing.stderr
    assert f"notes: off: {tmp_path / 'nope.sqlite'}: no notes index there" in missing.stderr
    assert "sources:" not in missing.stderr and missing.stdout
    default = chat("how many hives?\n", "--ckpt", str(wide_export), "--max-new-bytes", "4")
    assert "notes: off:" in default.stderr and "index.sqlite: no notes index there" in default.stderr


@pytest.mark.parametrize("problem", ["stale", "stale-reindexed", "empty"])
def test_stale_or_empty_index_is_one_line_and_chat_goes_on(wide_export, tmp_path, problem):
    """A stale index is re-indexed at start (the line says so) unless --no-reindex, when
    notes go off; an empty one is off either way."""
    folder = tmp_path / "notes"
    folder.mkdir()
    if problem.startswith("stale"):
        (folder / "Bees.md").write_text("- hives:: 3\n", encoding="utf-8")
    index_folder(folder, tmp_path / "index.sqlite", progress=False).close()
    if problem.startswith("stale"):
        (folder / "Bees.md").write_text("- hives:: 4\n", encoding="utf-8")
    flags = ["--no-reindex"] if problem == "stale" else []
    result = chat(
        "how many hives?\n",
        "--ckpt",
        str(wide_export),
        "--notes",
        str(tmp_path / "index.sqlite"),
        "--max-new-bytes",
        "4",
        *flags,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("notes:")]
    if problem == "stale-reindexed":
        assert len(lines) == 1 and lines[0].startswith("notes: on (1 block from 1 page; re-indexed"), lines
        assert "sources: Bees" in result.stderr
        return
    assert len(lines) == 1 and lines[0].startswith("notes: off:")
    assert ("is stale" in lines[0]) if problem == "stale" else ("holds no notes" in lines[0])
    assert "sources:" not in result.stderr and result.stdout


def test_sources_are_one_per_page_and_link_to_the_block(capsys):
    """OSC 8 on a terminal (the page name is the link text), the link in brackets on a
    pipe; a page whose notes give no link is its name alone; a control byte in a page
    name or link cannot end the escape early."""
    hits = [
        Hit("Wren", "Lives in Ghent", 2.0, 0, link="obsidian://open?vault=v&file=Wren"),
        Hit("Wren", "birthday: 14 March", 1.0, 1, link="obsidian://open?vault=v&file=Wren%23x"),
        Hit("Inbox\x1b]8;;evil", "renew the passport", 0.5, 0),
    ]
    chat_cli.print_sources(hits, interactive=True)
    shown = capsys.readouterr().out
    assert (
        shown.count("\x1b]8;;obsidian") == 1
        and "\x1b]8;;obsidian://open?vault=v&file=Wren\x1b\\Wren\x1b]8;;\x1b\\" in shown
    )
    assert "Inbox\ufffd]8;;evil" in shown and "%23x" not in shown
    chat_cli.print_sources(hits, interactive=False)
    err = capsys.readouterr().err
    assert err == "sources: Wren <obsidian://open?vault=v&file=Wren> · Inbox\x1b]8;;evil\n"

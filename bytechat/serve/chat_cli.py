"""Chat with an exported model in the terminal: `make chat CKPT=...`.

    python -m bytechat.serve.chat_cli [--ckpt PATH] [--temperature 0.8] [--top-k 50] [--top-p 0.95]
                                [--max-new-bytes 512] [--seed N] [--device cpu]
                            [--notes PATH | --no-notes]
    python -m bytechat.serve.chat_cli --summary PROFILE   where PROFILE's export is and how to use
                                                    it (what `make smoke` ends with)

Notes are on when the notes index exists (artifacts/notes/index.sqlite, built by
`dvc repro index`): each question retrieves note blocks into the prompt, and the pages
used are listed under the reply ("sources: ..."). /notes off and /notes on switch them.

Replies stream as they are generated. Ctrl-C stops a reply; Ctrl-C at the prompt,
Ctrl-D or /quit leaves. From a pipe (`printf 'hi\\n' | python -m bytechat.serve.chat_cli`)
stdout gets the replies only, one line each; everything else goes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import random
import signal
import sys
import threading
from typing import Callable

from bytechat.core import paths
from bytechat.model.export import CONFIG_FILE, WEIGHTS_FILE, ModelLoadError, display_path, load_model, newest_export
from bytechat.model.export import read_export_config
from bytechat.serve import copying
from bytechat.serve.generate import (
    ChatEngine,
    NonFiniteLogits,
    ReplyDone,
    ReplyEvent,
    SamplingConfig,
    compile_wanted,
    set_decode_threads,
)
from bytechat.notes.index import Hit, NotesIndex, NotesIndexError
from bytechat.notes import intent
from bytechat.notes.grounded import abstains
from bytechat.notes.retrieval import add_notes_arguments, notes_budget, open_for_chat, retrieve_for_chat, with_notes

COMMANDS_HELP = """commands:
  /reset        forget the conversation (the /system prompt stays)
  /system TEXT  set the system prompt (/system alone removes it)
  /temp X       sampling temperature, 0 = always the most likely byte
  /topk K       sample among the K most likely bytes, 0 = off
  /topp P       ... and among those, the fewest covering probability P, 1 = off
  /notes on|off answer from your notes (on when a notes index was loaded), or not
  /faithful on|off  quotes verbatim, other replies the bot's own sentences (--faithful), or free
  /help         this list
  /quit         leave (so do Ctrl-D, and Ctrl-C at the prompt; Ctrl-C in a reply stops it)"""

NO_MODEL = "no exported model found; run `make smoke` first or pass CKPT=..."
# On a terminal, control characters from the model (escape sequences, "\r", ...) could
# garble the screen: show them as U+FFFD. Pipes get the reply exactly.
_CONTROL_TO_VISIBLE = {c: "\ufffd" for c in [*range(0x20), *range(0x7F, 0xA0)] if chr(c) not in "\n\t"}


class ChatSession:
    """The conversation and sampling settings; applies /commands."""

    def __init__(
        self, engine: ChatEngine, sampling: SamplingConfig, seed: int | None = None, notes: NotesIndex | None = None
    ) -> None:
        self.engine = engine
        self.sampling = sampling
        # Notes go into each turn's prompt only; self.turns keeps the conversation without them.
        self.notes = notes
        self.notes_on = notes is not None
        self.last_sources: list[Hit] = []
        self.system: str | None = None
        self.turns: list[dict[str, str]] = []
        # With --seed, reply i uses the i-th number of this stream: a whole session repeats.
        self._seeds = random.Random(seed) if seed is not None else None

    @property
    def messages(self) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.turns

    def command(self, line: str) -> tuple[str, str]:
        """Apply one /command line; returns (kind, text), kind in help/info/error/quit."""
        name, _, arg = line.strip().partition(" ")
        arg = arg.strip()
        if name == "/quit":
            return "quit", ""
        if name == "/help":
            return "help", COMMANDS_HELP
        if name == "/reset":
            dropped, self.turns = len(self.turns), []
            return "info", f"(conversation cleared: {dropped} messages forgotten)"
        if name == "/notes":
            return self._notes_command(arg)
        if name == "/system":
            self.system = arg or None
            return "info", f"(system prompt: {arg})" if arg else "(system prompt removed)"
        setting = {
            "/temp": ("temperature", float),
            "/topk": ("top_k", int),
            "/topp": ("top_p", float),
            "/faithful": ("faithful", on_off),
        }.get(name)
        if setting is None:
            return "error", f"unknown command {name}; /help lists the commands"
        field, parse = setting
        try:
            self.sampling = dataclasses.replace(self.sampling, **{field: parse(arg)})
        except ValueError as exc:
            return "error", f"{name} {arg!r}: {exc}" if arg else f"{name} needs a value, e.g. {name} 0.5"
        return "info", f"({field} = {getattr(self.sampling, field)})"

    def _notes_command(self, arg: str) -> tuple[str, str]:
        if arg not in ("on", "off", ""):
            return "error", f"/notes {arg!r}: expected /notes on or /notes off"
        if arg == "on" and self.notes is None:
            return "error", "(no notes index is loaded: build it with `dvc repro index` and restart)"
        if arg:
            self.notes_on = arg == "on"
        return "info", f"(notes: {'on' if self.notes_on else 'off'})"

    def prompt(self) -> list[dict[str, str]]:
        """The messages the model sees for the newest turn: with the notes when on."""
        self.last_sources = []
        messages = self.messages
        if not self.notes_on or self.notes is None:
            return messages
        budget = notes_budget(self.engine.block_size, messages)
        try:
            self.last_sources = retrieve_for_chat(self.notes, messages, budget_bytes=budget)
        except NotesIndexError as exc:  # e.g. the file was damaged while we run: go on without
            print(f"chat: {exc}; notes off", file=sys.stderr)
            self.notes_on = False
            return messages
        return with_notes(messages, self.last_sources)

    def reply(self, text: str, write: Callable[[str], None], should_stop: Callable[[], bool]) -> ReplyDone:
        """Add the user's message, stream the reply through write, remember the reply."""
        self.turns.append({"role": "user", "content": text})
        seed = self._seeds.getrandbits(63) if self._seeds is not None else None
        done = None
        for event in self.engine.stream_reply(self.prompt(), self.sampling, seed=seed, should_stop=should_stop):
            if isinstance(event, ReplyEvent):
                write(event.text)
            else:
                done = event
        self.turns.append({"role": "assistant", "content": done.reply})
        return done


def on_off(arg: str) -> bool:
    if arg not in ("on", "off"):
        raise ValueError("expected on or off")
    return arg == "on"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = SamplingConfig()
    parser = argparse.ArgumentParser(
        prog="python -m bytechat.serve.chat_cli", description="Chat with a bytechat model."
    )
    parser.add_argument("--ckpt", help="export folder, checkpoint .pt or checkpoints folder (default: newest export)")
    parser.add_argument("--temperature", type=float, default=defaults.temperature)
    parser.add_argument("--top-k", type=int, default=defaults.top_k)
    parser.add_argument("--top-p", type=float, default=defaults.top_p)
    parser.add_argument("--max-new-bytes", type=int, default=defaults.max_new_tokens)
    parser.add_argument(
        "--faithful",
        action=argparse.BooleanOptionalAction,
        default=copying.SHIPPED,
        help="a quote of the notes is verbatim, any other reply one of the bot's own sentences (default: on; docs/chat.md)",
    )
    parser.add_argument("--seed", type=int, default=None, help="make the whole session reproducible")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    add_notes_arguments(parser)
    parser.add_argument("--no-compile", action="store_true", help="decode eager (no ~30 s compile at the first start)")
    parser.add_argument(
        "--summary", metavar="PROFILE", help="describe PROFILE's export and how to chat with it, then exit"
    )
    return parser.parse_args(argv)


def export_summary(profile: str) -> str:
    """Where profile's export is, what it is, and the commands to use it (`make smoke` prints it)."""
    folder = paths.export_dir(profile)
    if not (folder / CONFIG_FILE).is_file():
        raise ModelLoadError(f"{display_path(folder)}: no export for profile {profile!r}; run `make smoke` first")
    config, cfg = read_export_config(folder / CONFIG_FILE)
    weights = folder / WEIGHTS_FILE
    size = f"{weights.stat().st_size / 1e6:.1f} MB" if weights.is_file() else "weights missing!"
    params = config.get("params")
    where = display_path(folder)
    val_loss = config.get("val_loss")
    if isinstance(val_loss, (int, float)) and math.isfinite(val_loss):
        quality = f"val loss {val_loss:.4f} nats/byte = {val_loss / math.log(2):.3f} bits/byte"
    else:
        quality = "val loss unknown"
    shape = f"{size}, {cfg.n_layer} layers x {cfg.n_embd} wide, {cfg.block_size}-byte context"
    return "\n".join(
        [
            f"exported model: {where}/ ({WEIGHTS_FILE}, {CONFIG_FILE})",
            f"  {params:,} parameters, {shape}" if isinstance(params, int) else f"  {shape}",
            f"  profile {config.get('profile')}, step {config.get('step')}, {quality}",
            "chat in the terminal:",
            f"  make chat CKPT={where}",
            "serve the web chat (then open http://127.0.0.1:8000):",
            f"  make serve CKPT={where}",
        ]
    )


def print_summary(profile: str) -> int:
    try:
        print(export_summary(profile))
        return 0
    except (ModelLoadError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def fail(message: str) -> int:
    print(f"chat: {message}", file=sys.stderr)
    return 2


def read_line(interactive: bool) -> str | None:
    """One line of input without its newline; None at end of input."""
    if interactive:
        try:
            return input("you> ")
        except EOFError:
            return None
    line = sys.stdin.readline()
    return line.rstrip("\r\n") if line else None


def stream_reply(session: ChatSession, text: str, interactive: bool) -> None:
    """Print the reply as it comes; Ctrl-C stops this reply only."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    try:
        if interactive:
            sys.stdout.write("bot> ")

        def write(piece: str) -> None:
            sys.stdout.write(piece.translate(_CONTROL_TO_VISIBLE) if interactive else piece)
            sys.stdout.flush()

        done = session.reply(text, write, stop.is_set)
    finally:
        signal.signal(signal.SIGINT, previous)
    sys.stdout.write("\n")
    sys.stdout.flush()
    if done.finish_reason == "cancelled":
        print("(reply stopped)", file=sys.stderr)
    elif done.finish_reason == "length" and interactive:
        print(f"(reply cut at {session.sampling.max_new_tokens} bytes)", file=sys.stderr)
    if session.last_sources and not abstains(done.reply):
        print_sources(session.last_sources, interactive)


def print_sources(hits: list[Hit], interactive: bool) -> None:
    """The pages the notes came from, under the reply, one per page: dim on a terminal,
    each a clickable OSC 8 link to its best block where the notes format gives one
    (terminals without OSC 8 show the name); stderr on a pipe, the link in brackets."""
    first = {}
    for hit in hits:
        first.setdefault(hit.page, hit)
    if interactive:
        names = []
        for page, hit in first.items():
            name = page.translate(_CONTROL_TO_VISIBLE)
            link = hit.link.translate(_CONTROL_TO_VISIBLE)
            names.append(f"\x1b]8;;{link}\x1b\\{name}\x1b]8;;\x1b\\" if link else name)
        print(f"\x1b[2msources: {' · '.join(names)}\x1b[0m", flush=True)
    else:
        names = [f"{page} <{hit.link}>" if hit.link else page for page, hit in first.items()]
        print(f"sources: {' · '.join(names)}", file=sys.stderr, flush=True)


def chat_loop(session: ChatSession, interactive: bool) -> int:
    while True:
        try:
            line = read_line(interactive)
        except KeyboardInterrupt:
            print(file=sys.stderr)
            return 0
        if line is None:
            return 0
        if not line.strip():
            continue
        if line.startswith("/"):
            kind, text = session.command(line)
            if kind == "quit":
                return 0
            print(text, file=sys.stdout if kind == "help" else sys.stderr, flush=True)
            continue
        try:
            stream_reply(session, line, interactive)
        except NonFiniteLogits as exc:  # broken weights: say so, keep the session
            session.turns.pop()  # the message got no reply
            print(f"chat: {exc}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.summary:
        return print_summary(args.summary)
    try:
        sampling = SamplingConfig(
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            max_new_tokens=args.max_new_bytes,
            faithful=args.faithful,
        )
    except ValueError as exc:
        return fail(str(exc))
    ckpt = args.ckpt or newest_export()
    if ckpt is None:
        return fail(NO_MODEL)
    try:
        set_decode_threads()
        model, info = load_model(ckpt, device=args.device)
    except (ModelLoadError, ValueError) as exc:  # ValueError: a bad --device or thread setting
        return fail(str(exc))
    except KeyboardInterrupt:
        return 130
    engine = ChatEngine(model, info=info, compile=compile_wanted(args.no_compile))
    print(f"bytechat: {engine.warm_up()}", file=sys.stderr)
    intent.warm()  # the small-talk classifiers (bytechat.notes.intent), before the first message
    notes = None
    if not args.no_notes:
        notes, notes_line = open_for_chat(args.notes, reindex=not args.no_reindex)
        print(notes_line, file=sys.stderr)
    interactive = sys.stdin.isatty()
    if interactive:
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
    # Never die on input that is not UTF-8 or a terminal that cannot show a character.
    for stream in (sys.stdin, sys.stdout):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    print(
        f"bytechat: {info['path']} ({info['params']:,} params, {info['device']}); temperature {sampling.temperature},"
        f" top-k {sampling.top_k}, top-p {sampling.top_p}{', faithful decoding' * sampling.faithful}. /help lists commands.",
        file=sys.stderr,
    )
    try:
        return chat_loop(ChatSession(engine, sampling, args.seed, notes=notes), interactive)
    except KeyboardInterrupt:  # between replies, outside the prompt
        return 0
    except BrokenPipeError:  # stdout closed early, e.g. piped into `head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush stays quiet
        return 0


if __name__ == "__main__":
    sys.exit(main())

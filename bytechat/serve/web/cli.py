"""`bytechat-serve` (`make serve`): the web chat's command line. Parses the flags into
ServerSettings, loads the model, opens the notes, builds the app (bytechat.serve.web.server)
and runs it under uvicorn. The endpoints and what they answer are in server.py.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path

from bytechat.notes import intent
from bytechat.notes.retrieval import add_notes_arguments, open_for_chat
from bytechat.notes.watch import watch_index
from bytechat.serve.generate import compile_wanted
from bytechat.serve.web.guard import uvicorn_options
from bytechat.serve.web.server import create_app
from bytechat.serve.web.settings import LOOPBACK_HOSTS, ServerSettings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = ServerSettings()
    p = argparse.ArgumentParser(prog="bytechat-serve", description="Serve the bytechat web chat.")
    p.add_argument("--ckpt", help="export folder or training checkpoint (default: the newest export)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: $BYTECHAT_THREADS, else 1; concurrent replies are batched anyway)",
    )
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=defaults.max_new_tokens_cap,
        help="cap on the bytes one reply may generate",
    )
    p.add_argument("--timeout-s", type=float, default=defaults.timeout_s, help="generation time cap per request")
    p.add_argument(
        "--max-batch-size",
        type=int,
        default=defaults.max_batch_size,
        help="replies decoded together, one forward pass per byte for all (0: no batching)",
    )
    p.add_argument(
        "--max-concurrency",
        type=int,
        default=defaults.max_concurrency,
        help="with --max-batch-size 0: replies generated at the same time, each alone",
    )
    p.add_argument(
        "--max-waiting",
        type=int,
        default=defaults.max_waiting,
        help="requests that may wait for a free slot before the server answers 503",
    )
    p.add_argument(
        "--max-wait-s",
        type=float,
        default=defaults.max_wait_s,
        help="longest wait for a free slot before the server answers 503",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=defaults.max_connections,
        help="open connections beyond which new requests get 503",
    )
    p.add_argument(
        "--header-timeout-s",
        type=float,
        default=defaults.header_timeout_s,
        help="time to receive a request's headers (then 408 and close)",
    )
    p.add_argument(
        "--body-timeout-s",
        type=float,
        default=defaults.body_timeout_s,
        help="time to receive a request's body (then 408 and close)",
    )
    p.add_argument(
        "--health-shows-path",
        action="store_true",
        help="/health shows the model's path (refused unless bound to loopback)",
    )
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    add_notes_arguments(p)
    p.add_argument("--no-watch", action="store_true", help="do not re-index the notes when a page changes")
    p.add_argument("--no-compile", action="store_true", help="decode eager (no compile at start)")
    p.add_argument("--no-faithful", action="store_true", help="decode freely unless a request asks (docs/chat.md)")
    return p.parse_args(argv)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    if args.health_shows_path and not is_loopback(args.host):
        raise ValueError(f"--health-shows-path: refused when listening on {args.host} (not loopback)")
    allowed_hosts = None
    if is_loopback(args.host):
        # A web page elsewhere cannot reach us through a DNS name rebound to 127.0.0.1.
        own = f"[{args.host}]" if ":" in args.host else args.host
        allowed_hosts = tuple(dict.fromkeys((*LOOPBACK_HOSTS, own)))
    return ServerSettings(
        max_new_tokens_cap=args.max_new_tokens,
        default_max_new_tokens=min(ServerSettings.default_max_new_tokens, args.max_new_tokens),
        timeout_s=args.timeout_s,
        max_batch_size=args.max_batch_size,
        max_concurrency=args.max_concurrency,
        max_waiting=args.max_waiting,
        max_wait_s=args.max_wait_s,
        max_connections=args.max_connections,
        header_timeout_s=args.header_timeout_s,
        body_timeout_s=args.body_timeout_s,
        allowed_hosts=allowed_hosts,
        show_model_path=args.health_shows_path,
        faithful=not args.no_faithful,
    )


def load_engine(ckpt: str | None, device_name: str | None, threads: int | None = None, compile: bool = False):
    """The ChatEngine for --ckpt (else the newest export); raises SystemExit(one line)."""
    from bytechat.core.device import get_device
    from bytechat.model.export import ModelLoadError, load_model, newest_export
    from bytechat.serve.generate import ChatEngine, set_decode_threads

    path = Path(ckpt) if ckpt else newest_export()
    if path is None:
        raise SystemExit("no exported model found: run `make smoke` (or train and export) or pass --ckpt PATH")
    try:
        # One intra-op thread: on a busy CPU more make small decoding ops ~10x slower (see
        # set_decode_threads). Concurrent replies share one batched forward pass instead.
        set_decode_threads(threads)
        device = get_device(device_name)
        model, info = load_model(path, device)
    except (ModelLoadError, ValueError) as exc:
        raise SystemExit(str(exc).splitlines()[0]) from None
    return ChatEngine(model, device, info, compile)


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    args = parse_args(argv)
    try:
        settings = settings_from_args(args)
        engine = load_engine(args.ckpt, args.device, args.threads, compile_wanted(args.no_compile))
    except (ValueError, SystemExit) as exc:
        print(f"bytechat-serve: error: {exc}", file=sys.stderr)
        return 2
    if not is_loopback(args.host):
        print(
            f"bytechat-serve: warning: listening on {args.host}: anyone who can reach this machine on port"
            f" {args.port} can use the chat; there is no authentication",
            file=sys.stderr,
        )
    notes = None
    if not args.no_notes:
        notes, notes_line = open_for_chat(args.notes, reindex=not args.no_reindex)
        print(f"bytechat-serve: {notes_line}", file=sys.stderr)
    app = create_app(engine, settings, notes)
    print(f"bytechat-serve: {app.state.workers.warm_up()}", file=sys.stderr)
    intent.warm()  # the small-talk classifiers (bytechat.notes.intent), before the first request
    if notes is not None and notes.path is not None and "source" in notes.meta and not args.no_watch:
        watch_index(notes, lambda index: setattr(app.state, "notes", index))  # new requests get the new index
        print(f"bytechat-serve: notes: watching {notes.meta['source']} (a changed page is re-indexed)", file=sys.stderr)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=5,
        **uvicorn_options(settings),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

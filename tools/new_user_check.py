"""A new user's run: a hand-written notes graph the project never trains or tunes on
(data/new-user-notes/, a vet in Galway: other people, hobbies and wording than the
example graph) goes into a temporary copy's .roam-data/, `make smoke` runs there as a new
user would run it, and the chat metrics (each beside the search box's) and the small
talk (stop rate, real-word rate, distinct-2, and the replies themselves) are printed.

    make new-user-check                       # or: .venv/bin/python -m tools.new_user_check
    make new-user-check ARGS="--notes DIR"    # your own graph, with a questions.jsonl beside it

The copy is the working tree's tracked and untracked files (what a fresh clone of it
would hold), run with this checkout's venv. The report lands in artifacts/new-user/
(metrics.json, grounded_samples.txt); the copy is deleted unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from bytechat.core import paths
from bytechat.core.atomic import write_json, write_text
from bytechat.eval.grounded import chat_table

REPO = Path(__file__).resolve().parents[1]
GRAPH = REPO / "data" / "new-user-notes"
SHARED_WIKITEXT = REPO.parent / "shared" / "data" / "wikitext-2-dev"


def copy_tree(dest: Path, skip: tuple[str, ...] = ()) -> Path:
    """The working tree's files as a fresh clone would have them (less paths starting with
    one of skip), in a new git repo at dest. -z: names as they are (without it git quotes
    "Zürich trip.md" and the copy misses it)."""
    names = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for rel in filter(None, names):
        src = REPO / rel
        if src.is_file() and not rel.startswith(skip):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    env = {**os.environ, "GIT_AUTHOR_NAME": "bytechat", "GIT_AUTHOR_EMAIL": "new-user@bytechat.invalid"}
    env.update(GIT_COMMITTER_NAME=env["GIT_AUTHOR_NAME"], GIT_COMMITTER_EMAIL=env["GIT_AUTHOR_EMAIL"])
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "a new user's clone"]):
        subprocess.run(cmd, cwd=dest, check=True, env=env, capture_output=True)
    return dest


def everyday_replies(transcripts: str) -> str:
    """The everyday section of grounded_samples.txt: each prompt and its reply."""
    m = re.search(r"^## everyday\n(.*?)(?=^## |\Z)", transcripts, re.M | re.S)
    return m.group(1).strip() if m else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.new_user_check", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--notes", type=Path, default=GRAPH, help="the graph to play the new user (default: %(default)s)"
    )
    parser.add_argument(
        "--wikitext",
        default=str(SHARED_WIKITEXT) if SHARED_WIKITEXT.is_dir() else None,
        help="data.wikitext_source for the run (default: the shared dev copy if present, else params.yaml's)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy (its path is printed)")
    args = parser.parse_args(argv)
    pages = sorted(args.notes.rglob("*.md")) if args.notes.is_dir() else []
    if not pages:
        print(f"tools/new_user_check.py: error: {args.notes}: no .md page to play the new user", file=sys.stderr)
        return 2
    venv = Path(sys.prefix)  # the venv this runs in (sys.executable may resolve past it)
    tmp = Path(tempfile.mkdtemp(prefix="bytechat-new-user-"))
    try:
        clone = tmp / "bytechat"
        copy_tree(clone)
        shutil.copytree(args.notes, clone / ".roam-data", dirs_exist_ok=True)
        if args.wikitext:
            params = yaml.safe_load((clone / "params.yaml").read_text(encoding="utf-8"))
            params["data"]["wikitext_source"] = str(Path(args.wikitext).resolve())
            (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
        print(f"new user: {len(pages)} pages from {args.notes} -> {clone}/.roam-data; make smoke", flush=True)
        env = {k: v for k, v in os.environ.items() if k != "BYTECHAT_ROOT"}
        run = subprocess.run(["make", "smoke", f"VENV={venv}"], cwd=clone, env=env)
        if run.returncode:
            print(
                f"tools/new_user_check.py: error: make smoke failed in {clone} (exit {run.returncode})", file=sys.stderr
            )
            args.keep = True
            return 1
        out = paths.artifacts() / "new-user"
        metrics = json.loads((clone / "artifacts" / "eval" / "smoke" / "metrics.json").read_text())
        transcripts = (clone / "artifacts" / "eval" / "smoke" / "grounded_samples.txt").read_text(encoding="utf-8")
        write_json(out / "metrics.json", metrics)
        write_text(out / "grounded_samples.txt", transcripts)
        print(f"\n== a new user's graph ({args.notes.name}): the chat metrics, model / search box")
        print(chat_table(metrics["chat"]))
        print("\n== small talk, as the new user met it")
        print(everyday_replies(transcripts))
        print(f"\n-> {out}/metrics.json, grounded_samples.txt")
        return 0
    finally:
        if args.keep:
            print(f"kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())

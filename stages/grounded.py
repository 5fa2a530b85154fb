"""Stage `grounded`: dialogues that answer questions from retrieved notes (bytechat/notes/grounded.py).

    train.jsonl  about the roam TRAIN pages (retrieval over train pages only; at most
                 grounded.dialogues_per_block single questions per train block) and about
                 synthetic pages (random facts, so only copying from the prompt answers them):
                 single-turn questions, conversations and small talk (bytechat/notes/dialogues)
    val.jsonl    about the roam VALIDATION pages (retrieval over validation pages only)

Validation pages never reach train.jsonl: not as the answer, not as a distractor (the
train-side index holds train blocks only). Each line: {"text": the transcript, "messages",
"gold", "kind", "page", "source", "span"}; span: where the answer head should point in
text's bytes (Dialogue.answer_span), or null. Seeded: the same params and notes give the same files.
"""

from __future__ import annotations

import random
import sys

from tqdm import tqdm

from bytechat.notes import grounded
from bytechat.core import paths
from bytechat.core.atomic import write_json, write_jsonl
from bytechat.core.config import ConfigError, GroundedConfig, load_params
from bytechat.core.rng import SeedOffset
from bytechat.notes.roam import RoamPage
from bytechat.notes.grounded import read_split_pages
from bytechat.notes.blocks import all_blocks, lead_blocks
from bytechat.notes.index import NotesIndex
from bytechat.notes.synthetic import name as random_name
from bytechat.notes.synthetic import synthetic_pages
from bytechat.notes.dialogues import conversation, near_miss

# Beside the n single-turn dialogues of a part (params.yaml grounded.*_dialogues): this
# many multi-turn conversations and small-talk dialogues per single-turn one (issue 29;
# docs/training.md, "Answers, not echoes").
CONVERSATIONS = 0.25
SMALL_TALK = 0.1


def part(pages: list[RoamPage], n: int, cfg: GroundedConfig, seed: int, source: str) -> list[dict]:
    """n dialogues about pages, retrieval over these pages only."""
    blocks = all_blocks(pages)
    with NotesIndex.build(blocks) as index:

        def retrieve(question: str, k: int):
            return [hit.block for hit in index.search(question, k)]

        rng = random.Random(seed)
        grounded.ANSWERS = cfg.answers
        found = grounded.dialogues(
            blocks,
            retrieve,
            rng,
            n,
            k=cfg.k,
            uncovered=cfg.uncovered,
            unknown_name=random_name,
            context_bytes=cfg.context_bytes,
            anywhere=cfg.anywhere,
        )
        talks = conversation.Conversations(blocks, retrieve, cfg.k, cfg.context_bytes, random_name)
        found += conversation.make(talks, rng, round(n * CONVERSATIONS))
        found += conversation.make(talks, rng, round(n * SMALL_TALK), "smalltalk")
        found += near_miss.make(blocks, retrieve, rng, round(n * cfg.near_miss), cfg.k, cfg.context_bytes)
        leads = lead_blocks(blocks)
        firsts = [b for b in blocks if (b.page, b.position) in leads]
        for block in rng.choices(firsts, k=round(n * cfg.pages)) if firsts else []:
            found.append(grounded.page_dialogue(block, retrieve, rng, cfg.k, cfg.context_bytes))
    return [
        {
            "text": d.document(),
            "messages": d.messages,
            "gold": d.gold,
            "kind": d.kind,
            "page": d.page,
            "source": source,
            "span": d.answer_span(),
        }
        for d in found
    ]


def roam_dialogues(cfg: GroundedConfig, train_pages: list[RoamPage]) -> int:
    """How many single questions about the roam train pages: roam_dialogues, at most
    dialogues_per_block for each of their blocks."""
    return min(cfg.roam_dialogues, cfg.dialogues_per_block * len(all_blocks(train_pages)))


def main() -> int:
    try:
        params = load_params()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    cfg, seed = params.grounded, params.seed
    try:
        train_pages = read_split_pages(paths.splits_dir() / "roam_train.jsonl")
        val_pages = read_split_pages(paths.splits_dir() / "roam_val.jsonl")
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    synthetic_seed = seed + SeedOffset.GROUNDED_SYNTHETIC  # one rng per part
    roam_n = roam_dialogues(cfg, train_pages)
    jobs = [
        (
            "roam_train",
            lambda: part(train_pages, roam_n, cfg, seed + SeedOffset.GROUNDED_ROAM_TRAIN, "roam"),
        ),
        (
            "synthetic",
            lambda: part(
                synthetic_pages(random.Random(synthetic_seed), cfg.synthetic_pages),
                cfg.synthetic_dialogues,
                cfg,
                synthetic_seed,
                "synthetic",
            ),
        ),
        ("roam_val", lambda: part(val_pages, cfg.val_dialogues, cfg, seed + SeedOffset.GROUNDED_ROAM_VAL, "roam")),
    ]
    made = {}
    for name, job in tqdm(jobs, desc="grounded", unit=" part"):
        made[name] = job()
    train = made["roam_train"] + made["synthetic"]
    random.Random(seed).shuffle(train)  # interleave, so any stretch of the stream mixes both
    write_jsonl(paths.grounded_dir() / "train.jsonl", train)
    write_jsonl(paths.grounded_dir() / "val.jsonl", made["roam_val"])
    summary = {name: len(records) for name, records in made.items()}
    summary["val_pages"] = sorted(p.name for p in val_pages)
    write_json(paths.grounded_dir() / "summary.json", summary)
    print(
        f"grounded: {len(train):,} train dialogues ({summary['roam_train']:,} roam, {summary['synthetic']:,} synthetic),"
        f" {summary['roam_val']:,} val"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Grounded dialogues: deterministic, never about (or showing) validation pages, in the exact
chat format and notes layout chat uses; synthetic notes; document-aligned batches."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from bytechat.notes import grounded
from bytechat.data.batching import document_starts, get_batch
from bytechat.text.chat_format import parse_chat, render_transcript
from bytechat.notes.roam import RoamPage
from bytechat.notes.blocks import all_blocks, lead_blocks, notes_system_content, render_notes
from bytechat.notes.index import NotesIndex
from bytechat.notes.retrieval import notes_budget
from bytechat.notes.synthetic import synthetic_pages
from tests.conftest import REPO

PAGES = [
    RoamPage("Bees", "- hives:: 3\n- location:: behind the shed\n- {{[[TODO]]}} order new frames\n"),
    RoamPage("Marta", "- birthday:: 9 April\n- Lives in Porto with Rui.\n- Gift ideas\n    - ceramics class\n"),
    RoamPage("Car", "- plate:: KL 482 TR\n- next service:: 12 January 2027\n"),
]


def make(pages, seed=0, n=200):
    blocks = all_blocks(pages)
    index = NotesIndex.build(blocks)
    return grounded.dialogues(
        blocks,
        lambda q, k: [h.block for h in index.search(q, k)],
        random.Random(seed),
        n,
        unknown_name=lambda rng: "Zorblat",
    )


def test_dialogues_are_deterministic_and_round_trip():
    a, b = make(PAGES, seed=3), make(PAGES, seed=3)
    assert [d.document() for d in a] == [d.document() for d in b]
    assert [d.document() for d in make(PAGES, seed=4)] != [d.document() for d in a]
    for d in a:
        assert parse_chat(d.document()) == d.messages
        assert render_transcript(parse_chat(d.document())) == d.document()


def test_answer_quotes_the_block_placed_last_and_holds_the_gold():
    kinds = set()
    for d in make(PAGES):
        system, user, assistant = d.messages
        kinds.add(d.kind)
        if d.kind == "uncovered":
            assert assistant["content"] == grounded.ABSTAIN
            continue
        last_block = "[" + system["content"].split("\n[")[-1]
        assert assistant["content"] == f"From {last_block}"
        assert d.gold and d.gold in assistant["content"]
        assert last_block.startswith(f"[{d.page}] ")
    assert kinds == {"attribute", "todo", "keyword", "page", "uncovered"}


def test_notes_follow_the_chat_layout_and_fit_the_budget():
    for d in make(PAGES):
        system = d.messages[0]["content"]
        blocks = [b for b in all_blocks(PAGES) if b.render() in system]
        if system != render_notes([]):
            order = [system.index(b.render()) for b in blocks]
            assert render_notes(sorted(blocks, key=lambda b: -system.index(b.render()))) == system, order
        assert notes_system_content(system) == system
        assert len(system.encode()) <= notes_budget(512, [d.messages[1]])


def test_questions_cover_attributes_todos_and_pages():
    rng = random.Random(0)
    bees = all_blocks(PAGES[:1])
    hives = grounded.questions(bees[0], rng)
    assert [(q.kind, q.gold) for q in hives] == [("attribute", "3"), ("page", "hives: 3")]
    todo = grounded.questions(bees[2], rng)
    assert ("todo", "order new frames") in [(q.kind, q.gold) for q in todo]
    assert all("todo" in t.lower() for t in grounded.TODO_TEMPLATES), "a todo question names what it searches for"


def test_a_page_question_is_answered_by_the_page_s_lead_block():
    """Not by the tags block a Roam page starts with: retrieval puts that one last."""
    page = RoamPage("Priya", "- type:: #person #work\n- relation:: my manager\n- Likes long walks.\n")
    blocks = all_blocks([page])
    assert lead_blocks(blocks) == {("Priya", 1)}
    page_questions = [
        (b.position, q.gold)
        for seed in range(20)
        for b in blocks
        for q in grounded.questions(b, random.Random(seed), lead=(b.page, b.position) in lead_blocks(blocks))
        if q.kind == "page"
    ]
    assert page_questions and {pos for pos, _ in page_questions} == {1}
    assert {gold for _, gold in page_questions} == {"relation: my manager"}
    assert lead_blocks(all_blocks([RoamPage("Tags", "- type:: #a\n- tags:: #b\n")])) == {("Tags", 0)}


def test_no_attribute_question_that_only_names_the_page():
    """ "what's the plan for Half Marathon Plan?" has no word beyond the title to find the block by."""
    plan = all_blocks([RoamPage("Running/Half Marathon Plan", "- plan:: 12 weeks\n- who:: Jonas\n- goal:: sub 2h\n")])
    kinds = [[q.kind for q in grounded.questions(b, random.Random(0))] for b in plan]
    assert kinds == [["page"], [], ["attribute"]]


def test_synthetic_pages_are_seeded_and_distinct():
    a = synthetic_pages(random.Random(1), 50)
    assert [p.name for p in a] == [p.name for p in synthetic_pages(random.Random(1), 50)]
    assert len({p.name for p in a}) == 50
    assert all(all_blocks([p]) for p in a)


@pytest.mark.slow
def test_grounded_stage_never_uses_validation_pages(tmp_path):
    """Run split + grounded on a copy of the repo; no val page's text in train.jsonl."""
    work = tmp_path / "repo"
    for rel in ("bytechat", "stages", "data", "examples"):
        shutil.copytree(REPO / rel, work / rel, ignore=shutil.ignore_patterns("__pycache__"))
    params = (REPO / "params.yaml").read_text()
    params = params.replace("synthetic_pages: 3000", "synthetic_pages: 50").replace(
        "synthetic_dialogues: 12000", "synthetic_dialogues: 300"
    )
    (work / "params.yaml").write_text(params.replace("roam_dialogues: 4000", "roam_dialogues: 1500"))
    env = {"BYTECHAT_ROOT": str(work), "PATH": "/usr/bin:/bin", "HF_DATASETS_OFFLINE": "1"}
    for stage in ("split", "grounded"):
        subprocess.run([sys.executable, f"stages/{stage}.py"], cwd=work, env=env, check=True, capture_output=True)
    out = work / "artifacts" / "grounded"
    train = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    val = [json.loads(line) for line in (out / "val.jsonl").read_text().splitlines()]
    manifest = json.loads((work / "artifacts" / "splits" / "manifest.json").read_text())
    val_pages, train_pages = set(manifest["roam"]["val"]), set(manifest["roam"]["train"])
    assert val_pages and val and train
    assert not any(r["page"] in val_pages for r in train)
    assert {r["page"] for r in val if r["page"]} <= val_pages
    for page in val_pages:  # not even as a distractor
        assert not any(f"[{page}]" in r["text"] for r in train), page
    assert {r["page"] for r in train if r["source"] == "roam" and r["page"]} <= train_pages
    first = (out / "train.jsonl").read_bytes()
    subprocess.run([sys.executable, "stages/grounded.py"], cwd=work, env=env, check=True, capture_output=True)
    assert (out / "train.jsonl").read_bytes() == first  # deterministic


def test_document_starts_and_aligned_batches():
    docs = [b"system: a\nuser: b\nassistant: c", b"user: dd\nassistant: ee", b"user: f\nassistant: g"]
    stream = np.frombuffer(b"\n\n".join(docs), dtype=np.uint8)
    starts = document_starts(stream, 8)
    assert list(starts) == [0, len(docs[0]) + 2, len(docs[0]) + len(docs[1]) + 4]
    p = {"grounded": 1.0}
    x, _ = get_batch(
        {"grounded": stream}, p, 32, 8, "cpu", torch.Generator().manual_seed(0), starts={"grounded": starts}
    )
    assert {bytes(row.tolist())[:5] for row in x} <= {b"syste", b"user:"}
    # Without starts the rows begin anywhere, with the same generator consumption.
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    get_batch({"grounded": stream}, p, 4, 8, "cpu", g1, starts={"grounded": starts})
    get_batch({"grounded": stream}, p, 4, 8, "cpu", g2)
    assert torch.equal(g1.get_state(), g2.get_state())

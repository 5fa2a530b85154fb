"""Grounded dialogues: deterministic, never about (or showing) validation pages, in the exact
chat format and notes layout chat uses; synthetic notes; document-aligned batches."""

from __future__ import annotations

import dataclasses
import json
import random
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from bytechat.notes import grounded, search
from bytechat.notes.dialogues import asking, frames, spans, summary
from bytechat.data.batching import document_starts, get_batch
from bytechat.text.chat_format import format_chat, parse_chat, render_transcript
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


def test_answers_say_spans_copied_from_the_block_placed_last():
    """The model is taught to copy, not to invent: every span an answer says is a piece of
    its gold block, the answer holds it word for word, and (but for summaries, which show
    what retrieval found) the gold block is the one placed last."""
    kinds = set()
    for d in make(PAGES):
        system, user, assistant = d.messages
        kinds.add(d.kind)
        if d.kind == "uncovered":
            assert assistant["content"] == grounded.ABSTAIN
            continue
        assert d.spans and d.gold == d.spans[0] and d.blocks
        for span in d.spans:
            assert span in assistant["content"], (span, assistant["content"])
            assert any(span in b.text for b in d.blocks), (span, d.blocks)
        assert all(b.page == d.page and b.render() in system["content"] for b in d.blocks)
        if d.kind != "page":
            assert system["content"].endswith(d.blocks[0].render())
        assert not assistant["content"].startswith("From ["), "no echo of the block"
    assert kinds == {"attribute", "todo", "keyword", "page", "uncovered"}


def test_anywhere_places_the_answering_block_among_the_shown_not_only_last(monkeypatch):
    """grounded.anywhere: the answering block goes to a random place among the shown
    blocks (first, middle or last), the same question and answer; 0 is the stream as before.
    Several blocks are shown where search keeps those that do not say the asked word."""
    monkeypatch.setattr(search, "SAY_THE_ASKED", False)
    blocks = all_blocks(PAGES)
    index = NotesIndex.build(blocks)

    def made(anywhere):
        return grounded.dialogues(
            blocks,
            lambda q, k: [h.block for h in index.search(q, k)],
            random.Random(2),
            300,
            unknown_name=lambda rng: "Zorblat",
            anywhere=anywhere,
        )

    assert [d.document() for d in made(0.0)] == [d.document() for d in make(PAGES, seed=2, n=300)]
    places = set()
    for d in made(1.0):
        if d.kind in ("uncovered", "page"):
            continue
        shown = d.messages[0]["content"].split("\n")[1:]
        gold = d.blocks[0].render().split("\n")[0]
        places.add((shown.index(gold), len(shown)) if len(shown) > 1 else None)
        assert any(b.page == d.page for b in d.blocks) and d.spans[0] in d.messages[-1]["content"]
    several = {p for p in places if p}
    assert {i for i, n in several if i == 0} and {i for i, n in several if i == n - 1}, several


def test_value_answers_quote_an_attribute_from_where_its_value_starts(monkeypatch):
    """grounded.answers: value: an attribute question is answered by the page and the
    block from its value on (no key); everything else is quoted whole."""
    monkeypatch.setattr(grounded, "ANSWERS", "value")
    seen = set()
    for d in make(PAGES):
        reply = d.messages[-1]["content"]
        if d.kind == "attribute":
            block = d.blocks[0]
            key, _, value = block.text.partition(": ")
            assert reply == f"From [{block.page}] {value}" and key not in reply, reply
            assert d.spans == (value,) and value in block.text
        elif d.kind in ("todo", "keyword", "page"):
            assert reply == grounded.answer(d.blocks[0]) or reply.startswith("From ["), reply
        seen.add(d.kind)
    assert {"attribute", "todo", "uncovered"} <= seen


def _words(text: str) -> set[str]:
    return set(re.findall(r"[^\W_]+", text.lower()))


TEMPLATE_WORDS = _words(
    " ".join(
        t if isinstance(t, str) else t[1]
        for module in (frames, summary)
        for value in vars(module).values()
        if isinstance(value, tuple)
        for t in value
        if isinstance(t, (str, tuple)) and not (isinstance(t, tuple) and len(t) != 2)
    )
    + " "
    + " ".join(frames.NUMBERS.values())
    + " on in are is yes "
    + grounded.ABSTAIN
)


@pytest.mark.parametrize("seed", [0, 1])
def test_no_answer_holds_a_value_the_notes_do_not(seed):
    """Every word of a reply is a template's or the notes' (or the question's), and every
    number in it is in the notes: on random synthetic pages and the example graph."""
    from bytechat.notes.roam import load_pages

    pages = synthetic_pages(random.Random(seed), 40) + load_pages(REPO / "examples" / "roam")[:12]
    checked = 0
    for d in make(pages, seed=seed, n=300):
        system, user, assistant = (m["content"] for m in d.messages)
        stray = _words(assistant) - TEMPLATE_WORDS - _words(system) - _words(user)
        assert not stray, (stray, assistant)
        for number in re.findall(r"\d+", assistant):
            assert number in system, (number, assistant)
        checked += 1
    assert checked == 300


def test_the_fact_not_the_rest_of_the_line():
    """ "when is Jonas's birthday?" gets the date, not the joke after it; "my manager"
    is said as "your manager"; a count is a count."""
    pages = [
        RoamPage("Jonas", "- relation:: my running buddy\n- Birthday:: 14 February. Yes, really, he says.\n"),
        RoamPage("Bees", "- hives:: 3\n- location:: behind the shed (north side)\n"),
    ]
    replies = {}
    for d in make(pages, n=200):
        if d.kind == "attribute":
            replies.setdefault(d.gold, set()).add(d.messages[-1]["content"])
    assert set(replies) == {"14 February", "running buddy", "3", "behind the shed"}
    assert not any("really" in r for r in replies["14 February"])
    assert not any("north" in r for r in replies["behind the shed"])
    assert all("your running buddy" in r.lower() for r in replies["running buddy"]), replies["running buddy"]
    assert any(r == "Jonas's Birthday is on 14 February." or "on 14 February" in r for r in replies["14 February"])
    assert all("3 hives" in r for r in replies["3"]), replies["3"]
    assert len(set().union(*replies.values())) >= 12, "many frames, not one"


def test_spans():
    assert spans.value_span("14 February. Yes, really.") == "14 February"
    assert spans.value_span("14, next to the water tap (a blessing in August)") == "14, next to the water tap"
    assert spans.value_span("Ursula K. Le Guin") == "Ursula K. Le Guin"
    assert spans.value_span("half marathon under 1:55 → Running/Plan") == "half marathon under 1:55"
    assert spans.value_span("DONE signed up in September") == "signed up in September"
    assert spans.value_span("#book #science fiction") == "#book #science fiction"
    assert spans.value_span("easy 8 km, sunny. Running #injury") == "easy 8 km, sunny"
    assert spans.yours("my manager since March 2025") == ("your ", "manager since March 2025")
    assert spans.open_todos("Jobs\n  DONE plant garlic\n  TODO mulch the beds") == ["mulch the beds"]
    assert (
        spans.sentence_with("Plot 15 (Mr. Bakker) grows leeks. Ask him about seeds.", "seeds") == "Ask him about seeds."
    )
    assert [spans.date_preposition(d) for d in ("14 February", "March 3rd, 2027", "spring 2024", "soon")] == [
        "on",
        "on",
        "in",
        "",
    ]


def test_a_page_question_is_summarised_from_the_blocks_shown():
    """ "tell me about X": two or more of the page's blocks shown are said, each a short
    item copied from its block, and the reply fits the window with its prompt."""
    page = RoamPage(
        "Sourdough Starter",
        "- name:: Gus\n- born:: February 2026\n- Feeding\n    - Ratio 1:1:1 by weight.\n    - Once a day.\n",
    )
    summaries = [d for d in make([page, *PAGES], n=300) if d.kind == "page" and d.page == "Sourdough Starter"]
    assert summaries
    for d in summaries:
        reply = d.messages[-1]["content"]
        assert len(d.blocks) >= 2 and len(d.spans) >= 2, reply
        assert sum(b.text.split("\n")[0].split(": ")[-1][:8] in reply for b in d.blocks) >= 2, reply
        assert len(d.document().encode()) <= 512
    assert any(reply.count("\n- ") >= 1 for reply in (d.messages[-1]["content"] for d in summaries)), "lists too"


def test_dialogues_fit_the_training_window():
    """A reply that runs past the 512-byte row it starts never learns its end."""
    pages = synthetic_pages(random.Random(5), 60)
    docs = [len(d.document().encode()) for d in make(pages, n=400)]
    assert sum(n > 512 for n in docs) <= len(docs) // 100


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
    hives = asking.questions(bees[0], rng)
    assert [(q.kind, q.gold) for q in hives] == [("attribute", "3"), ("page", "hives: 3")]
    todo = asking.questions(bees[2], rng)
    assert ("todo", "order new frames") in [(q.kind, q.gold) for q in todo]
    assert all("todo" in t.lower() for t in asking.TODO_TEMPLATES), "a todo question names what it searches for"


def test_a_page_question_is_answered_by_the_page_s_lead_block():
    """Not by the tags block a Roam page starts with: retrieval puts that one last."""
    page = RoamPage("Priya", "- type:: #person #work\n- relation:: my manager\n- Likes long walks.\n")
    blocks = all_blocks([page])
    assert lead_blocks(blocks) == {("Priya", 1)}
    page_questions = [
        (b.position, q.gold)
        for seed in range(20)
        for b in blocks
        for q in asking.questions(b, random.Random(seed), lead=(b.page, b.position) in lead_blocks(blocks))
        if q.kind == "page"
    ]
    assert page_questions and {pos for pos, _ in page_questions} == {1}
    assert {gold for _, gold in page_questions} == {"relation: my manager"}
    assert lead_blocks(all_blocks([RoamPage("Tags", "- type:: #a\n- tags:: #b\n")])) == {("Tags", 0)}


def test_no_attribute_question_that_only_names_the_page():
    """ "what's the plan for Half Marathon Plan?" has no word beyond the title to find the block by."""
    plan = all_blocks([RoamPage("Running/Half Marathon Plan", "- plan:: 12 weeks\n- who:: Jonas\n- goal:: sub 2h\n")])
    kinds = [[q.kind for q in asking.questions(b, random.Random(0))] for b in plan]
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
    # 2 dialogues per train block at most: the cap binds (the example graph's train blocks
    # would get all 10,000 at the shipped 15)
    (work / "params.yaml").write_text(re.sub(r"dialogues_per_block: \d+", "dialogues_per_block: 2", params))
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
    summary = json.loads((out / "summary.json").read_text())
    blocks = len(all_blocks(grounded.read_split_pages(work / "artifacts" / "splits" / "roam_train.jsonl")))
    single = 2 * blocks  # then a quarter as many conversations, a tenth as much small talk and near misses,
    pages = float(re.search(r"\n  pages: ([\d.]+)", params).group(1))  # and grounded.pages' page questions
    assert 0 < summary["roam_train"] <= round(single * (1.45 + pages)) + 3 < 10000, (summary, blocks)
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


# ---------------------------------------------------------------- conversations and small talk


def _conversations(pages, seed=0, n=150, builder="conversation"):
    from bytechat.notes.dialogues import conversation

    blocks = all_blocks(pages)
    index = NotesIndex.build(blocks)
    talks = conversation.Conversations(
        blocks, lambda q, k: [h.block for h in index.search(q, k)], unknown_name=lambda rng: "Zorblat"
    )
    return conversation.make(talks, random.Random(seed), n, builder)


def _graph():
    from bytechat.notes.roam import load_pages

    return synthetic_pages(random.Random(3), 40) + load_pages(REPO / "examples" / "roam")[:10]


def test_conversations_are_laid_out_as_chat_lays_out_their_last_turn():
    """Multi-turn dialogues round-trip through the chat format, their prompt is what the
    engine would send (nothing left to crop in the prompt budget), and only the system
    turn holds notes."""
    from bytechat.serve.generate import crop_messages
    from bytechat.text.chat_format import format_chat

    dialogues = _conversations(_graph())
    assert [d.document() for d in dialogues] == [d.document() for d in _conversations(_graph())]
    assert sum(len(d.messages) >= 4 for d in dialogues) >= len(dialogues) // 2, "earlier turns fit beside the notes"
    for d in dialogues:
        assert parse_chat(d.document()) == d.messages
        prompt = d.messages[:-1]
        assert crop_messages(prompt, 384) == prompt and len(format_chat(prompt).encode()) <= 384
        assert prompt[-1]["role"] == "user" and d.messages[-1]["role"] == "assistant"
        assert not [m for m in d.messages[1:] if re.search(r"(^|\n)Notes:(\n\[| none found)", m["content"])]
        assert all(m["role"] != "system" for m in d.messages[1:])
        for span in d.spans:
            assert span in d.messages[-1]["content"] and any(span in b.text for b in d.blocks)
    kinds = {d.kind for d in dialogues}
    assert {"conv_followup", "conv_fact", "conv_smalltalk", "conv_uncovered"} <= kinds, kinds


def test_a_follow_up_is_answered_from_the_earlier_turn_s_page():
    """ "and her phone?" after a question about Marta: the gold is a block of Marta's
    page, the reply names the page, and the earlier turn (kept in the prompt) is about it."""
    from bytechat.notes.query import is_follow_up

    follow_ups = [d for d in _conversations(_graph(), n=300) if d.kind == "conv_followup"]
    assert len(follow_ups) >= 30
    with_history = 0
    for d in follow_ups:
        name = asking.title(d.page)
        assert all(b.page == d.page for b in d.blocks)
        question = d.messages[-2]["content"]
        assert is_follow_up(question), question
        earlier = [m["content"] for m in d.messages[:-2] if m["role"] != "system"]
        if earlier:
            with_history += 1
            assert any(name in text for text in earlier), (name, earlier)
    assert with_history >= len(follow_ups) // 2


def test_with_notes_keeps_the_last_turns_that_fit_as_the_engine_crops_them():
    from bytechat.notes.index import Hit
    from bytechat.notes.retrieval import with_notes
    from bytechat.serve.generate import crop_messages

    rng = random.Random(0)
    hits = [Hit("Bees", "hives: 3", 1.0, 0), Hit("Car", "plate: KL 482 TR", 0.5, 0)]
    for _ in range(200):
        turns = [
            {"role": ("user", "assistant")[i % 2], "content": "x" * rng.randint(1, 90)}
            for i in range(rng.randint(0, 7))
        ]
        messages = [*turns, {"role": "user", "content": "how many hives?"}]
        if rng.random() < 0.3:
            messages = [{"role": "system", "content": "Be brief."}, *messages]
        budget = rng.choice((150, 250, 384))
        for shown in (hits, hits[:0]):
            full = with_notes(messages, shown)
            assert (
                full[-1] == messages[-1]
                and full[1 if full[0]["role"] == "system" else 0 :][:-1]
                == [m for m in messages if m["role"] != "system"][:-1]
            )
            assert crop_messages(full, budget) == with_notes(messages, shown, budget)


def test_small_talk_says_an_before_a_vowel():
    """ "I couldn't find an album there", not "a album": every template with every filler."""
    from bytechat.notes.dialogues import everyday

    said = [s for t in everyday.TOPICS for template in (*t.prompts, *t.replies) for s in everyday.every_fill(template)]
    assert any(" an album" in s for s in said)
    assert [s for s in said if re.search(r"\b[Aa] [aeiou]", s)] == []


def test_small_talk_is_seeded_plain_and_names_no_page():
    """The everyday set: the same seed gives the same dialogues, replies are the
    module's own sentences (no page of the notes in them), refusals only where retrieval
    found nothing, and no prompt is one of the eval's everyday prompts."""
    from bytechat.eval.grounded import EVERYDAY_PROMPTS
    from bytechat.notes.dialogues import everyday

    pages = _graph()
    a, b = _conversations(pages, n=120, builder="smalltalk"), _conversations(pages, n=120, builder="smalltalk")
    assert [d.document() for d in a] == [d.document() for d in b]
    assert [d.document() for d in a] != [d.document() for d in _conversations(pages, 1, 120, "smalltalk")]
    titles = {asking.title(p.name) for p in pages} | {p.name for p in pages}
    topics = {d.kind for d in a}
    assert len(topics) >= 10, topics
    for d in a:
        reply = d.messages[-1]["content"]
        assert not [t for t in titles if t in reply], reply
        if d.kind in ("everyday_world", "everyday_recommend"):
            assert d.messages[0]["content"] == "Notes: none found."
    normal = lambda s: " ".join(re.findall(r"[a-z0-9']+", s.lower()))  # noqa: E731
    eval_prompts = {normal(p) for p in EVERYDAY_PROMPTS}
    prompts = everyday.all_prompts()
    assert len(prompts) >= 300 and not [p for p in prompts if normal(p) in eval_prompts]


def test_training_templates_share_no_piece_with_the_held_out_ones():
    """The new question families (types, facts in passing, follow-ups, summaries, small talk) keep clear of
    every fixed piece (10+ characters) of the eval's held-out templates."""
    from bytechat.notes.dialogues import conversation, everyday, line_facts
    from tests.test_grounded_eval import heldout_pieces

    ours = [t for ts in frames.QUESTION_TEMPLATES.values() for t in ts] + list(summary.SUMMARY_QUESTIONS)
    ours += [t for ts in line_facts.QUESTIONS.values() for t in ts]
    ours += [t for ts in conversation.FOLLOW_UPS.values() for t in ts] + everyday.all_prompts()
    text = " | ".join(t.lower() for t in ours)
    assert not [p for p in heldout_pieces() if p in text]


def test_no_follow_up_template_makes_an_eval_question():
    """Every follow-up a template can ask about the example graph's or synthetic pages'
    keys and words, with every pronoun, is none of the hand-written eval questions (the
    pipeline test checks the stream as generated; this checks every choice)."""
    from bytechat.eval import grounded as ge
    from bytechat.eval import questions as qs
    from bytechat.notes.dialogues import conversation
    from bytechat.notes.roam import load_pages

    asked = set()
    for folder in ("unseen-notes", "new-user-notes"):
        graph = REPO / "data" / folder
        asked |= {c.question.lower() for c in qs.load_questions(graph / qs.QUESTIONS_FILE, load_pages(graph))}
    asked |= {p.lower() for p in ge.EVERYDAY_PROMPTS}
    pages = load_pages(REPO / "examples" / "roam") + synthetic_pages(random.Random(0), 50)
    rng, keys, words = random.Random(0), set(), set()
    blocks = all_blocks(pages)
    counts = asking.word_counts(blocks)
    for b in blocks:
        for s in asking.slots(b, rng, counts):
            keys.add(frames.key_words(s.fields.get("key", "x")))
            words.add(s.word or "x")
    refer = [conversation.PRONOUNS[p] for p in conversation.PRONOUNS] + [("it", "it", "its")]
    made = set()
    for template in (t for ts in conversation.FOLLOW_UPS.values() for t in ts):
        for subj, obj, pron in refer:
            fields = {"subj": subj, "obj": obj, "pron": pron, "does": "does", "is": "is", "verb": "buy", "title": "X"}
            for key in keys if "{key}" in template else ["x"]:
                for word in words if "{word}" in template else ["x"]:
                    made.add(template.format(**fields, key=key, word=word).lower())
    assert len(made) > 1000 and not made & asked, made & asked


def test_quote_answers_are_the_block_whole_for_comparison(monkeypatch):
    """grounded.answers: quote teaches the block quoted whole (page and all), in single
    questions and conversations alike, and a page question the page's shown blocks
    quoted whole, one per line; span (the default) never quotes."""
    from bytechat.notes.dialogues import conversation

    spoken = [d for d in make(PAGES, seed=5) if d.kind != "uncovered"]
    assert spoken and not any(d.messages[-1]["content"].startswith(grounded.ANSWER_PREFIX) for d in spoken)
    monkeypatch.setattr(grounded, "ANSWERS", "quote")
    quoted = [d for d in make(PAGES, seed=5) if d.kind != "uncovered"]
    assert {d.kind for d in quoted} >= {"attribute", "page"}
    whole = {grounded.answer(b) for b in all_blocks(PAGES)}
    for d in quoted:
        reply = d.messages[-1]["content"]
        assert reply in whole or d.kind == "page", reply
        assert reply.startswith(f"{grounded.ANSWER_PREFIX}[{d.page}] "), (reply, d.page)
    pages = [d for d in quoted if d.kind == "page"]
    several = [d for d in pages if "\n" + grounded.ANSWER_PREFIX in d.messages[-1]["content"]]
    assert several, "a page question quotes the page's blocks shown, not only the first"
    for d in pages:  # each of them whole, in page order, every one shown and of the page
        said = [grounded.answer(b) for b in d.blocks]
        assert d.messages[-1]["content"] in {"\n".join(said[:n]) for n in range(1, len(said) + 1)}
        assert all(b.page == d.page and b.render() in d.messages[0]["content"] for b in d.blocks)
        assert [b.position for b in d.blocks] == sorted(b.position for b in d.blocks)
        assert len(format_chat(d.messages).encode()) <= 512  # it fits the context it trains in
    blocks = all_blocks(PAGES)
    index = NotesIndex.build(blocks)
    talks = conversation.Conversations(blocks, lambda q, k: [h.block for h in index.search(q, k)], 3, 512)
    last = [d.messages[-1]["content"] for d in conversation.make(talks, random.Random(1), 30) if d.page]
    assert last and all(reply.startswith(grounded.ANSWER_PREFIX) for reply in last)


def test_clause_answers_quote_an_attribute_block_to_the_end_of_its_fact(monkeypatch):
    """grounded.answers: clause quotes an attribute block from its start to the end of
    the value's first clause (the aside after it is left out); a block that is all fact,
    and every other question, gets the quote whole."""
    pages = [*PAGES, RoamPage("Jonas", "- birthday:: 14 February. Yes, really, he checks.\n")]
    monkeypatch.setattr(grounded, "ANSWERS", "clause")
    made = [d for d in make(pages, seed=5, n=300) if d.kind == "attribute"]
    jonas = [d.messages[-1]["content"] for d in made if d.page == "Jonas"]
    assert jonas and set(jonas) == {f"{grounded.ANSWER_PREFIX}[Jonas] birthday: 14 February"}, jonas
    whole = {grounded.answer(b) for b in all_blocks(pages)}
    others = [d.messages[-1]["content"] for d in made if d.page != "Jonas"]
    assert others and all(reply in whole for reply in others), others  # "hives: 3" is all fact


def test_the_pages_share_adds_whole_page_questions(monkeypatch):
    """params.yaml grounded.pages: per question, one more "tell me about X" about a random
    page, answered as the page questions are (quote answers: its blocks shown, quoted)."""
    from bytechat.core.config import load_params
    from stages.grounded import part

    cfg = dataclasses.replace(load_params().grounded, answers="quote", near_miss=0.0)
    counts = {}
    for share in (0.0, 0.5):
        rows = part(PAGES, 40, dataclasses.replace(cfg, pages=share), seed=3, source="roam")
        counts[share] = [r for r in rows if r["kind"] == "page"]
    assert len(counts[0.5]) >= len(counts[0.0]) + 20  # 40 x 0.5 more
    titles = {p.title for p in PAGES}
    for row in counts[0.5]:
        assert row["page"] in titles
        assert row["messages"][-1]["content"].startswith(f"{grounded.ANSWER_PREFIX}[{row['page']}] ")

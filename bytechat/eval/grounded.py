"""Chat with notes, measured the way a new user meets it: question -> retrieval -> the
model's greedy reply, exactly as the terminal and web chat do it, each reply scored
beside the search box's (retrieval's top hit pasted, no model at all).

Question sets (none of their questions is ever trained on; tests check it):
    heldout_train   held-out phrasings (bytechat.eval.phrasings) about the notes' train pages
    heldout_val     the same about validation pages (the model never saw them)
    heldout_followups  a held-out attribute question and its quote, then another attribute of
                    the same page asked with a pronoun ("how about her address?")
    natural_dev     hand-written questions on data/unseen-notes/ (a graph no model trains on,
    natural_test      with its own index); the test part is kept for the end of a piece of work
    your_notes      questions.jsonl beside your notes, if there is one (the new-user check ships one)
    everyday        small talk (and small_talk_dev / _test, the probe): bytechat.eval.small_talk

Metrics per set (docs/notes.md, "Measuring chat"); each has its baseline_* beside it:
    answer_f1         token F1 of the reply against the gold answer span (scoring.answer_f1)
    answer_contains   the reply holds a gold span
    followup_answer_contains  the same over follow-up turns only (a question after an
                      earlier exchange; the natural sets have them)
    false_abstention  answerable questions answered "not in your notes"
    abstention        near misses (the page exists, the fact does not) and uncovered
                      questions answered "not in your notes"
    page_coverage     whole-page questions: the share of the page's key facts mentioned
    wrong_answers     answerable, near-miss and uncovered questions whose reply is neither
                      a gold span nor "not in your notes": what would mislead a person
    recall_at_3       an answering block among retrieval's top 3 (retrieval alone)
    stop_rate         replies that end on their own (beside mean_reply_bytes)
"""

from __future__ import annotations

import json
import random
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from bytechat.core import paths
from bytechat.core.rng import SeedOffset
from bytechat.eval import phrasings, small_talk
from bytechat.eval.scoring import abstained, answer_f1, contains, coverage, mean
from bytechat.eval.small_talk import EVERYDAY_PROMPTS, probe, small_talk_metrics
from bytechat.notes import grounded
from bytechat.notes.dialogues import asking, conversation
from bytechat.notes.blocks import NoteBlock, all_blocks, lead_blocks, page_blocks, plain
from bytechat.notes.index import TOKENIZER, NotesIndex
from bytechat.notes.query import match_expression
from bytechat.notes.retrieval import notes_budget, notes_in_use, retrieve_for_chat, with_notes
from bytechat.notes.roam import RoamPage, load_pages
from bytechat.serve.batch_engine import DEFAULT_MAX_BATCH, BatchEngine
from bytechat.serve.generate import ChatEngine, ReplyDone, ReplyEvent, SamplingConfig

HELDOUT_QUESTIONS = 80  # per page set: 70 about blocks, 10 near misses (one answer moves a share ~0.014)
NEAR_MISS_SHARE = 0.125
UNCOVERED_QUESTIONS = 10  # in each held-out set
FOLLOWUP_QUESTIONS = 40  # held-out follow-ups: at most one a page, so a small graph gives fewer
REPLY_BYTES = 256
EVAL_TRAIN_OFFSET, EVAL_VAL_OFFSET = SeedOffset.HELDOUT_TRAIN, SeedOffset.HELDOUT_VAL  # the two held-out sets
QUESTIONS_FILE = "questions.jsonl"
ANSWERING = ("fact", "followup", "paraphrase", "typo", "inflection", "attribute", "todo", "keyword")
ABSTAINING = ("near_miss", "uncovered")
KINDS = (*ANSWERING, "page", *ABSTAINING)


class QuestionsError(ValueError):
    """A question file is unreadable or names what its notes do not hold; one line."""


@dataclass
class Case:
    question: str
    answers: list[str]  # gold answer spans; [] for near misses, uncovered and everyday
    kind: str
    page: str = ""
    history: list[dict[str, str]] = field(default_factory=list)  # earlier turns of a follow-up
    blocks: list[tuple[str, int]] = field(default_factory=list)  # (page, position) that answer it
    facts: list[str] = field(default_factory=list)  # a whole-page question: one key fact per block
    split: str = ""  # natural sets: dev | test
    id: str = ""

    @property
    def messages(self) -> list[dict[str, str]]:
        return [*self.history, {"role": "user", "content": self.question}]


@dataclass
class Result:
    case: Case
    reply: str
    finish: str
    sources: list[str] = field(default_factory=list)
    baseline: str = ""  # the search box: "From [Page] block" of retrieval's top hit
    baseline_all: str = ""  # every hit the model was shown, pasted
    recalled: bool = False  # an answering block was among retrieval's top 3

    @property
    def correct(self) -> bool:
        """Right in the sense a person means: the fact said, or the notes said to lack it."""
        if self.case.kind in ABSTAINING:
            return abstained(self.reply)
        if self.case.kind == "page":
            return coverage(self.reply, self.case.facts) >= 0.5
        return contains(self.reply, self.case.answers)


def search_box(hits) -> tuple[str, str]:
    """(top hit pasted, all hits pasted): what a search box that prints blocks shows."""
    if not hits:
        return grounded.ABSTAIN, grounded.ABSTAIN
    return grounded.answer(hits[0].block), "\n".join(grounded.answer(h.block) for h in hits)


# ---------------------------------------------------------------- question sets


def key_fact(block: NoteBlock) -> str:
    """What a summary of the page should say of this block: a `key: value` line's value,
    else the first words of its first line."""
    first = block.text.split("\n", 1)[0].strip()
    m = re.match(r"^[A-Za-z][\w' -]{0,30}: (.+)$", first)
    return m.group(1).strip() if m else " ".join(first.split()[:6])


def heldout_cases(
    pages: Sequence[RoamPage],
    n: int,
    seed: int,
    all_pages: Sequence[RoamPage],
    uncovered: int = UNCOVERED_QUESTIONS,
    topics: tuple[str, ...] = phrasings.UNCOVERED_TOPICS,
) -> list[Case]:
    """n held-out-phrasing questions about random blocks of pages (a share NEAR_MISS_SHARE
    of them near misses), then `uncovered` questions the notes do not cover. A keyword
    question ("was there a note mentioning glass?") is answered by any line that holds
    its word, so each such line is a gold span (word rarity is counted over all_pages)."""
    blocks = all_blocks(pages)
    if not blocks:
        return []
    everything = all_blocks(all_pages)
    counts = asking.word_counts(everything)
    lines = WordLines(everything)
    leads = lead_blocks(blocks)
    rng = random.Random(seed)
    n_near = round(n * NEAR_MISS_SHARE)
    cases: list[Case] = []
    for block in rng.sample(blocks, len(blocks)):
        if len(cases) == n - n_near:
            break
        options = asking.questions(
            block, rng, counts, (block.page, block.position) in leads, phrasings.HELDOUT_TEMPLATES
        )
        if not options:
            continue
        q = rng.choice(options)
        case = Case(phrasings.typed(q.text, rng), [q.answer], q.kind, block.page, blocks=[(block.page, block.position)])
        if q.kind == "page":
            page = next(p for p in pages if p.name == block.page)
            case.facts = [key_fact(b) for b in page_blocks(page)]
            case.answers = []
        for other, line in lines.holding(q.word) if q.word else []:
            case.answers += [line] if line not in case.answers else []
            case.blocks += [(other.page, other.position)] if other != block else []
        cases.append(case)
    for page in rng.sample(list(pages), len(pages)):
        if len(cases) >= n:
            break
        text = phrasings.near_miss(asking.title(page.name), page.text, rng)
        if text:
            cases.append(Case(phrasings.typed(text, rng), [], "near_miss", page.name))
    cases += [Case(phrasings.uncovered(rng, topics), [], "uncovered") for _ in range(uncovered)]
    return cases


def heldout_followups(pages: Sequence[RoamPage], n: int, seed: int) -> list[Case]:
    """Up to n two-turn questions: an attribute of a page asked in a held-out phrasing and
    answered with its quote, then another attribute of the same page asked with a pronoun
    (phrasings.FOLLOWUP_TEMPLATES: "how about her address?"), whose value is the gold.
    A page gives one, if it has two attributes with keys of their own."""
    rng = random.Random(seed)
    cases: list[Case] = []
    for page in rng.sample(list(pages), len(pages)):
        if len(cases) >= n:
            break
        blocks = page_blocks(page)
        attributes = {}  # key: (block, value), as the held-out attribute questions read them (asking.slots)
        for block in blocks:
            for slot in asking.slots(block, rng):
                if slot.family == "attribute" and not slot.answer.startswith("#"):  # a tag is no fact
                    attributes.setdefault(slot.fields["key"].lower(), (block, slot.answer))
        if len(attributes) < 2:
            continue
        first, then = rng.sample(sorted(attributes), 2)
        asked = rng.choice(phrasings.HELDOUT_TEMPLATES["attribute"]).format(title=asking.title(page.name), key=first)
        history = [
            {"role": "user", "content": asked},
            {"role": "assistant", "content": f"From [{page.name}] {attributes[first][0].text}"},
        ]
        question = rng.choice(phrasings.FOLLOWUP_TEMPLATES).format(key=then, **conversation.pronouns(blocks))
        block, value = attributes[then]
        cases.append(
            Case(phrasings.typed(question, rng), [value], "followup", page.name, history, [(page.name, block.position)])
        )
    return cases


class WordLines:
    """The lines of some blocks, searchable by word the way the notes index matches one
    (FTS5 with the same tokenizer: "errors" finds "error", "visited" finds "visit")."""

    def __init__(self, blocks: Sequence[NoteBlock]) -> None:
        self._rows = [(b, line.strip()) for b in blocks for line in b.text.split("\n")]
        self._db = sqlite3.connect(":memory:")
        self._db.execute(f"CREATE VIRTUAL TABLE lines USING fts5(line, tokenize='{TOKENIZER}')")
        self._db.executemany(
            "INSERT INTO lines (rowid, line) VALUES (?, ?)", [(i, l) for i, (_, l) in enumerate(self._rows)]
        )

    def holding(self, word: str) -> list[tuple[NoteBlock, str]]:
        """(block, line) for each line that holds word, in block order."""
        found = self._db.execute(
            "SELECT rowid FROM lines WHERE lines MATCH ? ORDER BY rowid", (match_expression([word]),)
        )
        return [self._rows[i] for (i,) in found]


_REQUIRED = {"id": str, "split": str, "kind": str, "history": list, "question": str, "answers": list, "page": str}


def load_questions(path: Path, pages: Sequence[RoamPage]) -> list[Case]:
    """The hand-written questions of a questions.jsonl (format: docs/notes.md, "Measuring
    chat"), each checked against pages: its page exists, its block and answer spans are
    in it. Errors name the file, the line and the field."""
    by_name = {p.name: p for p in pages}
    blocks = {name: page_blocks(p) for name, p in by_name.items()}
    cases = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            r = json.loads(line)
        except json.JSONDecodeError as exc:
            raise QuestionsError(f"{where}: not JSON ({exc.msg})") from None
        for key, kind in _REQUIRED.items():
            if not isinstance(r.get(key), kind):
                raise QuestionsError(f"{where}: {key}: expected {kind.__name__}, got {r.get(key)!r}")
        if r["kind"] not in KINDS:
            raise QuestionsError(f"{where}: kind: {r['kind']!r} is none of {', '.join(KINDS)}")
        case = Case(r["question"], r["answers"], r["kind"], r["page"], r["history"], split=r["split"], id=r["id"])
        if r["page"] and r["page"] not in by_name:
            raise QuestionsError(f"{where}: page: {r['page']!r} is not a page of the notes")
        if "block" in r:
            want = plain(r["block"])
            found = [(b.page, b.position) for b in blocks[r["page"]] if want in b.text]
            if not found:
                raise QuestionsError(f"{where}: block: {r['block']!r} is in no block of [{r['page']}]")
            case.blocks = found[:1]
        case.facts = list(r.get("facts", []))
        cases.append(case)
    return cases


# ---------------------------------------------------------------- asking


def ask(
    engine: ChatEngine,
    index: NotesIndex | None,
    question: str,
    max_bytes: int = REPLY_BYTES,
    case: Case | None = None,
    faithful: bool = False,
) -> Result:
    """One question (after case's history, if any) through the chat path, greedy;
    faithful: a quote can only be a verbatim one (bytechat/serve/copying.py)."""
    case = case or Case(question, [], "uncovered")
    messages, hits = prompt_for(engine, index, case)
    done = engine.reply(messages, greedy(max_bytes, faithful), seed=0)
    return result_of(index, case, done, hits)


def greedy(max_bytes: int, faithful: bool) -> SamplingConfig:
    return SamplingConfig(temperature=0.0, max_new_bytes=max_bytes, faithful=faithful)


def prompt_for(engine: ChatEngine, index: NotesIndex | None, case: Case) -> tuple[list[dict[str, str]], list]:
    """The case's messages as chat sends them (the notes retrieval shows, as many as fit), and those hits."""
    messages, hits = case.messages, []
    if index is not None:
        hits = retrieve_for_chat(index, messages, budget_bytes=notes_budget(engine.block_size, messages))
        messages = with_notes(messages, hits)
    return messages, hits


def result_of(index: NotesIndex | None, case: Case, done: ReplyDone, hits) -> Result:
    top, every = search_box(hits)
    # recall is retrieval's alone: its top 3 for the conversation, before the prompt budget
    top3 = retrieve_for_chat(index, case.messages) if index is not None and case.blocks else []
    recalled = any((h.page, h.position) in case.blocks for h in top3)
    return Result(case, done.reply, done.finish_reason, [h.page for h in hits], top, every, recalled)


def ask_batched(
    engine: ChatEngine,
    index: NotesIndex | None,
    cases: Sequence[Case],
    max_bytes: int = REPLY_BYTES,
    faithful: bool = False,
    max_batch: int = DEFAULT_MAX_BATCH,
    desc: str | None = None,
) -> list[Result]:
    """ask() for every case, the replies decoded together in one batch (BatchEngine): each
    is what ask() gives (the batch test pins batched rows to decoding alone), but the model
    runs once per byte for all of them, which on a GPU, where one reply's step is a few
    small kernels, is most of the time (docs/training.md, "Measured on a GPU"). desc: a
    progress bar of that name counts the replies done."""
    batch = BatchEngine(engine, max_batch)
    bar = tqdm(total=len(cases), desc=desc, unit="q", leave=False, disable=desc is None)
    asked = []
    for case in cases:
        messages, hits = prompt_for(engine, index, case)
        done: list = []

        def emit(event, done=done) -> None:
            if not isinstance(event, ReplyEvent):
                done.append(event)
                bar.update(1)

        batch.submit(messages, greedy(max_bytes, faithful), 0, emit)
        asked.append((case, hits, done))
    while batch.step():
        pass
    bar.close()
    results = []
    for case, hits, (event,) in asked:
        if isinstance(event, Exception):
            raise event
        results.append(result_of(index, case, event, hits))
    return results


def run_cases(
    engine: ChatEngine, index: NotesIndex | None, cases: Sequence[Case], desc: str, faithful: bool = False
) -> list[Result]:
    return ask_batched(engine, index, cases, faithful=faithful, desc=desc)


# ---------------------------------------------------------------- metrics


def set_metrics(results: Sequence[Result]) -> dict[str, float]:
    """The metrics of one question set, each model figure beside its search-box baseline
    (baseline_*: retrieval's top hit pasted; baseline_all_*: every hit shown pasted)."""
    answering = [r for r in results if r.case.kind in ANSWERING]
    whole_page = [r for r in results if r.case.kind == "page"]
    refusing = [r for r in results if r.case.kind in ABSTAINING]
    near = [r for r in refusing if r.case.kind == "near_miss"]
    follow_ups = [r for r in answering if r.case.kind == "followup"]  # a turn after an earlier one
    out: dict[str, float] = {"questions": len(results)}
    for prefix, reply in (
        ("", lambda r: r.reply),
        ("baseline_", lambda r: r.baseline),
        ("baseline_all_", lambda r: r.baseline_all),
    ):
        if answering:
            out[prefix + "answer_f1"] = mean(answer_f1(reply(r), r.case.answers) for r in answering)
            out[prefix + "answer_contains"] = mean(contains(reply(r), r.case.answers) for r in answering)
            out[prefix + "false_abstention"] = mean(abstained(reply(r)) for r in answering)
            out[prefix + "answer_bytes"] = mean(len(reply(r).encode("utf-8")) for r in answering)
        if follow_ups:
            out[prefix + "followup_answer_contains"] = mean(contains(reply(r), r.case.answers) for r in follow_ups)
        if whole_page:
            out[prefix + "page_coverage"] = mean(coverage(reply(r), r.case.facts) for r in whole_page)
        if refusing:
            out[prefix + "abstention"] = mean(abstained(reply(r)) for r in refusing)
        if near:
            out[prefix + "abstention_near_miss"] = mean(abstained(reply(r)) for r in near)
        if answering or refusing:  # what misleads a person: a reply that is not the answer, nor a refusal
            wrong = [not abstained(reply(r)) and not contains(reply(r), r.case.answers) for r in answering]
            out[prefix + "wrong_answers"] = mean(wrong + [not abstained(reply(r)) for r in refusing])
    if answering:  # where the model says a fact its search box missed, and the reverse
        said = [(contains(r.reply, r.case.answers), contains(r.baseline, r.case.answers)) for r in answering]
        out["gained_on_baseline"] = mean(m > b for m, b in said)
        out["lost_to_baseline"] = mean(b > m for m, b in said)
    with_blocks = [r for r in answering if r.case.blocks]
    if with_blocks:
        out["recall_at_3"] = mean(r.recalled for r in with_blocks)
    out["stop_rate"] = mean(r.finish == "stop" for r in results)
    out["mean_reply_bytes"] = mean(len(r.reply.encode("utf-8")) for r in results)
    return out


def split_pages() -> tuple[list[RoamPage], list[RoamPage]]:
    """The notes' (train, validation) pages as the split stage wrote them."""
    return tuple(grounded.read_split_pages(paths.splits_dir() / f"roam_{s}.jsonl") for s in ("train", "val"))


def heldout_sets(train_pages: Sequence[RoamPage], val_pages: Sequence[RoamPage], seed: int) -> dict[str, list[Case]]:
    """The eval's held-out-phrasing sets (the answer probe keeps clear of them): questions
    about train pages, about validation pages, and follow-ups about either."""
    everything = [*train_pages, *val_pages]
    return {
        "heldout_train": heldout_cases(train_pages, HELDOUT_QUESTIONS, seed + EVAL_TRAIN_OFFSET, everything),
        "heldout_val": heldout_cases(val_pages, HELDOUT_QUESTIONS, seed + EVAL_VAL_OFFSET, everything),
        "heldout_followups": heldout_followups(everything, FOLLOWUP_QUESTIONS, seed + SeedOffset.HELDOUT_FOLLOWUPS),
    }


def unseen_notes() -> Path:
    return paths.root() / "data" / "unseen-notes"


def evaluate_grounded(
    engine: ChatEngine, seed: int, unseen: Path | None = None, faithful: bool = False
) -> tuple[dict, str]:
    """(metrics by question set, transcripts) for the pipeline's notes (artifacts/splits,
    artifacts/notes), data/unseen-notes and, if present, the questions beside the notes.
    faithful: replies decoded with faithful-copy decoding (params.yaml eval.faithful)."""
    train_pages, val_pages = split_pages()
    everything = [*train_pages, *val_pages]
    results: dict[str, list[Result]] = {}
    with NotesIndex.open(paths.notes_index()) as index:
        for name, cases in heldout_sets(train_pages, val_pages, seed).items():
            results[name] = run_cases(engine, index, cases, name, faithful)
        own = notes_in_use() / QUESTIONS_FILE
        if own.is_file():
            results["your_notes"] = run_cases(engine, index, load_questions(own, everything), "your notes", faithful)
        for name, prompts in {"everyday": list(EVERYDAY_PROMPTS), **probe(untaught=True)}.items():  # small talk
            results[name] = run_cases(engine, index, [Case(p, [], "everyday") for p in prompts], name, faithful)
    unseen = unseen or unseen_notes()
    unseen_pages = load_pages(unseen)
    natural = load_questions(unseen / QUESTIONS_FILE, unseen_pages)
    with NotesIndex.build(all_blocks(unseen_pages)) as unseen_index:
        for split in ("dev", "test"):
            cases = [c for c in natural if c.split == split]
            results[f"natural_{split}"] = run_cases(engine, unseen_index, cases, f"natural, {split}", faithful)
    metrics = {name: set_metrics(rs) for name, rs in results.items() if name not in small_talk.SETS}
    metrics.update({name: small_talk_metrics(rs) for name, rs in results.items() if name in small_talk.SETS})
    return metrics, transcripts(results)


def chat_table(metrics: dict[str, dict[str, float]]) -> str:
    """The chat metrics as a table: a row per question set, each model figure beside its
    search-box baseline ("model / box")."""
    columns = (
        "answer_f1",
        "answer_contains",
        "false_abstention",
        "abstention",
        "wrong_answers",
        "page_coverage",
        "answer_bytes",
    )
    form = {c: ".0f" if c == "answer_bytes" else ".2f" for c in columns}
    lines = [f"{'chat (model / search box)':<16}" + "".join(f"{c:>20}" for c in columns) + f"{'stop':>7}"]
    for name, m in metrics.items():
        if name in small_talk.SETS:
            continue
        cells = [f"{m[c]:{form[c]}} / {m['baseline_' + c]:{form[c]}}" if c in m else "-" for c in columns]
        lines.append(f"{name:<16}" + "".join(f"{x:>20}" for x in cells) + f"{m['stop_rate']:>7.2f}")
    for name in (n for n in small_talk.SETS if n in metrics):
        e = metrics[name]
        lines.append(
            f"{name}: stop rate {e['stop_rate']:.2f}, {e['mean_reply_bytes']:.0f} bytes, real words "
            f"{e['real_word_rate']:.2f}, distinct-2 {e['distinct_2']:.2f}, quoting a note {e['quoted']:.2f}, "
            f"a taught sentence {e['taught_sentence']:.2f}"
        )
    return "\n".join(lines)


def transcripts(results: dict[str, list[Result]]) -> str:
    """Per question: the conversation, the reply, the search box's reply, both F1s, the sources."""
    parts = []
    for name, rs in results.items():
        parts.append(f"## {name}")
        for r in rs:
            c = r.case
            lines = [f"{m['role']}: {m['content']}" for m in c.messages]
            lines.append(f"assistant: {r.reply}\n  ({r.finish}, {len(r.reply.encode('utf-8'))} bytes)")
            if name not in small_talk.SETS:
                lines.append(f"  search box: {r.baseline}")
                if c.kind in ANSWERING:
                    f1, base = answer_f1(r.reply, c.answers), answer_f1(r.baseline, c.answers)
                    lines.append(f"  [{c.kind}] gold {c.answers} · F1 {f1:.2f} (search box {base:.2f})")
                elif c.kind == "page":
                    cov, base = coverage(r.reply, c.facts), coverage(r.baseline, c.facts)
                    lines.append(f"  [page] facts {c.facts} · coverage {cov:.2f} (search box {base:.2f})")
                else:
                    lines.append(f"  [{c.kind}] must abstain: {'ok' if abstained(r.reply) else 'MISS'}")
            if r.sources:
                lines.append(f"  sources: {' · '.join(r.sources)}")
            parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"

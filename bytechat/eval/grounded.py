"""Chat with notes, measured the way a new user meets it: question -> retrieval -> the
model's greedy reply, exactly as the terminal and web chat do it, each reply scored
beside the search box's (retrieval's top hit pasted, no model at all).

Question sets (bytechat.eval.questions; none of their questions is ever trained on, tests check it):
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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from bytechat.core import paths
from bytechat.eval import small_talk
from bytechat.eval.questions import (
    ABSTAINING,
    ANSWERING,
    QUESTIONS_FILE,
    Case,
    heldout_sets,
    load_questions,
    split_pages,
    unseen_notes,
)
from bytechat.eval.scoring import abstained, answer_f1, contains, coverage, mean
from bytechat.eval.small_talk import EVERYDAY_PROMPTS, probe, small_talk_metrics
from bytechat.notes import grounded
from bytechat.notes.blocks import all_blocks
from bytechat.notes.index import NotesIndex
from bytechat.notes.retrieval import notes_budget, notes_in_use, retrieve_for_chat, with_notes
from bytechat.notes.roam import load_pages
from bytechat.serve.batch_engine import DEFAULT_MAX_BATCH, BatchEngine
from bytechat.serve.generate import ChatEngine, ReplyDone, ReplyEvent, SamplingConfig

# A reply may be as long as chat's own default (bytechat.serve.sampling): the eval measures
# what a person gets. At 256 a page reply was cut at its third or fourth quote (docs/chat.md).
REPLY_BYTES = SamplingConfig().max_new_bytes


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

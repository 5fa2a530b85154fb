"""Query-likelihood reranking (tools/rerank.py): the scores are the model's own
log-probabilities however the batch is padded, a model that has learned which block a
question goes with scores that block higher, and the rerank moves the block the scorer
prefers to the top (or abstains), while chat without a model is unchanged."""

from __future__ import annotations

import math

import pytest
import torch

from bytechat.model import GPT
from bytechat.notes.blocks import NoteBlock, render_notes
from bytechat.notes.index import Hit, index_folder
from tools.rerank import QueryLikelihood, candidates, rerank, retrieve_reranked
from bytechat.notes.retrieval import notes_budget, retrieve_for_chat
from bytechat.text.chat_format import render_transcript
from tests.helpers import model_config, overfit, write_tree

GRAPH = {
    "Choir.md": "- Rehearsal on Thursdays at 19:30 in the church hall.\n- conductor:: Ilse\n"
    "- Concert in December: Bach and Rutter.\n",
    "Bees.md": "- hives:: 3\n- Hive two swarmed in May; caught the swarm in the plum tree.\n",
    "Marta.md": "- birthday:: 12 March\n- Likes green tea and climbing.\n",
}


@pytest.fixture
def index(tmp_path):
    folder = write_tree(tmp_path / "notes", GRAPH)
    with index_folder(folder, tmp_path / "index.sqlite", progress=False) as idx:
        yield idx


class Preferring:
    """A scorer that finds the question best explained by blocks holding `word`."""

    def __init__(self, word: str) -> None:
        self.word = word
        self.calls = 0

    def score(self, question, blocks, history=()):
        self.calls += 1
        return [20.0 if self.word in b.text else 0.0 for b in blocks]


def _hit(name: str, position: int = 0) -> Hit:
    return Hit(name, f"{name} text", 1.0, position)


# ---------------------------------------------------------------- the scores


def _alone(model: GPT, text: str, start: int) -> float:
    """log P(text[start:] | text[:start]) from one unpadded forward."""
    ids = torch.tensor([list(text.encode("utf-8"))])
    with torch.no_grad():
        log_probs, _ = model(ids)
    return float(sum(log_probs[0, t - 1, ids[0, t]] for t in range(start, ids.shape[1])))


def test_scores_are_the_models_log_likelihoods_whatever_the_padding():
    torch.manual_seed(0)
    model = GPT(model_config(block_size=128, conv_kernel=4, copy_dim=8, copy_continue=True)).eval()
    texts = ["x", "Hive two swarmed in May; caught it in the plum tree.", "hives: 3", "Varroa check " * 5, "May"]
    blocks = [NoteBlock("Bees", text, i) for i, text in enumerate(texts)]  # rows of many lengths: several batches
    question = "when did the hive swarm?"
    scores = QueryLikelihood(model).score(question, blocks)

    def given(notes: str) -> float:
        head = render_transcript([{"role": "system", "content": notes}]) + "\nuser: "
        return _alone(model, head + question, len(head.encode("utf-8")))

    baseline = given(render_notes([]))
    expected = [given(render_notes([b])) - baseline for b in blocks]
    assert scores == pytest.approx(expected, abs=1e-4)


def test_a_block_longer_than_the_context_is_cut_not_an_error():
    torch.manual_seed(0)
    model = GPT(model_config(block_size=64)).eval()
    scorer = QueryLikelihood(model)
    row, start = scorer._row(render_notes([NoteBlock("Long", "word " * 100, 0)]), (), b"who?")
    assert len(row) <= 64 and bytes(row[start:]) == b"who?" and bytes(row[:start]).endswith(b"\nuser: ")
    score = scorer.score("who?", [NoteBlock("Long", "word " * 100, 0)], history=[{"role": "user", "content": "hi"}])
    assert len(score) == 1 and math.isfinite(score[0])


def test_a_model_that_learned_which_block_a_question_follows_scores_that_block_higher():
    """Trained a second on two notes each followed by its own question, the model finds
    each question more likely after its own block than after the other or none."""
    torch.manual_seed(0)
    model = GPT(model_config(block_size=64))
    cat, van = NoteBlock("Pets", "cat: Miso", 0), NoteBlock("Car", "van: Rex", 0)
    dialogues = [
        render_transcript([{"role": "system", "content": render_notes([b])}, {"role": "user", "content": q}]) + "\n"
        for b, q in ((cat, "who is Miso?"), (van, "where is Rex?"))
    ]
    overfit(model, lambda rng: "".join(dialogues[i] for i in torch.randperm(2, generator=rng).tolist() * 4), 120)
    scorer = QueryLikelihood(model)
    miso = scorer.score("who is Miso?", [van, cat])
    rex = scorer.score("where is Rex?", [van, cat])
    assert miso[1] > miso[0] and miso[1] > 0
    assert rex[0] > rex[1] and rex[0] > 0


# ---------------------------------------------------------------- the rerank


def test_rerank_keeps_the_lexical_order_unless_the_model_is_sure():
    hits = [_hit("A"), _hit("B"), _hit("C"), _hit("D")]
    assert rerank(hits, [0.0, 1.0, 2.0, 3.0], k=3) == hits[:3]  # small gaps: lexical order
    assert rerank(hits, [0.0, 1.0, 2.0, 30.0], k=3) == [hits[3], *hits[:2]]  # far better: to the top
    assert rerank(hits, [0.0, 1.0, 2.0, 30.0], k=3, margin=40.0) == []  # none explains it enough
    assert rerank([], [], k=3) == []


def test_the_block_the_model_prefers_goes_to_the_top(index):
    question = "who conducts the choir concert?"
    lexical = index.search(question, 10)
    assert len(lexical) >= 2 and "Bach" not in lexical[0].text
    messages = [{"role": "user", "content": question}]
    hits = retrieve_reranked(index, messages, Preferring("Bach"), k=3)
    assert "Bach" in hits[0].text
    assert {(h.page, h.position) for h in hits} <= {(h.page, h.position) for h in lexical}


def test_without_a_model_retrieval_is_todays(index):
    for question in ("when is the choir concert?", "who conducts the choir?", "when did the bees swarm?", "hi"):
        messages = [{"role": "user", "content": question}]
        today = retrieve_for_chat(index, messages, budget_bytes=notes_budget(512, messages))
        assert candidates(index, question, 3, 10)[: len(today)] == today
        none_sure = retrieve_reranked(
            index, messages, Preferring("no such word"), budget_bytes=notes_budget(512, messages)
        )
        assert none_sure == today


def test_no_topic_no_model_call(index):
    scorer = Preferring("Bach")
    assert retrieve_reranked(index, [{"role": "user", "content": "thanks!"}], scorer) == []
    assert scorer.calls == 0


def test_retrieval_quality_measures_with_a_scorer_and_times_it(index):
    from bytechat.eval.questions import Case
    from tools import retrieval_quality

    case = Case("who conducts the choir concert?", ["Bach"], "fact", "Choir")
    plain = retrieval_quality.measure(index, [case])
    assert plain["recall_at_3"] == 1.0 and "latency_ms_p50" not in plain
    reranked = retrieval_quality.measure(index, [case], scorer=Preferring("Bach"))
    assert plain["recall_at_1"] == 0.0 and reranked["recall_at_1"] == 1.0
    assert reranked["latency_ms_p50"] >= 0 and reranked["latency_ms_p99"] >= reranked["latency_ms_p50"]

"""The extractive answer head's training side: where its targets come from (the grounded
dialogues, the streams stage, the batches) and the loss it adds (bytechat/model/span_head.py)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from bytechat.data.batching import get_batch, span_in_window
from bytechat.data.streams import StreamError, open_spans, write_stream
from bytechat.model import GPT
from bytechat.model.span_head import IGNORE
from bytechat.notes import grounded
from bytechat.notes.blocks import all_blocks
from bytechat.notes.index import NotesIndex
from bytechat.notes.synthetic import name as random_name
from bytechat.notes.synthetic import synthetic_pages
from stages.streams import Spans
from tests.helpers import model_config


def dialogues(n: int = 40) -> list[grounded.Dialogue]:
    rng = random.Random(3)
    blocks = all_blocks(synthetic_pages(rng, 20))
    with NotesIndex.build(blocks) as index:

        def retrieve(question, k):
            return [hit.block for hit in index.search(question, k)]

        made = grounded.dialogues(blocks, retrieve, rng, n, unknown_name=random_name)
        made.append(grounded.page_dialogue(blocks[0], retrieve, rng, 3, 512))
    return made


@pytest.mark.parametrize("answers", ["quote", "span"])
def test_a_dialogues_span_is_its_fact_inside_the_answering_block_before_the_reply(monkeypatch, answers):
    monkeypatch.setattr(grounded, "ANSWERS", answers)
    labelled = shorter = 0
    for d in dialogues():
        span = d.answer_span()
        if d.kind == "page" or not d.gold:
            assert span is None, d.kind
            continue
        if span is None:
            continue
        labelled += 1
        doc = d.document().encode()
        reply, first, last = span
        assert doc[first : last + 1].decode() == d.fact
        shorter += len(d.fact) < len(d.blocks[0].text)  # the fact, not the block a quote answers with
        assert doc[: reply + 1].endswith(b"\nassistant: ")  # the reply's first byte comes next
        shown = doc.find(d.blocks[0].render().encode(), 0, reply)
        assert 0 <= shown <= first and last < shown + len(d.blocks[0].render().encode())
    assert labelled >= 10 and shorter >= labelled // 2


def test_the_streams_stage_writes_spans_at_their_place_in_the_stream(tmp_path, monkeypatch):
    monkeypatch.setattr(grounded, "ANSWERS", "quote")  # the shipped answers (params.yaml grounded.answers)
    made = dialogues()
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text("".join(json.dumps({"text": d.document(), "span": d.answer_span()}) + "\n" for d in made))
    docs = Spans(jsonl)
    write_stream(docs, tmp_path / "grounded_train.bin", "test")
    docs.save(tmp_path / "grounded_train.spans.npy")
    stream = (tmp_path / "grounded_train.bin").read_bytes()
    spans = np.load(tmp_path / "grounded_train.spans.npy")
    golds = [d.fact for d in made if d.answer_span() is not None]
    assert spans.shape == (len(golds), 3) and len(golds) >= 10
    assert [stream[f : l + 1].decode() for _, f, l in spans] == golds
    assert all(stream[r - len("assistant:") : r + 1] == b"assistant: " for r, _, _ in spans)
    assert (np.diff(spans[:, 0]) > 0).all()  # sorted by reply, as span_in_window searches


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"not a numpy file", "unreadable answer spans"),
        (np.zeros((2, 2), dtype=np.int64), "int64 rows of 3"),
        (np.array([[5, 6, 7]]), "does not end before its reply"),
        (np.array([[30, 1, 2], [10, 3, 4]]), "not sorted by reply"),
    ],
)
def test_a_broken_spans_file_is_one_line_that_names_it(tmp_path, content, problem):
    path = tmp_path / "grounded_train.spans.npy"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.save(path, content)
    with pytest.raises(StreamError) as err:
        open_spans(path)
    assert str(err.value).startswith(str(path)) and problem in str(err.value) and "\n" not in str(err.value)


def test_span_in_window_takes_the_first_span_wholly_inside():
    spans = np.array([[10, 2, 4], [30, 20, 25], [60, 40, 50]])
    assert span_in_window(spans, 0, 32) == (10, 2, 4)
    assert span_in_window(spans, 5, 32) == (25, 15, 20)  # the first one starts before the window
    assert span_in_window(spans, 21, 45) == (39, 19, 29)  # ... and so does the second's span
    assert span_in_window(spans, 21, 32) == (IGNORE,) * 3  # the third's reply lies past the window
    assert span_in_window(np.zeros((0, 3), dtype=np.int64), 0, 32) == (IGNORE,) * 3


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_batch_span_targets_point_at_the_same_bytes_as_the_stream(seed):
    rng = np.random.default_rng(seed)
    stream = rng.integers(0, 256, 2000).astype(np.uint8)
    replies = np.sort(rng.choice(np.arange(20, 2000), 40, replace=False))
    firsts = replies - rng.integers(3, 20, 40)
    spans = np.stack([replies, firsts, firsts + rng.integers(0, 3, 40)], axis=1)
    other = rng.integers(0, 256, 500).astype(np.uint8)
    x, _, got = get_batch(
        {"grounded": stream, "wiki": other},
        {"grounded": 0.7, "wiki": 0.3},
        8,
        64,
        "cpu",
        torch.Generator().manual_seed(seed),
        spans={"grounded": spans},
    )
    assert got.shape == (8, 3)
    for row, (reply, first, last) in enumerate(got.tolist()):
        if reply == IGNORE:
            continue
        pointed = bytes(x[row, first : last + 1].tolist())
        assert 0 <= first <= last < reply < 64
        assert any(bytes(stream[s[1] : s[2] + 1]) == pointed for s in spans)


def test_the_head_adds_its_weighted_pointer_loss_over_labelled_rows_only():
    torch.manual_seed(0)
    model = GPT(model_config(span_dim=8, span_weight=0.25)).eval()
    x, y = torch.randint(0, 256, (3, 32)), torch.randint(0, 256, (3, 32))
    spans = torch.tensor([[20, 3, 5], [IGNORE] * 3, [10, 9, 9]])
    _, plain = model(x, y)
    _, both = model(x, y, spans=spans)
    h, _ = model._states(x, None)
    begin, end = model.span(h, torch.tensor([20, 0, 10]))
    want = (
        F.cross_entropy(begin[[0, 2]], torch.tensor([3, 9]), reduction="sum")
        + F.cross_entropy(end[[0, 2]], torch.tensor([5, 9]), reduction="sum")
    ) / 2
    assert both.item() == pytest.approx(plain.item() + 0.25 * want.item(), rel=1e-5)
    _, none = model(x, y, spans=torch.full((3, 3), IGNORE))
    assert none.item() == pytest.approx(plain.item())
    none.backward()  # no labelled row: still a graph through the head (DDP needs every parameter used)
    assert model.span.query.weight.grad is not None


def test_span_scores_are_a_distribution_over_the_positions_before_the_reply():
    model = GPT(model_config(span_dim=8, span_weight=0.03)).eval()
    begin, end = model.span_scores(torch.randint(0, 256, (1, 20)))
    for scores in (begin, end):
        assert scores.shape == (20,) and scores[-1] == float("-inf")
        assert scores[:-1].exp().sum().item() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="no span head"):
        GPT(model_config()).span_scores(torch.zeros((1, 4), dtype=torch.long))

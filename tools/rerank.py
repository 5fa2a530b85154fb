"""Query likelihood: the trained byte model reranks retrieval's candidates.

A block answers a question when it explains it: the model, having read the block in
the prompt as chat renders notes, finds the question's bytes more likely than with no
notes at all. QueryLikelihood.score gives, per block, that pointwise mutual information

    log P(question | system turn with the block) - log P(question | "Notes: none found.")

in nats, so a long or common question does not win by its length or its words. All the
candidates and the no-notes baseline go through GPT.forward in right-padded batches of
rows of about the same length (causal, so the padding after a row changes nothing
before it).

rerank(hits, scores, k) keeps the lexical order (it holds exact names and the evidence
rule) and lets the model overrule it only where it is sure: the candidate the model
scores highest goes first when it beats the lexical first by more than PROMOTE nats.
retrieve_reranked is retrieve_for_chat with that step: the lexical search is asked for
CANDIDATES blocks (its first k in today's order, then the rest), the model scores them,
and the k best that fit the notes budget are shown. Without a model, chat calls
retrieve_for_chat and nothing here runs.

CANDIDATES, PROMOTE and MARGIN (off) were chosen on the dev sets only (natural_dev and
the held-out phrasings, with the smoke model; `python -m tools.retrieval_quality --ckpt`);
what they measured, and why chat does not use this, is in docs/notes.md ("Query
likelihood with the trained model").
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from bytechat.notes.blocks import NoteBlock, notes_system_content, render_notes
from bytechat.notes.index import Hit, NotesIndex
from bytechat.notes.retrieval import DEFAULT_K, conversation_topic, fitting, wants_notes
from bytechat.text.chat_format import escape_content, render_transcript

CANDIDATES = 10  # lexical candidates the model scores
PROMOTE = 5.0  # nats of PMI by which a candidate must beat the lexical first to go first
MARGIN = None  # nats of PMI the best candidate needs, else no hits (None: never abstain)
# Rows per forward, sorted by length so that little is padding (4 was the fastest
# measured, docs/notes.md).
GROUP_ROWS = 4


class QueryLikelihood:
    """Scores blocks by how much they raise the model's likelihood of a question."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model.eval()
        self.block_size = int(model.config.block_size)
        self.device = next(model.parameters()).device

    def _row(self, notes: str, history: Sequence[Mapping[str, str]], question: bytes) -> tuple[list[int], int]:
        """A prompt's bytes (system turn, earlier turns, "user: " and the question) cut to
        block_size, and where the question starts. The oldest turns go first, then the
        end of the notes."""
        turns = list(history)
        if turns and turns[0]["role"] == "system":  # a person's own system prompt, then the notes
            notes = notes_system_content(notes, turns.pop(0)["content"])
        while True:
            head = render_transcript([{"role": "system", "content": notes}, *turns]).encode("utf-8") + b"\nuser: "
            if len(head) + len(question) <= self.block_size or not turns:
                break
            turns = turns[1:]
        room = max(0, self.block_size - len(question))
        if len(head) > room:  # a long block: keep its start and the "\nuser: " tag
            tail = b"\nuser: "
            head = head[: max(0, room - len(tail))] + tail
        question = question[: self.block_size - len(head)]
        return list(head + question), len(head)

    @torch.inference_mode()
    def log_likelihoods(self, question: str, contexts: Sequence[str], history=()) -> list[float]:
        """log P(question's bytes | system turn holding each of contexts), in nats."""
        asked = escape_content(question).encode("utf-8")
        rows = [self._row(notes, history, asked) for notes in contexts]
        order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
        out = [0.0] * len(rows)
        for g in range(0, len(order), GROUP_ROWS):
            group = order[g : g + GROUP_ROWS]
            for i, value in zip(group, self._forward([rows[i] for i in group])):
                out[i] = value
        return out

    def _forward(self, rows: list[tuple[list[int], int]]) -> list[float]:
        """One right-padded forward: per row, the sum of its question bytes' log-probabilities."""
        width = max(len(row) for row, _ in rows)
        idx = torch.zeros((len(rows), width), dtype=torch.long)
        asked = torch.zeros((len(rows), width - 1))  # 1 where position t predicts a question byte
        for b, (row, start) in enumerate(rows):
            idx[b, : len(row)] = torch.tensor(row, dtype=torch.long)
            asked[b, start - 1 : len(row) - 1] = 1.0
        idx, asked = idx.to(self.device), asked.to(self.device)
        log_probs, _ = self.model(idx)
        picked = log_probs[:, :-1].float().gather(-1, idx[:, 1:, None]).squeeze(-1)
        return (picked * asked).sum(dim=1).tolist()

    def score(self, question: str, blocks: Sequence[NoteBlock], history=()) -> list[float]:
        """Per block, log P(question | the block as chat's notes) less log P(question | no
        notes), in nats: above 0 when the block makes the question more likely."""
        if not blocks:
            return []
        notes = [render_notes([b]) for b in blocks]
        *given, alone = self.log_likelihoods(question, [*notes, render_notes([])], history)
        return [g - alone for g in given]


def rerank(hits: Sequence[Hit], scores: Sequence[float], k: int, promote: float = PROMOTE, margin=MARGIN) -> list[Hit]:
    """The k best of hits (lexical order, best first): the lexical order, except that the
    candidate the model scores highest goes first when it beats the lexical first by more
    than promote nats; [] when margin is set and no score reaches it."""
    if not hits or (margin is not None and max(scores) < margin):
        return []
    best = max(range(len(hits)), key=lambda i: (scores[i], -i))
    order = list(range(len(hits)))
    if scores[best] - scores[0] > promote:
        order = [best, *(i for i in order if i != best)]
    return [hits[i] for i in order[:k]]


def candidates(index: NotesIndex, question: str, k: int, n: int, topic: Sequence[str] = ()) -> list[Hit]:
    """The lexical search's first k blocks, as chat gets them today, then the rest of its
    first n."""
    first = index.search(question, k, topic=topic)
    seen = {(h.page, h.position) for h in first}
    more = [h for h in index.search(question, n, topic=topic) if (h.page, h.position) not in seen] if n > k else []
    return [*first, *more]


def retrieve_reranked(
    index: NotesIndex,
    messages: Sequence[Mapping[str, str]],
    scorer: QueryLikelihood,
    k: int = DEFAULT_K,
    budget_bytes: int | None = None,
    n: int = CANDIDATES,
    promote: float = PROMOTE,
    margin: float | None = MARGIN,
) -> list[Hit]:
    """retrieve_for_chat (bytechat.notes.retrieval) with the model reranking the lexical
    search's first n blocks (see the module docstring)."""
    if not wants_notes(messages):
        return []
    last = max(i for i, m in enumerate(messages) if m["role"] == "user")
    question = messages[last]["content"]
    hits = candidates(index, question, k, n, conversation_topic(messages))
    scores = scorer.score(question, [h.block for h in hits], history=messages[:last])
    hits = rerank(hits, scores, k, promote, margin)
    return [hits[i] for i in fitting([h.block for h in hits], k, budget_bytes)]

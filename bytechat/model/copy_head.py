"""A copy head: the next byte may also be read off the context, pointer-network style.

A tiny byte model trained for minutes does not grow induction heads (find where the
current bytes occurred earlier, read what came next) on its own, so it could not quote
notes it had never seen (docs/notes.md). This head wires that circuit in. From the
final hidden state it forms a query for position t and a key for every earlier position
j; attention over j < t picks places whose context looks like the current one, and each
picked place votes for the byte that followed it, x[j+1]:

    p_copy(b | t) = sum over j < t with x[j+1] = b of  a[t, j]
    p(b | t)      = (1 - g_t (1 - a_null)) p_model(b | t) + g_t p_copy(b | t)

g_t is a learned gate (how much to trust the context now) and a_null the attention on a
learned "nowhere" slot, so a position with nothing worth copying (and position 0, which
has no earlier position) leaves p_model as it is. The result is a proper distribution;
GPT.forward returns its log, which works everywhere logits do (cross-entropy, softmax,
temperature). It is still the model's own generation: one learned distribution per byte.
The same idea as the pointer-generator of See et al. (2017), at the byte level.

Going on (`copy_continue`). A quote goes wrong where its last few bytes also occur
elsewhere ("Success looks like" -> "Success like": the pointer jumped to another
"Success "). So the pointer prefers to go on where it was: with c_t the attention from
the content scores alone, position t adds w * c_{t-1}[j - 1] to key j's score, w
learned, i.e. the place right after the one the previous byte was read from. c depends
on the content only, so every position's bias is known in one parallel pass; decoding
keeps the last c in the cache (KVCache.copy_prev).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from bytechat.model.blocks import write_cache
from bytechat.model.cache import Span

_TINY = 1e-30  # floor before log: bytes that occur nowhere in the context get log(tiny), not -inf
GO_ON_INIT = 4.0


class CopyHead(nn.Module):
    def __init__(self, n_embd: int, dim: int, vocab_size: int, go_on: bool = False) -> None:
        super().__init__()
        self.dim, self.vocab_size = dim, vocab_size
        self.query = nn.Linear(n_embd, dim, bias=False)
        self.key = nn.Linear(n_embd, dim, bias=False)
        self.gate = nn.Linear(n_embd, 1, bias=True)
        self.null_score = nn.Parameter(torch.zeros(()))
        # w of the going-on bias (see above); starts where a sure pointer outweighs a
        # content tie, and is learned.
        self.go_on = nn.Parameter(torch.tensor(GO_ON_INIT)) if go_on else None
        nn.init.zeros_(self.gate.bias)

    def forward(
        self,
        h: torch.Tensor,
        logits: torch.Tensor,
        idx: torch.Tensor,
        span: Span,
        keys: torch.Tensor | None = None,
        ids: torch.Tensor | None = None,
        prev: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Log-probabilities (B, T, vocab) for h (B, T, C) at span's positions.

        Without a cache, idx (B, T) are the inputs. With one, keys (B, block, dim) and
        ids (B, block) hold earlier positions' keys and input bytes; this call's are
        written in first (GPT.forward passes KVCache.copy_keys / copy_ids), and prev
        (B, block) holds each row's content attention of its previous position (copy_prev).
        """
        B, T, _ = h.shape
        k = self.key(h)
        cached = keys is not None
        if cached:
            k = write_cache(keys, k.to(keys.dtype), span, 1)
            idx = write_cache(ids, idx, span, 1)
        q = self.query(h).float()
        scores = q @ k.float().transpose(1, 2) / math.sqrt(self.dim)  # (B, T, end)
        # Query t (absolute position pos[b, t]) may use key j only when x[j+1] is known: j < t.
        # With rows at different lengths this also hides the keys past a row's own length.
        j_abs = torch.arange(span.end, device=h.device)
        scores = scores.masked_fill(j_abs >= span.pos.unsqueeze(-1), float("-inf"))
        null = self.null_score.float().expand(B, T, 1)
        attn = torch.cat((scores, null), dim=-1).softmax(dim=-1)
        if self.go_on is not None:
            attn = self._going_on(scores, null, attn[..., :-1], prev, span)
        if cached:
            # Decoding: each key's weight goes to the byte after it (the last key has no
            # successor yet and never has weight: every query is before it or at it).
            p_copy = attn.new_zeros(B, T, self.vocab_size)
            p_copy.scatter_add_(-1, idx[:, 1:].unsqueeze(1).expand(B, T, -1), attn[..., : span.end - 1])
        else:
            # Training: the same sum as a matmul with one-hot rows (autograd-friendly, fast in bulk).
            following = F.one_hot(idx[:, 1:], self.vocab_size).float()
            following = F.pad(following, (0, 0, 0, 1))  # (B, end, vocab)
            p_copy = attn[..., :-1] @ following  # (B, T, vocab), sums to 1 - a_null
        gate = torch.sigmoid(self.gate(h).float())  # (B, T, 1)
        keep_model = (1 - gate * (1 - attn[..., -1:])).clamp_min(_TINY)
        log_model = F.log_softmax(logits.float(), dim=-1)
        return torch.logaddexp(log_model + keep_model.log(), (gate * p_copy).clamp_min(_TINY).log())

    def _going_on(self, scores, null, content, prev, span: Span) -> torch.Tensor:
        """The attention with the going-on bias: key j of position t gains
        go_on * content[t - 1, j - 1] (content: the content-only attention, (B, T, end))."""
        B, T, end = content.shape
        before = content.new_zeros(B, 1, end)  # each row's previous position's, if it has one
        if prev is not None:
            if span.start is None:  # rows at position 0 have no previous position
                before[:, 0] = prev[:, :end].float() * (span.pos[:, :1] > 0)
            elif span.start > 0:
                before[:, 0] = prev[:, :end].float()
            prev.zero_()
            prev[:, :end] = content[:, -1].to(prev.dtype)  # for the next call
        last = torch.cat((before, content[:, :-1]), dim=1)  # row t: position t - 1's attention
        shifted = F.pad(last[..., :-1], (1, 0))  # its mass on j - 1 moved to j
        return torch.cat((scores + self.go_on.float() * shifted, null), dim=-1).softmax(dim=-1)

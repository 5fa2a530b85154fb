"""Levers for copying from the notes, one at a time (docs/notes.md, "Teaching a small model
to answer from its notes").

Trains a model of the smoke shape on a mix of WikiText (the shared dev copy) and grounded
dialogues about SYNTHETIC pages (random names, numbers and dates: nothing to memorise),
then asks greedy questions about freshly drawn synthetic pages it never saw and counts
the replies that contain the gold fact (copied from the prompt), abstentions, and
replies that end on their own. One JSON line per run, then a few sample answers:

    .venv/bin/python tools/copy_levers.py --conv 4 --copy 64 --steps 600

Retrieval here is a small word-overlap ranker over the synthetic blocks (the experiment
predates the FTS5 index); the pipeline's own runs use bytechat.notes.index.

The answers taught (issue 29, docs/notes.md "Answers, not echoes"): --answer quote is
`From [Page] block` (the answer before issue 29), --answer frame the span in a sentence
(bytechat.notes.dialogues), --frames picks the frames' order: the page named first
("name"), the span first ("value") or both ("mixed"). Scored on the fresh pages: the
reply holds the gold span (the fact), its token F1 against the span, the page named,
abstentions, replies that end on their own, bytes per reply, and echoes (a reply that
starts "From [").

--extract W adds an extractive answer head (issue 29's "pointer/copy head is exactly the
architecture extractive QA systems use"): from the hidden state at the reply's start, a
start and an end pointer over the prompt's positions, trained (loss weight W, beside the
language model's) on where the gold span sits in the answering block shown. Scored on the
fresh pages as a reply of its own: the best span (start <= end, one line, at most 96
bytes; --words 1: at word edges) in the notes shown, against the gold, beside the
generated reply; with --natural dev, also on data/unseen-notes' answerable questions as
the eval asks them, beside the search box. --roam-dialogues N adds dialogues about the
example graph to training (docs/notes.md, "Measured: an extractive answer head"):

    .venv/bin/python tools/copy_levers.py --conv 4 --copy 64 --cont 1 --answer quote \
        --extract 0.03 --words 1 --roam-dialogues 4000 --natural dev
"""

import argparse, math, os, random, re, sys, time, json, pathlib
import numpy as np, torch, pyarrow.parquet as pq

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from bytechat.core.config import ModelConfig
from bytechat.model import GPT
from bytechat.model.span_head import SpanHead
from bytechat.notes.blocks import all_blocks
from bytechat.notes import synthetic as sn
from bytechat.notes import grounded
from bytechat.notes.dialogues import asking, conversation, frames
from bytechat.eval.scoring import answer_f1, abstained
from bytechat.serve.generate import ChatEngine, SamplingConfig

ap = argparse.ArgumentParser()
ap.add_argument("--conv", type=int, default=0)
ap.add_argument("--cont", type=int, default=0)
ap.add_argument("--steps", type=int, default=600)
ap.add_argument("--B", type=int, default=8)
ap.add_argument("--T", type=int, default=512)
ap.add_argument("--pg", type=float, default=0.5)
ap.add_argument("--lr", type=float, default=5e-3)
ap.add_argument("--align", type=int, default=1)
ap.add_argument("--mask", type=int, default=0)
ap.add_argument("--layers", type=int, default=4)
ap.add_argument("--emb", type=int, default=128)
ap.add_argument(
    "--wiki",
    default=str(
        pathlib.Path(__file__).resolve().parents[2] / "shared/data/wikitext-2-dev/train-00000-of-00001.parquet"
    ),
)
ap.add_argument("--copy", type=int, default=0)
ap.add_argument("--answer", choices=("frame", "quote"), default="frame")
ap.add_argument("--frames", choices=("mixed", "name", "value", "value1"), default="mixed")
ap.add_argument("--dialogues", type=int, default=12000)
ap.add_argument("--questions", type=int, default=80)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--conversations", type=float, default=0.0, help="multi-turn dialogues per single one (train and eval)")
ap.add_argument("--small-talk", type=float, default=0.0, help="small-talk dialogues per single one (train)")
ap.add_argument("--span-weight", type=float, default=1.0, help="loss weight on the reply's bytes copied from the notes")
ap.add_argument("--extract", type=float, default=0.0, help="loss weight of an extractive start/end head (0: none)")
ap.add_argument(
    "--detach", type=int, default=0, help="train the extractive head on the trunk's states without moving them"
)
ap.add_argument("--roam-dialogues", type=int, default=0, help="grounded dialogues about examples/roam besides")
ap.add_argument("--words", type=int, default=0, help="the head's span starts and ends at word edges")
ap.add_argument(
    "--natural", default="", help="also score the head on data/unseen-notes questions of this split (dev|test)"
)
a = ap.parse_args()
os.nice(10)  # a shared machine
torch.manual_seed(0)
torch.set_num_threads(a.threads)
frames.STYLE = a.frames


def simple_retriever(blocks):
    inv = {}
    for i, b in enumerate(blocks):
        for w in set(re.findall(r"\w+", (b.page + " " + b.text).lower())):
            inv.setdefault(w, []).append(i)

    def retrieve(q, k):
        sc = {}
        for w in set(re.findall(r"\w+", q.lower())):
            if len(w) < 3 or w in ("what", "the", "did", "write", "about", "notes", "my", "for"):
                continue
            for i in inv.get(w, [])[:2000]:
                sc[i] = sc.get(i, 0) + 1 / math.log(2 + len(inv[w]))
        return [blocks[i] for i, _ in sorted(sc.items(), key=lambda x: -x[1])[:k]]

    return retrieve


rng = random.Random(1)
pages = sn.synthetic_pages(rng, 3000)
blocks = all_blocks(pages)
dl = grounded.dialogues(blocks, simple_retriever(blocks), rng, a.dialogues, unknown_name=sn.name)
if a.roam_dialogues:  # and about the example graph, as the pipeline trains on a person's own notes
    from bytechat.notes.roam import load_pages as roam_pages

    rblocks = all_blocks(roam_pages(pathlib.Path(__file__).resolve().parent.parent / "examples" / "roam"))
    dl += grounded.dialogues(rblocks, simple_retriever(rblocks), rng, a.roam_dialogues, unknown_name=sn.name)
    rng.shuffle(dl)


def quoted(d):
    """The same dialogue answered the way training did before issue 29."""
    if d.kind == "uncovered":
        return d
    m = [*d.messages[:-1], {"role": "assistant", "content": grounded.answer(d.blocks[0])}]
    return grounded.Dialogue(m, d.gold, d.kind, d.page, d.spans, d.blocks)


if a.conversations or a.small_talk:
    talks = conversation.Conversations(blocks, simple_retriever(blocks), unknown_name=sn.name)
    dl += conversation.make(talks, rng, round(a.dialogues * a.conversations))
    dl += conversation.make(talks, rng, round(a.dialogues * a.small_talk), "smalltalk")
    rng.shuffle(dl)
if a.answer == "quote":
    dl = [quoted(d) if d.blocks else d for d in dl]
docs = [d.document() for d in dl]
gstream = "\n\n".join(docs).encode()
starts = []
pos = 0
for d in docs:
    starts.append(pos)
    pos += len(d.encode()) + 2
starts = np.array(starts)
M = np.zeros(len(gstream), np.bool_)
SW = np.ones(len(gstream), np.float32)  # per byte: its loss weight as a target (--span-weight)
for st, d, dd in zip(starts, docs, dl):
    b = d.encode()
    i = b.rfind(b"\nassistant: ") + len(b"\nassistant: ")
    M[st + i : min(len(M), st + len(b) + 3)] = True
    for piece in dd.spans:  # the pieces the reply copies, where the reply says them
        at = b.find(piece.encode(), i)
        if at >= 0:
            SW[st + at : st + at + len(piece.encode())] = a.span_weight


def span_label(doc: bytes, d) -> tuple[int, int, int] | None:
    """(the position whose next byte is the reply's first, the gold span's first and last
    byte) in doc, the span found inside the answering block as the notes show it."""
    at = doc.rfind(b"\nassistant: ")
    if not d.blocks or not d.gold or at < 0:
        return None
    shown = doc.find(d.blocks[0].render().encode(), 0, at)
    if shown < 0:
        return None
    start = doc.find(d.gold.encode(), shown, shown + len(d.blocks[0].render().encode()))
    if start < 0:
        return None
    return at + len(b"\nassistant: ") - 1, start, start + len(d.gold.encode()) - 1


labels = {int(st): span_label(d.encode(), dd) for st, d, dd in zip(starts, docs, dl)} if a.extract else {}
print("grounded bytes", len(gstream), "mean doc", len(gstream) / len(docs), file=sys.stderr)
wiki = "".join(pq.read_table(a.wiki).column("text").to_pylist()).encode()
W = np.frombuffer(wiki, np.uint8)
G = np.frombuffer(gstream, np.uint8)

erng = random.Random(2)
epages = sn.synthetic_pages(erng, 300)
eblocks = all_blocks(epages)
edl = grounded.dialogues(eblocks, simple_retriever(eblocks), erng, a.questions, unknown_name=sn.name)
if a.conversations:
    etalks = conversation.Conversations(eblocks, simple_retriever(eblocks), unknown_name=sn.name)
    edl += [
        d for d in conversation.make(etalks, erng, round(a.questions * a.conversations)) if d.kind == "conv_followup"
    ]


cfg = ModelConfig(
    n_layer=a.layers,
    n_head=4,
    n_embd=a.emb,
    block_size=a.T,
    rope_theta=10000.0,
    mlp_ratio=4,
    dropout=0.0,
    conv_kernel=a.conv,
    copy_dim=a.copy,
    copy_continue=bool(a.cont),
    span_dim=0,  # the head below is kept apart, so that --detach can train it on detached states
    span_weight=0.0,
    qk_norm=False,
    activation="gelu",
)
model = GPT(cfg)
head = SpanHead(a.emb, 64)
hidden = {}
model.ln_f.register_forward_hook(lambda mod, inp, out: hidden.__setitem__("h", out))
params = [*model.parameters(), *(head.parameters() if a.extract else ())]
decay = [p for p in params if p.dim() >= 2]
nodecay = [p for p in params if p.dim() < 2]
opt = torch.optim.AdamW(
    [{"params": decay, "weight_decay": 0.1}, {"params": nodecay, "weight_decay": 0}], lr=a.lr, betas=(0.9, 0.95)
)
g = torch.Generator().manual_seed(0)


def batch():
    xs, ms, ws, ls = [], [], [], []
    for _ in range(a.B):
        if torch.rand(1, generator=g).item() < a.pg:
            if a.align:
                first = int(starts[torch.randint(len(starts), (1,), generator=g)])
                s = min(first, len(G) - a.T - 2)
                label = labels.get(first)
                if label and s == first and label[0] < a.T:  # the doc's positions are the window's
                    ls.append((len(xs), *label))
            else:
                s = int(torch.randint(len(G) - a.T - 2, (1,), generator=g))
            xs.append(G[s : s + a.T + 1])
            ms.append(M[s : s + a.T + 1] if a.mask else np.ones(a.T + 1, np.bool_))
            ws.append(SW[s : s + a.T + 1])
        else:
            s = int(torch.randint(len(W) - a.T - 2, (1,), generator=g))
            xs.append(W[s : s + a.T + 1])
            ms.append(np.ones(a.T + 1, np.bool_))
            ws.append(np.ones(a.T + 1, np.float32))
    d = torch.from_numpy(np.stack(xs).astype(np.int64))
    m = torch.from_numpy(np.stack(ms))
    y = d[:, 1:].clone()
    y[~m[:, 1:]] = -1
    return d[:, :-1], y, torch.from_numpy(np.stack(ws))[:, 1:], ls


t0 = time.time()
for step in range(a.steps):
    lr = a.lr * min(1, (step + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / a.steps)))
    for gr in opt.param_groups:
        gr["lr"] = lr
    x, y, w, ls = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        if a.span_weight == 1.0:
            _, loss = model(x, targets=y)
        else:  # the mean cross-entropy with the copied bytes weighted
            logp, _ = model(x)
            nll = -logp.float().gather(-1, y.clamp_min(0).unsqueeze(-1)).squeeze(-1)
            w = w * (y >= 0)
            loss = (nll * w).sum() / w.sum()
        if a.extract and ls:
            rows, at, first, last = (torch.tensor(c) for c in zip(*ls))
            states = hidden["h"][rows]
            begin, end = head(states.detach() if a.detach else states, at)
            pointer = torch.nn.functional.cross_entropy(begin, first) + torch.nn.functional.cross_entropy(end, last)
            loss = loss + a.extract * pointer
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    if step % 100 == 0:
        print(step, round(loss.item(), 3), round(time.time() - t0), file=sys.stderr)
train_s = time.time() - t0
model.eval()
eng = ChatEngine(model)
samp = SamplingConfig(temperature=0, max_new_tokens=260)
res = {"cov": 0, "cov_n": 0, "f1": 0.0, "abst": 0, "abst_n": 0, "stop": 0, "page": 0, "echo": 0, "bytes": 0}
by_kind = {}
ex = []
torch.set_num_threads(1)
for d in edl:
    done = eng.reply(d.messages[:-1], samp, seed=0)
    r = done.reply
    res["stop"] += done.finish_reason == "stop"
    res["bytes"] += len(r.encode())
    res["echo"] += r.startswith("From [")
    if d.kind in ("uncovered", "conv_uncovered"):
        res["abst_n"] += 1
        res["abst"] += abstained(r)
    else:
        res["cov_n"] += 1
        hit = d.gold in r
        res["cov"] += hit
        res["f1"] += answer_f1(r, [d.gold])
        res["page"] += asking.title(d.page) in r
        k = by_kind.setdefault(d.kind, [0, 0])
        k[0] += hit
        k[1] += 1
    if len(ex) < 8 or (d.kind.startswith("conv") and len(ex) < 12):
        ex.append((d.messages[-2]["content"], d.gold, r[:200]))


def best_span(window: bytes, notes_end: int, lo: int = 0, sure: list | None = None) -> str:
    """The head's best span (start <= end, one line, at most 96 bytes) in window[lo:notes_end];
    its probability (start's times end's, over every position) is appended to sure."""
    model(torch.tensor([list(window)]))
    begin, end = head(hidden["h"], torch.tensor([len(window) - 1]))
    begin, end = begin[0].log_softmax(-1).tolist(), end[0].log_softmax(-1).tolist()
    best, span = float("-inf"), b""

    def inside_word(at: int) -> bool:  # a letter, digit or UTF-8 byte on both sides of at
        return 0 < at < len(window) and all(chr(c).isalnum() or c >= 0x80 for c in window[at - 1 : at + 1])

    for i in range(max(0, lo), max(0, notes_end)):
        if begin[i] == float("-inf") or window[i : i + 1] == b"\n" or (a.words and inside_word(i)):
            continue
        for j in range(i, min(i + 96, notes_end)):
            if window[j : j + 1] == b"\n":
                break
            if a.words and inside_word(j + 1):
                continue  # a span starts and ends at a word's edge
            if begin[i] + end[j] > best:
                best, span = begin[i] + end[j], window[i : j + 1]
    if sure is not None:
        sure.append(math.exp(best) if span else 0.0)
    return span.decode("utf-8", errors="ignore")


if a.extract:  # the head's best span in the notes shown, as a reply of its own
    ext = {"cov": 0, "f1": 0.0, "exact": 0, "bytes": 0, "n": 0, "box_f1": 0.0}
    with torch.no_grad():
        for d in edl:
            if d.kind in ("uncovered", "conv_uncovered"):
                continue
            doc = d.document().encode()
            cut = doc.rfind(b"\nassistant: ") + len(b"\nassistant: ")
            window = doc[:cut][-a.T :]
            said = best_span(window, window.rfind(b"\nuser: "))
            span = said.encode()
            ext["n"] += 1
            ext["cov"] += d.gold in said
            ext["exact"] += said.strip() == d.gold.strip()
            ext["f1"] += answer_f1(said, [d.gold])
            ext["bytes"] += len(span)
            ext["box_f1"] += answer_f1(grounded.answer(d.blocks[0]), [d.gold]) if d.blocks else 0.0
            if ext["n"] <= 8:
                print(
                    "  extract Q:", d.messages[-2]["content"], "| gold:", d.gold, "| span:", repr(said), file=sys.stderr
                )
    res["extract"] = {
        "cov": ext["cov"],
        "exact": ext["exact"],
        "of": ext["n"],
        "f1": round(ext["f1"] / max(1, ext["n"]), 3),
        "bytes": round(ext["bytes"] / max(1, ext["n"])),
        "box_f1": round(ext["box_f1"] / max(1, ext["n"]), 3),  # the answering block quoted whole
    }
if a.extract and a.natural:  # questions a person wrote, about notes no run trains on, as chat shows them
    from bytechat.eval import grounded as ge
    from bytechat.eval import questions as qs
    from bytechat.notes.index import NotesIndex
    from bytechat.notes.roam import load_pages
    from bytechat.text.chat_format import format_chat

    folder = pathlib.Path(__file__).resolve().parent.parent / "data" / "unseen-notes"
    upages = load_pages(folder)
    cases = [c for c in qs.load_questions(folder / qs.QUESTIONS_FILE, upages) if c.split == a.natural]
    nat = {"n": 0, "f1": 0.0, "box_f1": 0.0, "cov": 0, "box_cov": 0, "bytes": 0, "f1_best": 0.0, "cov_best": 0}
    shown, rows = [], []  # rows: (head's sureness, its F1, holds gold, bytes) for the span, in the best block, box
    with NotesIndex.build(all_blocks(upages)) as index, torch.no_grad():
        for c in cases:
            if c.kind not in qs.ANSWERING:
                continue
            messages, hits = ge.prompt_for(eng, index, c)
            box = ge.search_box(hits)[0]
            prompt = format_chat(messages).encode()[-a.T :]
            notes_end = prompt.find(b"\nuser: ")
            sure: list[float] = []
            said = best_span(prompt, notes_end, sure=sure) if hits else grounded.ABSTAIN
            # in retrieval's best block alone (placed last), as BEST_FIRST has the quote start there
            inside = best_span(prompt, notes_end, prompt.rfind(b"\n[", 0, notes_end) + 1, sure) if hits else said
            rows.append(
                [
                    (p, answer_f1(x, c.answers), any(g in x for g in c.answers), len(x.encode()))
                    for p, x in zip(sure or [0.0, 0.0], (said, inside))
                ]
                + [(0.0, answer_f1(box, c.answers), any(g in box for g in c.answers), len(box.encode()))]
            )
            nat["f1_best"] += answer_f1(inside, c.answers)
            nat["cov_best"] += any(g in inside for g in c.answers)
            nat["n"] += 1
            nat["f1"] += answer_f1(said, c.answers)
            nat["box_f1"] += answer_f1(box, c.answers)
            nat["cov"] += any(g in said for g in c.answers)
            nat["box_cov"] += any(g in box for g in c.answers)
            nat["bytes"] += len(said.encode())
            if len(shown) < 12:
                shown.append((c.question, c.answers[0], said, box[:80]))
    res["natural"] = {k: round(v / max(1, nat["n"]), 3) if k != "n" else v for k, v in nat.items()}
    # the head's span where it is at least this sure, else the box: F1 / gold held / bytes
    for name, which in (("hybrid", 0), ("hybrid_best", 1)):
        res[name] = {
            f"{t:.2f}": [
                round(sum(r[which if r[which][0] >= t else 2][k] for r in rows) / max(1, len(rows)), 3)
                for k in (1, 2, 3)
            ]
            for t in (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.01)
        }
    for q, gold, said, box in shown:
        print("  natural Q:", q, "| gold:", gold, "| span:", repr(said), "| box:", repr(box), file=sys.stderr)
res["f1"] = round(res["f1"] / max(1, res["cov_n"]), 3)
res["bytes"] = round(res["bytes"] / max(1, len(edl)))
print(
    json.dumps({"args": vars(a), "train_s": round(train_s), "loss": round(loss.item(), 3), **res, "by_kind": by_kind})
)
for e in ex:
    print("  Q:", e[0], "| gold:", e[1], "\n  A:", repr(e[2]))

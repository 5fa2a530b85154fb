"""The batched decode loop (bytechat.serve.batch_engine): every reply is byte for byte what it
gets decoding alone (fp32), whoever shares its batch, whenever it joins or leaves."""

from __future__ import annotations

import threading

import pytest
import torch

from bytechat.serve.batch_engine import BatchDecoder, BatchEngine, prompt_bytes
from bytechat.text.chat_format import STOP_TAGS
from bytechat.serve.generate import ChatEngine, ReplyDone, ReplyEvent, SamplingConfig, generate_bytes, prefill, refill
from bytechat.model import GPT
from bytechat.model.compiled import DecodeStep
from bytechat.core.rng import make_generator
from tests.helpers import model_config, train_chat_model


def levers_model(block_size: int = 48, go_on: bool = True, **recipe) -> GPT:
    """A random model with a short convolution and a copy head that goes on where it
    copied (as the shipped profiles), its conv weights and copy gate made non-trivial
    (both start as no-ops)."""
    torch.manual_seed(1)
    model = GPT(
        model_config(
            n_layer=2,
            n_head=2,
            n_embd=32,
            block_size=block_size,
            conv_kernel=4,
            copy_dim=16,
            copy_continue=go_on,
            **recipe,
        )
    )
    with torch.no_grad():
        for block in model.blocks:
            block.conv.weight.normal_(0, 0.3)
        model.copy.gate.bias.fill_(1.0)
        model.copy.null_score.fill_(-1.0)
        for block in model.blocks:
            if block.attn.qk_gain is not None:
                block.attn.qk_gain.uniform_(0.5, 2.0)
    return model.eval()


def copy_model() -> GPT:
    """A copy head without the going-on bias (older exports)."""
    return levers_model(go_on=False)


def plain_model() -> GPT:
    torch.manual_seed(2)
    return GPT(model_config(n_layer=2, n_head=4, n_embd=32, block_size=40)).eval()


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


# (messages, sampling, seed): prompts of very different lengths (one over the prompt
# budget), greedy and sampled, with and without top-k / top-p, long enough to overflow
# the window and re-prefill.
REQUESTS = [
    (user("hi"), SamplingConfig(temperature=0.0, max_new_bytes=70), 0),
    (user("tell me about the bees and the allotment " * 3), SamplingConfig(max_new_bytes=90), 11),
    (user("日本"), SamplingConfig(temperature=1.0, top_k=None, top_p=None, max_new_bytes=60), 5),
    (user("a"), SamplingConfig(temperature=1.5, top_k=7, top_p=0.8, max_new_bytes=120), 123),
    (
        [{"role": "system", "content": "Be brief."}] + user("what now?"),
        SamplingConfig(temperature=0.7, max_new_bytes=40),
        9,
    ),
]


class Collector:
    """The events of one reply, as BatchEngine emits them."""

    def __init__(self) -> None:
        self.events: list = []

    def __call__(self, event) -> None:
        self.events.append(event)

    @property
    def done(self) -> ReplyDone | None:
        return self.events[-1] if self.events and isinstance(self.events[-1], ReplyDone) else None


def alone(engine: ChatEngine, messages, sampling, seed, cancel_after: int | None = None) -> tuple[bytes, str, str]:
    """(bytes, finish reason, reply text) decoding alone at batch 1, as the terminal chat does."""
    produced = bytearray()
    should_stop = None if cancel_after is None else (lambda: len(produced) >= cancel_after)
    gen = generate_bytes(
        engine.model, prompt_bytes(engine, messages), sampling, make_generator(seed), STOP_TAGS, should_stop=should_stop
    )
    while True:
        try:
            produced.append(next(gen))
        except StopIteration as end:
            reason = end.value
            break
    reply = engine.reply(messages, sampling, seed).reply if cancel_after is None else None
    return bytes(produced), reason, reply


def run_batch(engine: ChatEngine, max_batch: int, late: int = 6, cancel: int = 1, cancel_after: int = 13):
    """Submit REQUESTS (all but the last at once, the last after `late` steps), cancel
    request `cancel` once it has `cancel_after` bytes; step until all are done."""
    batch = BatchEngine(engine, max_batch)
    sinks = [Collector() for _ in REQUESTS]
    handles = {}

    def submit(i: int) -> None:
        messages, sampling, seed = REQUESTS[i]
        stop = None
        if i == cancel:
            stop = lambda: len(handles[i].produced) >= cancel_after  # noqa: E731
        handles[i] = batch.submit(messages, sampling, seed, sinks[i], should_stop=stop)

    for i in range(len(REQUESTS) - 1):
        submit(i)
    for _ in range(late):
        batch.step()
    assert len(batch._active) > 1, "the late request joins a batch under way"
    submit(len(REQUESTS) - 1)
    steps = 0
    while batch.step():
        steps += 1
        assert steps < 2000
    return sinks, handles


@pytest.mark.parametrize(
    "make_model",
    [levers_model, copy_model, plain_model, train_chat_model],
    ids=["conv+copy+going-on", "conv+copy", "plain", "chat"],
)
@pytest.mark.parametrize("max_batch", [2, 8])
def test_every_reply_is_byte_identical_to_decoding_alone(make_model, max_batch):
    engine = ChatEngine(make_model(), device="cpu")
    sinks, handles = run_batch(engine, max_batch)
    reasons = set()
    for i, (messages, sampling, seed) in enumerate(REQUESTS):
        expected, reason, reply = alone(engine, messages, sampling, seed, cancel_after=13 if i == 1 else None)
        done = sinks[i].done
        assert done is not None, f"request {i} got no ReplyDone"
        assert bytes(handles[i].produced) == expected, f"request {i}: batched bytes differ from decoding alone"
        assert (done.finish_reason, done.n_bytes) == (reason, len(expected))
        pieces = "".join(e.text for e in sinks[i].events if isinstance(e, ReplyEvent))
        assert pieces == done.reply
        if reply is not None:
            assert done.reply == reply, f"request {i}: the reply text differs from ChatEngine's"
        reasons.add(reason)
    assert "cancelled" in reasons
    if make_model is train_chat_model:
        assert "stop" in reasons, "the chat model ends its turn with a role tag"
    else:
        assert "length" in reasons


# Batched rows against the same row decoded alone, both in fp32: the most their next-byte
# log-probabilities may differ (rows padded to the longest and masked sum in another order;
# measured up to ~2e-6 on these models).
TOLERANCE = 1e-4


@pytest.mark.parametrize("recipe", [{}, {"qk_norm": True, "activation": "relu2"}], ids=["gelu", "qk-norm+relu2"])
def test_the_step_gives_the_log_probs_of_decoding_alone(recipe):
    """BatchDecoder.step (GPT.forward on rows at different lengths) against GPT.forward
    on a one-row cache per reply: rows that join, refill and leave (the shipped model's
    levers: short conv, copy head going on; both MLP nonlinearities, with and without
    QK-norm)."""
    model = levers_model(block_size=64, **recipe).use_decode_layout()
    decoder = BatchDecoder(model, max_batch=4)
    with torch.inference_mode():
        worst = check_steps(model, decoder)
    assert worst <= TOLERANCE


@pytest.mark.parametrize(
    "compile", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["static-eager", "compiled"]
)
def test_the_bucketed_static_step_gives_the_log_probs_of_decoding_alone(compile):
    """The batch on the compiled decode step (model/compiled.py): rows padded up to the
    next compiled batch size (3 rows run as 4), static shapes, the same log-probabilities
    as each row decoded alone; the padding rows stay empty."""
    from torch._dynamo.utils import counters

    model = levers_model(block_size=64).use_decode_layout()
    decoder = BatchDecoder(model, max_batch=4, step=DecodeStep(model, compile=compile))
    assert decoder.sizes == (1, 2, 4)
    decoder.warm_up()  # compiles every size on the decoder's own tensors ...
    compiled_frames = counters["frames"]["ok"]
    with torch.inference_mode():
        worst = check_steps(model, decoder)
    assert counters["frames"]["ok"] == compiled_frames, "... so serving compiles nothing more"
    assert worst <= TOLERANCE
    assert decoder.cache.lengths[3:].tolist() == [0]  # the row that padded 3 rows to 4
    assert decoder.step_fn.compiled == compile


def check_steps(model: GPT, decoder: BatchDecoder) -> float:
    """Step the decoder's rows and one-row caches side by side; the largest difference."""
    windows = [b"x", b"hello there, general", bytes(range(32, 32 + 63)), b"ab" * 10]
    alone = []
    for row, window in enumerate(windows):
        cache = model.new_cache()
        first = prefill(model, window, cache, "cpu")
        assert torch.equal(decoder.prefill(row, window), first), "a prefill is the one-row forward itself"
        alone.append([cache, bytearray(window)])
    worst = 0.0
    for byte, leave in ((7, None), (200, None), (31, 1), (33, None), (32, 0), (9, None)):
        if leave is not None:  # the last row moves into the leaver's row, as BatchEngine packs them
            decoder.move(len(alone) - 1, leave)
            alone[leave] = alone[-1]
            alone.pop()
        for row, (cache, window) in enumerate(alone):
            window.append(byte)
            if decoder.full(row):  # the 63-byte window is full after one byte: refill, as generate_bytes does
                assert cache.length == model.config.block_size
                decoder.refill(row, bytearray(window), 32)
                refill(model, window, cache, 32, "cpu")
        batched = decoder.step([byte] * len(alone))
        for row, (cache, _) in enumerate(alone):
            expected, _ = model(torch.tensor([[byte]]), cache=cache)
            worst = max(worst, float((batched[row] - expected[0, -1]).abs().max()))
            assert int(batched[row].argmax()) == int(expected[0, -1].argmax()), (row, byte)
    assert decoder.cache.lengths[: len(alone)].tolist() == [cache.length for cache, _ in alone]
    return worst


def test_a_reply_leaving_frees_its_slot_for_the_next():
    engine = ChatEngine(plain_model(), device="cpu")
    batch = BatchEngine(engine, max_batch_size=1)
    sinks = [Collector(), Collector()]
    batch.submit(user("one"), SamplingConfig(max_new_bytes=5), 1, sinks[0])
    batch.submit(user("two"), SamplingConfig(max_new_bytes=5), 2, sinks[1])
    batch.step()
    assert batch.load() == {"running": 1, "waiting": 1}
    while batch.step():
        pass
    assert [s.done.n_bytes for s in sinks] == [5, 5]
    assert batch.load() == {"running": 0, "waiting": 0}


def test_withdraw_takes_a_waiting_request_out_of_the_line():
    engine = ChatEngine(plain_model(), device="cpu")
    batch = BatchEngine(engine, max_batch_size=1)
    first = batch.submit(user("one"), SamplingConfig(max_new_bytes=3), 1, Collector())
    second = batch.submit(user("two"), SamplingConfig(max_new_bytes=3), 2, Collector())
    assert batch.withdraw(second) and not batch.withdraw(second)
    batch.step()
    assert not batch.withdraw(first), "a request in the batch is stopped with should_stop, not withdrawn"
    while batch.step():
        pass
    assert second.finish_reason is None and first.finish_reason == "length"


def test_a_failing_reply_reports_its_error_and_the_others_go_on(monkeypatch):
    engine = ChatEngine(plain_model(), device="cpu")
    batch = BatchEngine(engine, max_batch_size=4)
    good, bad = Collector(), Collector()
    batch.submit(user("fine"), SamplingConfig(max_new_bytes=20), 1, good)
    broken = batch.submit(user("broken"), SamplingConfig(max_new_bytes=20), 2, bad)
    batch.step()
    broken.log_probs = torch.full_like(broken.log_probs, float("nan"))  # what a broken model would give
    while batch.step():
        pass
    assert isinstance(bad.events[-1], ValueError) and "non-finite" in str(bad.events[-1])
    assert good.done is not None and good.done.n_bytes == 20


def test_the_thread_serves_submissions_and_close_cancels_what_is_left():
    engine = ChatEngine(plain_model(), device="cpu")
    batch = BatchEngine(engine, max_batch_size=2)
    batch.start()
    finished = threading.Event()
    sink = Collector()

    def emit(event) -> None:
        sink(event)
        if isinstance(event, ReplyDone):
            finished.set()

    batch.submit(user("hello"), SamplingConfig(max_new_bytes=8), 3, emit)
    assert finished.wait(10) and sink.done.n_bytes == 8
    never = threading.Event()
    long_one = Collector()
    batch.submit(user("long"), SamplingConfig(max_new_bytes=10**6), 4, long_one, should_stop=never.is_set)
    batch.close()
    assert long_one.done is not None and long_one.done.finish_reason == "cancelled"
    with pytest.raises(RuntimeError, match="closed"):
        batch.submit(user("late"), SamplingConfig(max_new_bytes=1), 5, Collector())


def test_a_bug_in_a_step_fails_the_replies_in_it_and_the_thread_goes_on(monkeypatch):
    engine = ChatEngine(plain_model(), device="cpu")
    batch = BatchEngine(engine, max_batch_size=2)
    calls = []

    def broken_step():
        calls.append(1)
        raise RuntimeError("a bug")

    real_step = batch._step
    monkeypatch.setattr(batch, "_step", broken_step)
    failed, finished = Collector(), threading.Event()
    batch.submit(user("x"), SamplingConfig(max_new_bytes=4), 1, failed)
    batch._active.append(batch._waiting.popleft())  # as if admitted
    batch._active[0].row = 0
    batch.start()
    assert wait_until(lambda: failed.events and isinstance(failed.events[-1], RuntimeError))
    monkeypatch.setattr(batch, "_step", real_step)
    ok = Collector()
    batch.submit(
        user("y"), SamplingConfig(max_new_bytes=4), 2, lambda e: (ok(e), isinstance(e, ReplyDone) and finished.set())
    )
    assert finished.wait(10) and ok.done.n_bytes == 4
    batch.close()


def wait_until(condition, timeout: float = 5.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False

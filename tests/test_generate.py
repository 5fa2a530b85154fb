"""Generation: the sampler, KV-cache decoding, stop strings, and the streaming reply API."""

from __future__ import annotations

import dataclasses
import threading

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import bytechat.serve.generate as generate
from bytechat.text.chat_format import STOP_TAGS, ChatFormatError, extract_assistant_reply, format_chat, prompt_budget
from bytechat.serve.generate import (
    ChatEngine,
    ReplyAssembler,
    ReplyDone,
    ReplyEvent,
    SamplingConfig,
    crop_messages,
    generate_bytes,
)
from bytechat.serve.sampling import GREEDY_BELOW, Draw, NonFiniteLogits, RepeatGuard, sample_next, sample_rows
from bytechat.model import GPT
from bytechat.model.compiled import DecodeStep
from bytechat.core.rng import make_generator
from tools.decode_speed import decode_speed

GREEDY = SamplingConfig(temperature=0.0, max_new_bytes=64)
from tests.helpers import model_config, train_chat_model


def untrained(block_size: int = 32) -> GPT:
    torch.manual_seed(0)
    return GPT(model_config(n_layer=2, n_head=2, n_embd=32, block_size=block_size)).eval()


def run(gen) -> tuple[bytes, str]:
    """Drain a generate_bytes iterator: (bytes, finish reason)."""
    out = bytearray()
    while True:
        try:
            out.append(next(gen))
        except StopIteration as end:
            return bytes(out), end.value


@pytest.fixture(scope="module")
def chat_model() -> GPT:
    return train_chat_model()


@pytest.fixture(scope="module")
def engine(chat_model) -> ChatEngine:
    return ChatEngine(chat_model, info={"path": "test"})


# ---------------------------------------------------------------- sampling


@pytest.mark.parametrize(
    "field, value",
    [("temperature", -0.1), ("top_k", -1), ("top_p", 0.0), ("top_p", 1.5), ("max_new_bytes", 0)],
)
def test_sampling_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=f"sampling.{field}"):
        SamplingConfig(**{field: value})


def test_sample_next_filters():
    logits = torch.tensor([0.0, 5.0, 4.0, 3.0, 2.5, 1.0] + [-1.0] * 250)
    gen = make_generator(0)
    assert int(sample_next(logits, SamplingConfig(temperature=0), gen)) == 1
    assert int(sample_next(logits, SamplingConfig(temperature=1.0, top_k=1), gen)) == 1
    assert int(sample_next(logits, SamplingConfig(temperature=1.0, top_k=0, top_p=1e-6), gen)) == 1
    top3 = {int(sample_next(logits, SamplingConfig(temperature=5.0, top_k=3, top_p=None), gen)) for _ in range(200)}
    assert top3 == {1, 2, 3}
    unfiltered = SamplingConfig(temperature=5.0, top_k=None, top_p=None)
    anything = {int(sample_next(logits, unfiltered, gen)) for _ in range(200)}
    assert len(anything) > 20
    batch = sample_next(logits.repeat(4, 1), SamplingConfig(temperature=0), gen)
    assert batch.tolist() == [1, 1, 1, 1]


SMALLEST_FLOAT = 5e-324


@pytest.mark.parametrize("temperature", [0.0, SMALLEST_FLOAT, 1e-300, 1e-45, 1e-7, 1e-6, 1e-3, 10.0])
@pytest.mark.parametrize("top_k", [None, 0, 1, 256])
@pytest.mark.parametrize("top_p", [None, SMALLEST_FLOAT, 1e-9, 0.5, 1.0])
def test_every_valid_sampling_setting_samples(temperature, top_k, top_p):
    torch.manual_seed(0)
    logits = torch.randn(3, 256) * 4
    sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p)
    picked = sample_next(logits, sampling, make_generator(0))
    assert picked.shape == (3,) and ((0 <= picked) & (picked < 256)).all()
    if temperature < GREEDY_BELOW or top_k == 1 or (top_p is not None and top_p < 1e-6):
        assert picked.tolist() == logits.argmax(-1).tolist()


def test_tiny_temperature_still_prefers_the_best_byte_among_near_ties():
    logits = torch.zeros(256)
    logits[7] = 1e-3  # a gap far below what float32 could scale by 1 / 1e-300
    gen = make_generator(0)
    for temperature in (1e-300, 1e-6, 1e-5):
        assert int(sample_next(logits, SamplingConfig(temperature=temperature, top_k=None, top_p=None), gen)) == 7


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_logits_are_one_clear_error(bad):
    logits = torch.zeros(256)
    logits[3] = bad
    with pytest.raises(NonFiniteLogits, match="non-finite logits"):
        sample_next(logits, SamplingConfig(), make_generator(0))


def test_the_old_keyword_max_new_tokens_still_sets_max_new_bytes():
    old = SamplingConfig(max_new_tokens=7)
    assert old == SamplingConfig(max_new_bytes=7) and old.max_new_bytes == old.max_new_tokens == 7
    with pytest.raises(ValueError, match="sampling.max_new_tokens: must be an integer >= 1"):
        SamplingConfig(max_new_tokens=0)  # the error names the key the caller used
    with pytest.raises(ValueError, match="sampling.max_new_bytes: must be an integer >= 1"):
        SamplingConfig(max_new_bytes=0)


def test_sample_rows_gives_every_row_what_it_gets_alone():
    """The one sampler, many rows at once (the batch engine) or one (generate_bytes):
    mixed settings, bans and a broken row; each row as if sampled alone."""
    torch.manual_seed(3)
    scores = torch.randn(6, 256).log_softmax(-1) * 3
    scores[4, 9] = float("nan")
    settings = [
        SamplingConfig(temperature=0),
        SamplingConfig(temperature=1.0, top_k=None, top_p=None),
        SamplingConfig(),
        SamplingConfig(),
        SamplingConfig(),
        SamplingConfig(temperature=0),
    ]
    bans = [[int(scores[0].argmax())], [], [1, 2, 3], [], [], []]

    def draws():
        return [Draw(sp, make_generator(10 + i), ban) for i, (sp, ban) in enumerate(zip(settings, bans))]

    together = sample_rows(scores, draws())
    alone = [sample_rows(scores[i : i + 1], [d])[0] for i, d in enumerate(draws())]
    assert isinstance(together[4], NonFiniteLogits) and isinstance(alone[4], NonFiniteLogits)
    assert [b for i, b in enumerate(together) if i != 4] == [b for i, b in enumerate(alone) if i != 4]
    assert together[0] != int(scores[0].argmax()), "a banned byte is never picked, even greedily"
    assert together[5] == int(scores[5].argmax())
    assert not torch.isnan(scores[0]).any() and scores[0].max() > -1e3, "the caller's scores are left alone"


def test_engine_prompt_budget_is_the_one_rule():
    assert ChatEngine(untrained(block_size=128)).prompt_budget == prompt_budget(128) == 96
    assert prompt_budget(1) == 1


# ---------------------------------------------------------------- generate_bytes


def test_generates_requested_number_of_bytes():
    out, reason = run(generate_bytes(untrained(), b"hello", SamplingConfig(max_new_bytes=20), make_generator(0)))
    assert len(out) == 20 and reason == "length"


def test_empty_prompt_is_an_error():
    with pytest.raises(ValueError, match="prompt"):
        next(generate_bytes(untrained(), b"", GREEDY, make_generator(0)))


def test_greedy_is_deterministic():
    model = untrained()
    a, _ = run(generate_bytes(model, b"abc", GREEDY, make_generator(1)))
    b, _ = run(generate_bytes(model, b"abc", GREEDY, make_generator(2)))
    assert a == b


def test_seeded_sampling_is_reproducible():
    model = untrained()
    sampling = SamplingConfig(temperature=1.0, top_k=None, top_p=None, max_new_bytes=40)
    a, _ = run(generate_bytes(model, b"abc", sampling, make_generator(7)))
    b, _ = run(generate_bytes(model, b"abc", sampling, make_generator(7)))
    c, _ = run(generate_bytes(model, b"abc", sampling, make_generator(8)))
    assert a == b and a != c


def test_kv_cache_logits_equal_full_recomputation(monkeypatch):
    model = untrained(block_size=48)
    seen: dict[bool, list[torch.Tensor]] = {True: [], False: []}
    for use_cache in (True, False):

        def greedy_recording(log_probs, sampling, generator, *restricted, store=seen[use_cache]):
            store.append(log_probs.clone())
            return int(log_probs.argmax(-1))

        monkeypatch.setattr(generate, "next_byte", greedy_recording)
        run(generate_bytes(model, b"the prompt", GREEDY, make_generator(0), use_cache=use_cache))
    assert len(seen[True]) == len(seen[False]) == GREEDY.max_new_bytes  # 10 + 64 > 48: crosses block_size
    # Identical until the window first fills (afterwards the two crop differently).
    for cached, full in list(zip(seen[True], seen[False]))[: 48 - 10 + 1]:
        torch.testing.assert_close(cached, full, rtol=0, atol=1e-4)


def test_generation_goes_past_block_size():
    model = untrained(block_size=16)
    prompt = b"x" * 40  # longer than the window: only the last 16 bytes are seen
    for use_cache in (True, False):
        out, reason = run(generate_bytes(model, prompt, GREEDY, make_generator(0), use_cache=use_cache))
        assert len(out) == GREEDY.max_new_bytes and reason == "length"


def test_should_stop_cancels():
    produced = []
    gen = generate_bytes(untrained(), b"abc", GREEDY, make_generator(0), should_stop=lambda: len(produced) >= 5)
    while True:
        try:
            produced.append(next(gen))
        except StopIteration as end:
            assert end.value == "cancelled"
            break
    assert len(produced) == 5


def test_stops_on_role_tag_and_yields_it(chat_model):
    prompt = format_chat([{"role": "user", "content": "hi"}]).encode()
    out, reason = run(generate_bytes(chat_model, prompt, GREEDY, make_generator(0), stop=STOP_TAGS))
    assert out == b"hello\nuser: " and reason == "stop"
    out, reason = run(generate_bytes(chat_model, prompt, GREEDY, make_generator(0), stop=["ll"]))
    assert out == b"hell" and reason == "stop"


# ---------------------------------------------------------------- reply-level API


def collect(stream) -> tuple[list[str], ReplyDone]:
    events = list(stream)
    assert isinstance(events[-1], ReplyDone)
    assert all(isinstance(e, ReplyEvent) and e.text for e in events[:-1])
    return [e.text for e in events[:-1]], events[-1]


def test_reply_stops_at_role_tag(engine):
    pieces, done = collect(engine.stream_reply([{"role": "user", "content": "hi"}], GREEDY))
    assert done.reply == "hello" == "".join(pieces)
    assert done.finish_reason == "stop" and done.n_bytes == len(b"hello\nuser: ") and done.seconds > 0
    assert "\n" not in "".join(pieces), "the stop tag is never streamed"


def test_streaming_multibyte_text_never_splits_a_character(engine):
    pieces, done = collect(engine.stream_reply([{"role": "user", "content": "日本"}], GREEDY))
    assert done.reply == "日本語🙂" == "".join(pieces) and done.finish_reason == "stop"
    assert len(pieces) == 4  # one piece per character, though each arrives byte by byte
    assert all("\ufffd" not in p for p in pieces)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_streamed_pieces_equal_extracted_reply(engine, seed):
    messages = [{"role": "user", "content": "日本"}]
    sampling = SamplingConfig(temperature=1.5, top_k=None, top_p=None, max_new_bytes=40)
    pieces, done = collect(engine.stream_reply(messages, sampling, seed=seed))
    raw, _ = run(
        generate_bytes(engine.model, format_chat(messages).encode(), sampling, make_generator(seed), STOP_TAGS)
    )
    assert "".join(pieces) == done.reply == extract_assistant_reply(raw.decode("utf-8", errors="replace"))
    assert done.n_bytes == len(raw)


def test_seeded_replies_repeat_and_length_is_reported(engine):
    sampling = SamplingConfig(temperature=2.0, top_k=None, top_p=None, max_new_bytes=8)
    a = engine.reply([{"role": "user", "content": "hi"}], sampling, seed=5)
    b = engine.reply([{"role": "user", "content": "hi"}], sampling, seed=5)
    assert a.reply == b.reply
    long = engine.reply([{"role": "user", "content": "hi"}], SamplingConfig(temperature=0, max_new_bytes=3))
    assert long.finish_reason == "length" and long.reply == "hel"


def test_stream_reply_can_be_cancelled(engine):
    count = []

    def stop_after_two() -> bool:
        return len(count) >= 2

    for event in engine.stream_reply([{"role": "user", "content": "hi"}], GREEDY, should_stop=stop_after_two):
        count.append(event)
    assert event.finish_reason == "cancelled" and event.reply == "he"


def test_bad_messages_fail_before_streaming(engine):
    with pytest.raises(ChatFormatError):
        engine.stream_reply([{"role": "robot", "content": "hi"}], GREEDY)


def test_concurrent_replies_are_independent(engine):
    sampling = SamplingConfig(temperature=1.5, max_new_bytes=30)
    messages = [{"role": "user", "content": "日本"}]
    expected = engine.reply(messages, sampling, seed=11).reply
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(engine.reply(messages, sampling, seed=11).reply))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 3


def test_model_info(engine):
    info = engine.model_info
    assert info["path"] == "test" and info["device"] == "cpu" and info["params"] > 0
    assert info["model_config"]["block_size"] == engine.block_size == 64


_PIECES = [b"\n", b"\\", b"user: ", b"assistant: ", b"system: ", b"us", b"user:", b"a", b" ", b":"]
_PIECES += ["日".encode(), "🙂".encode(), b"\xe6", b"\x97", b"\xff", b"\xf0\x9f"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=25))
def test_reply_assembler_matches_extract_assistant_reply(chunks):
    generated = b"".join(chunks)
    assembler, fed, pieces = ReplyAssembler(), bytearray(), []
    for byte in generated:
        fed.append(byte)
        pieces.append(assembler.feed(byte))
        if assembler.stopped:
            break
    pieces.append(assembler.finish())
    # Generation stops exactly where a stop tag ends, so compare with what was fed.
    assert assembler.stopped == fed.endswith(tuple(t.encode() for t in STOP_TAGS))
    assert "".join(pieces) == assembler.reply == extract_assistant_reply(fed.decode("utf-8", errors="replace"))


def test_crop_messages_keeps_system_and_whole_recent_turns():
    system = {"role": "system", "content": "Be terse."}
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message number {i}"} for i in range(8)]
    messages = [system, *turns]
    assert crop_messages(messages, 10_000) == messages
    budget = len(format_chat([system, *turns[-3:]]).encode())
    cropped = crop_messages(messages, budget)
    assert cropped == [system, *turns[-3:]]
    assert crop_messages(turns, len(format_chat(turns[-2:]).encode())) == turns[-2:]
    # A last message too long on its own is shortened from its start; the system turn stays.
    long_last = {"role": "user", "content": "x" * 200 + "number 7"}
    budget = len(format_chat([system, {"role": "user", "content": "x" * 30 + "number 7"}]).encode())
    assert crop_messages([*messages, long_last], budget) == [system, {"role": "user", "content": "x" * 30 + "number 7"}]


SKELETON = len(format_chat([{"role": "system", "content": ""}, {"role": "user", "content": ""}]).encode())


def test_crop_messages_keeps_system_turn_and_user_header_in_the_window():
    system = {"role": "system", "content": "You are terse."}
    long_last = {"role": "user", "content": "日本語 " * 400 + "the question?"}
    for budget in (96, 128, 192):  # 3/4 of block sizes 128, ~170, 256 (ChatEngine.prompt_budget)
        prompt = format_chat(crop_messages([system, long_last], budget)).encode()
        assert len(prompt) <= budget
        assert prompt.startswith(b"system: You are terse.\nuser: ")
        assert prompt.endswith(b"the question?\nassistant: ")
        prompt.decode("utf-8")  # never half a character
    # A system prompt longer than the window is cut from its end, leaving the last
    # message half the budget.
    huge_system = {"role": "system", "content": "S" * 1000}
    cropped = crop_messages([huge_system, long_last], 192)
    assert 192 - 3 <= len(format_chat(cropped).encode()) <= 192  # within a UTF-8 character
    assert cropped[0]["content"].startswith("SSS") and len(cropped[1]["content"].encode()) >= 96 - 3


def test_engine_prompt_starts_with_the_system_turn_whatever_the_last_message(monkeypatch):
    engine = ChatEngine(untrained(block_size=128))
    prompts = []

    def recording(model, prompt, *args, **kwargs):
        prompts.append(prompt)
        return iter(())

    monkeypatch.setattr(generate, "generate_bytes", recording)
    list(
        engine.stream_reply(
            [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "z" * 5000}], GREEDY
        )
    )
    assert prompts[0].startswith(b"system: Be kind.\nuser: zzz") and len(prompts[0]) <= 96


def test_engine_refuses_a_model_whose_vocabulary_is_not_bytes():
    torch.manual_seed(0)
    model = GPT(model_config(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=300))
    with pytest.raises(ValueError, match="vocab_size is 300"):
        ChatEngine(model)


def test_decode_speed_reports_bytes_per_second():
    model = untrained(block_size=32)
    threads = torch.get_num_threads()
    assert decode_speed(model, context=32, n=8) > 0
    assert decode_speed(model, context=32, n=8, use_cache=False) > 0
    assert torch.get_num_threads() == threads
    assert model.blocks[0].attn.qkv.weight.is_contiguous(), "decode_speed must not change the caller's model"


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["user", "assistant"]), st.text(max_size=30)), max_size=8),
    st.booleans(),
    st.integers(min_value=0, max_value=300),
)
def test_crop_messages_drops_only_what_it_must(turns, with_system, budget):
    messages = [{"role": "system", "content": "sys"}] * with_system + [{"role": r, "content": c} for r, c in turns]
    cropped = crop_messages(messages, budget)
    head = messages[:1] if with_system else []
    kept = messages[len(messages) - len(cropped) + len(head) :]
    assert [m["role"] for m in cropped] == [m["role"] for m in head + kept]
    assert cropped[len(head) : -1] == kept[:-1]  # whole turns, except the last may be shortened
    if kept:
        assert kept[-1]["content"].endswith(cropped[-1]["content"])  # ... from its start
    if head:
        assert head[0]["content"].startswith(cropped[0]["content"])  # ... the system from its end
    size = len(format_chat(cropped).encode())
    # The bare role headers of what must stay (the system turn and the last message):
    # an "assistant" last message has a longer header than SKELETON's "user".
    bare = len(format_chat([{"role": m["role"], "content": ""} for m in head + cropped[len(head) :][-1:]]).encode())
    if budget >= max(SKELETON, bare) or len(cropped) - len(head) > 1:
        assert size <= budget
    if len(cropped) < len(messages):  # one more turn would not have fitted
        one_more = head + messages[len(messages) - len(cropped) + len(head) - 1 :]
        assert len(format_chat(one_more).encode()) > budget
    if cropped and len(format_chat(messages[-1:]).encode()) <= budget // 2:
        assert cropped[-1] == messages[-1]  # a last message that fits is never cut


def test_a_reply_cut_inside_a_stop_tag_does_not_show_the_tag():
    """The length limit can stop a reply that was ending ("...\\nassist"): the tag's first
    letters are not part of the reply, as streamed or as extracted."""
    for generated in (b"14 February\nassist", b"14 February\n\nus", b"14 February\n"):
        assembler = ReplyAssembler()
        pieces = [assembler.feed(b) for b in generated] + [assembler.finish()]
        assert not assembler.stopped
        assert "".join(pieces) == assembler.reply == extract_assistant_reply(generated.decode()) == "14 February"
    escaped = ReplyAssembler()  # an escaped line ("\\user: " in content), cut, is content
    pieces = [escaped.feed(b) for b in b"a\n\\us"] + [escaped.finish()]
    assert "".join(pieces) == extract_assistant_reply("a\n\\us") == "a\n\\us"


def test_reply_assembler_drops_blank_lines_before_a_turn():
    assembler = ReplyAssembler()
    pieces = [assembler.feed(b) for b in b"line one\n  two\n\nsystem: "]
    assert assembler.stopped and "".join(pieces) == assembler.reply == "line one\n  two"


def test_repeat_guard_breaks_a_loop_but_lets_the_prompt_be_quoted():
    guard, produced = RepeatGuard(4), bytearray()
    for byte in b"abcXabc":
        produced.append(byte)
        guard.add(produced)
    assert guard.banned(produced) == [ord("X")], "abcX already happened: X may not follow abc again"
    assert RepeatGuard(0).banned(produced) == []


def test_generation_never_repeats_a_guarded_run():
    """A model that loops greedily ("hello" forever) is cut off by the guard."""
    model = train_chat_model()
    loop = SamplingConfig(temperature=0.0, max_new_bytes=200, repeat_guard=0)
    guarded = SamplingConfig(temperature=0.0, max_new_bytes=200, repeat_guard=8)
    prompt = b"assistant: hello\nassistant: hello\nassistant: "
    free = bytes(generate_bytes(model, prompt, loop, make_generator(0)))
    held = bytes(generate_bytes(model, prompt, guarded, make_generator(0)))
    runs = lambda data: [data[i : i + 8] for i in range(len(data) - 7)]  # noqa: E731
    assert len(set(runs(held))) == len(runs(held)), "no 8-byte run twice in the reply"
    assert len(set(runs(free))) < len(runs(free)), "without the guard this model repeats itself"


# ---------------------------------------------------------------- the compiled decode step


def levers_model() -> GPT:
    """A tiny model with the shipped levers (short conv, copy head going on, QK-norm, relu2)."""
    torch.manual_seed(4)
    cfg = model_config(n_layer=2, n_head=2, n_embd=32, block_size=40, conv_kernel=4, copy_dim=16)
    model = GPT(dataclasses.replace(cfg, copy_continue=True, qk_norm=True, activation="relu2")).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.conv.weight.normal_(0, 0.3)
        model.copy.gate.bias.fill_(1.0)
    return model


@pytest.mark.parametrize(
    "compile", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["static-eager", "compiled"]
)
def test_the_decode_step_gives_the_bytes_of_eager_decoding(compile):
    """Greedy bytes through DecodeStep (static cache shapes; compiled by inductor, or the
    same step eager) equal plain decoding's, past block_size (refills) included, and the
    log-probabilities agree within 1e-4."""
    model = levers_model()
    step = DecodeStep(model, compile=compile)
    sampling = SamplingConfig(temperature=0.0, max_new_bytes=70, repeat_guard=0)
    want, _ = run(generate_bytes(model, b"hello there", sampling, make_generator(0)))
    got, _ = run(generate_bytes(model, b"hello there", sampling, make_generator(0), step=step))
    assert got == want and len(got) == 70 > model.config.block_size
    with torch.inference_mode():
        plain, static = model.new_cache(), step.new_cache()
        for cache in (plain, static):
            model(torch.tensor([list(b"hello there")]), cache=cache)
        for byte in b"abc":
            idx = torch.tensor([[byte]])
            torch.testing.assert_close(step(idx, static), model(idx, cache=plain)[0][:, -1], rtol=0, atol=1e-4)


def test_a_decode_step_that_cannot_compile_runs_eager(monkeypatch, capsys):
    model = levers_model()
    step = DecodeStep(model, compile=True)

    def no_compiler(*args):
        raise RuntimeError("no C++ compiler\nmore lines")

    monkeypatch.setattr(step, "_step", no_compiler)
    sampling = SamplingConfig(temperature=0.0, max_new_bytes=12)
    got, _ = run(generate_bytes(model, b"hi", sampling, make_generator(0), step=step))
    assert got == run(generate_bytes(model, b"hi", sampling, make_generator(0)))[0]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(RuntimeError: no C++ compiler); decoding eager" in err
    assert not step.compiled

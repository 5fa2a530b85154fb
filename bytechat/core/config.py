"""Typed configuration built from params.yaml, validated by pydantic.

Every section maps onto a frozen pydantic dataclass (`dataclasses.asdict`/`replace` work
on it). Validation is strict, in code (ModelConfig(...), replace) as from the file: an
unknown or missing key, a wrong type (no coercion but int -> float) or a value out of
range is a ConfigError of one line naming the file and the dotted key, e.g.
`params.yaml: profiles.smoke.train.lr: expected float, got str 'fast'`.

params.yaml is the one home of every setting that shapes a model or its training, so DVC
sees each of them: those fields have no default here. Only operational settings that
change no weights (train.log_every, data.hub_timeout_s) keep a default. vocab_size is
fixed by the byte tokenizer (256): params.yaml may not set it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import AfterValidator, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

from bytechat.core.config_errors import Invalid, one_line, require
from bytechat.text.tokenizer import VOCAB_SIZE

SOURCES = ("wiki", "roam", "primer", "grounded")
Activation = Literal["gelu", "relu2"]
Optimizer = Literal["adamw", "muon"]
Dtype = Literal["auto", "bf16", "fp32"]
ACTIVATIONS = typing.get_args(Activation)
OPTIMIZERS = typing.get_args(Optimizer)


class ConfigError(ValueError):
    """params.yaml (or a checkpoint's config) does not describe a valid configuration."""


def _config(cls=None, **kwargs):
    """A frozen pydantic dataclass that refuses unknown keys and non-finite floats, and
    whose constructor raises a one-line ConfigError instead of pydantic's ValidationError."""

    def wrap(cls):
        cls = pydantic.dataclasses.dataclass(
            cls, frozen=True, config=pydantic.ConfigDict(extra="forbid", allow_inf_nan=False), **kwargs
        )
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self, *args, **values):
            try:
                init(self, *args, **values)
            except ValidationError as exc:
                raise ConfigError(one_line(exc, cls)) from None

        cls.__init__ = __init__
        return cls

    return wrap if cls is None else wrap(cls)


# Field types. Strict* refuse coercion (a bool is no int, "3" no number); StrictFloat takes
# an int and makes it a float.
Positive = Annotated[StrictInt, Field(gt=0)]
NonNegative = Annotated[StrictInt, Field(ge=0)]
Fraction = Annotated[StrictFloat, Field(ge=0, lt=1)]  # [0, 1)


def _mix_problem(p: dict[str, float], sources: tuple[str, ...] | None) -> tuple[str, str] | None:
    """(key within p, problem) if p is no probability mix over exactly `sources` (None: any)."""
    if sources is not None and set(p) != set(sources):
        return "", f"needs exactly the sources {', '.join(sources)} (got {', '.join(p) or 'none'})"
    for name, value in p.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0 or not math.isfinite(value):
            return name, f"must be a probability >= 0 (got {value!r})"
    if not math.isclose(sum(p.values()), 1.0, abs_tol=1e-6):
        return "", f"probabilities must sum to 1 (sum is {sum(p.values()):.6g})"
    return None


def check_probabilities(p: dict[str, float], key: str, sources: tuple[str, ...] | None = SOURCES) -> None:
    """p is a probability mix (over exactly `sources`, unless None); else a ConfigError naming key."""
    problem = _mix_problem(p, sources)
    if problem is not None:
        sub, text = problem
        raise ConfigError(f"{key}.{sub}: {text}" if sub else f"{key}: {text}")


def _valid_mix(p: dict[str, float]) -> dict[str, float]:
    problem = _mix_problem(p, SOURCES)
    if problem is not None:
        raise Invalid(*problem)
    return p


Mix = Annotated[dict[StrictStr, StrictFloat], AfterValidator(_valid_mix)]  # a share per source


@_config
class ModelConfig:
    # Every field but vocab_size is required: its value lives in params.yaml.
    n_layer: Positive
    n_head: Positive
    n_embd: Positive
    block_size: Positive
    rope_theta: Annotated[StrictFloat, Field(gt=0)]
    mlp_ratio: Positive
    dropout: Fraction
    # Width of the depthwise causal convolution before each attention (blocks.ShortConv);
    # 0 = none. It makes copying from the context learnable at this size (docs/notes.md).
    conv_kernel: Annotated[StrictInt, Field(ge=0, description="0 = no convolution")]
    # Width of the copy head's queries and keys (model/copy_head.py); 0 = no copy head.
    copy_dim: Annotated[StrictInt, Field(ge=0, description="0 = no copy head")]
    # Whether the copy head prefers to go on where it copied from the byte before
    # (model/copy_head.py): a pointer that loses its place mid-quote is its main error.
    copy_continue: StrictBool
    # Width of the extractive answer head's queries and keys (model/span_head.py); 0 = none.
    span_dim: Annotated[StrictInt, Field(ge=0, description="0 = no span head")]
    # The head's pointer loss beside the language model's: 0.03 leaves the quotes as they
    # were, 0.1 and more wreck generation (docs/notes.md, "Measured: an extractive answer head").
    span_weight: Annotated[StrictFloat, Field(ge=0)]
    # RMS-normalise queries and keys per head before RoPE (blocks.CausalSelfAttention).
    qk_norm: StrictBool
    # The MLP's nonlinearity: gelu (tanh form) or relu2 (relu squared); blocks.MLP.
    activation: Activation
    # Fixed by the byte tokenizer, not a setting (params.yaml may not set it).
    vocab_size: Positive = VOCAB_SIZE

    @pydantic.model_validator(mode="after")
    def _heads(self):
        require(self.n_embd % self.n_head == 0, "n_embd", "must be divisible by n_head")
        require((self.n_embd // self.n_head) % 2 == 0, "n_head", "head dim (n_embd / n_head) must be even for RoPE")
        return self

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


@_config
class TrainConfig:
    # Every field but log_every is required: its value lives in params.yaml.
    steps: Positive
    batch_size: Positive  # global batch in sequences per optimizer step (per micro-step x grad_accum)
    grad_accum: Positive
    # adamw: AdamW for every parameter. muon: Muon for the hidden weight matrices and AdamW
    # for the rest (embedding, norms, gains, convolutions); bytechat/train/step.py.
    optimizer: Optimizer
    lr: StrictFloat
    min_lr: Annotated[StrictFloat, Field(gt=0)]  # and <= lr
    warmup_steps: NonNegative
    weight_decay: StrictFloat  # decoupled, on the weight matrices only
    beta1: StrictFloat
    beta2: StrictFloat
    grad_clip: StrictFloat  # max global gradient norm; 0 = no clipping
    eval_every: Positive
    eval_batches: Positive
    checkpoint_every: Positive
    dtype: Dtype  # autocast dtype; master weights stay fp32
    compile: StrictBool
    # The last chat_fraction of the optimizer steps draw batches by p_chat instead of
    # p_train (the "chat phase"), so a small model sees enough dialogues, late, to learn
    # the turn format; 0 disables it.
    chat_fraction: Annotated[StrictFloat, Field(ge=0, lt=1, description="0 disables the chat phase")]
    # Questions the answer probe asks at each evaluation of the chat phase (greedy, through
    # the chat path; bytechat.eval.answer_probe): best.pt goes by their share first. 0: by val/loss.
    answer_probe: Annotated[StrictInt, Field(ge=0, description="0 disables the probe")]
    # Operational: how often the progress bar and dvclive log; changes no weights.
    log_every: Positive = 10

    @pydantic.model_validator(mode="after")
    def _consistent(self):
        require(self.batch_size % self.grad_accum == 0, "batch_size", "must be divisible by grad_accum")
        require(self.min_lr <= self.lr, "min_lr", f"must be <= lr ({self.lr:g}), got {self.min_lr:g}")
        return self


@_config
class DataSection:
    """params.yaml's `data:` section."""

    wikitext_source: StrictStr  # auto | hub | offline | path to a local copy
    wikitext_config: StrictStr
    val_fraction: Annotated[StrictFloat, Field(gt=0, lt=1)]
    # Operational: how long `auto` waits for the Hub before the offline corpus.
    hub_timeout_s: StrictFloat = 5.0


@_config(kw_only=True)
class DataConfig(DataSection):
    """What a run reads about its data: the data section, and seed, p_train and p_chat,
    which params.yaml keeps at its top level."""

    seed: StrictInt
    p_train: Mix
    # The mix of the chat phase (the last train.chat_fraction of a run's steps).
    p_chat: Mix


AnswerStyle = Literal["span", "quote", "clause", "value"]  # also a checkpoint's answer_style


@_config
class GroundedConfig:
    """The grounded dialogues stage (bytechat/notes/grounded.py, stages/grounded.py)."""

    roam_dialogues: NonNegative  # about the person's roam train pages
    # ... at most this many per train block: asked about a small graph thousands of times,
    # the model learns its answers by heart instead of reading them off the notes
    dialogues_per_block: Annotated[StrictInt, Field(ge=1)]
    synthetic_pages: NonNegative  # random pages nobody can memorise (bytechat/notes/synthetic.py)
    synthetic_dialogues: NonNegative  # about those
    val_dialogues: NonNegative  # about the roam validation pages (grounded_val, and eval)
    uncovered: Fraction  # share of questions the notes do not answer
    near_miss: Fraction  # per question, a question for a key the page lacks (dialogues/near_miss.py)
    pages: Fraction  # per question, one more about a random page as a whole ("tell me about X")
    anywhere: Fraction  # share of single questions whose answering block is not placed last but anywhere
    k: Annotated[StrictInt, Field(ge=1)]  # blocks retrieval puts in the prompt, at most (as chat does)
    context_bytes: Annotated[StrictInt, Field(ge=256)]  # the smallest block_size a profile uses: the notes must fit it
    answers: AnswerStyle  # how answers are taught (bytechat/notes/grounded.py ANSWERS)


@_config
class Profile:
    name: StrictStr
    model: ModelConfig
    train: TrainConfig


NotesFormat = Literal["auto", "roam-markdown", "roam-json", "logseq", "obsidian", "markdown"]


@_config
class NotesConfig:
    """How the notes folder is read (bytechat/notes/readers/); may be left out."""

    format: NotesFormat = "auto"
    roam_graph: StrictStr = ""  # the Roam graph's name, for links to its blocks (bytechat/notes/links.py)


@_config
class EvalConfig:
    """The eval stage's chat replies (bytechat/eval/grounded.py); may be left out."""

    faithful: StrictBool = False  # decode with SamplingConfig(faithful=True) (bytechat/serve/copying.py)


@_config
class Params:
    data: DataConfig
    profiles: dict[str, Profile]
    grounded: GroundedConfig
    notes: NotesConfig = Field(default_factory=NotesConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @property
    def seed(self) -> int:
        return self.data.seed

    def profile(self, name: str) -> Profile:
        if name not in self.profiles:
            raise ConfigError(f"profiles.{name}: no such profile (have: {', '.join(self.profiles)})")
        return self.profiles[name]


VOCAB_FIXED = f"fixed by the byte tokenizer ({VOCAB_SIZE}), not a params.yaml setting"
_TOP_LEVEL = ("seed", "p_train", "p_chat")  # DataConfig fields written at params.yaml's top level


def _refuse(keys: tuple[str, ...], problem: str):
    """A before-validator: the mapping must not hold any of `keys`."""

    def check(raw: Any) -> Any:
        for key in keys:
            if isinstance(raw, dict) and key in raw:
                raise Invalid(key, problem)
        return raw

    return pydantic.BeforeValidator(check)


@_config
class _ProfileSection:
    model: Annotated[ModelConfig, _refuse(("vocab_size",), VOCAB_FIXED)]
    train: TrainConfig


@_config
class _ParamsFile:
    """params.yaml as written: Params but for where seed/p_train/p_chat and profile names sit."""

    seed: StrictInt
    p_train: Mix
    p_chat: Mix
    data: Annotated[DataSection, _refuse(_TOP_LEVEL, "belongs at the top level")]
    profiles: Annotated[dict[StrictStr, _ProfileSection], Field(min_length=1)]
    grounded: GroundedConfig
    notes: NotesConfig = Field(default_factory=NotesConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)


@functools.cache
def _adapter(tp: Any) -> pydantic.TypeAdapter:
    return pydantic.TypeAdapter(tp)


def _validate(tp: Any, raw: Any, key: str = ""):
    try:
        return _adapter(tp).validate_python(raw)
    except ValidationError as exc:
        raise ConfigError(one_line(exc, tp, key)) from None


# What a model_config or train_config saved before these keys were required (an older
# export's config.json, an older checkpoint) meant by leaving them out: the code defaults
# of the time. A record of the past, not a default for new runs: never change a value.
LEGACY_MODEL_CONFIG: dict[str, Any] = {
    "rope_theta": 10000.0,
    "mlp_ratio": 4,
    "dropout": 0.0,
    "conv_kernel": 0,
    "copy_dim": 0,
    "copy_continue": False,
    "span_dim": 0,
    "span_weight": 0.0,
    "qk_norm": False,
    "activation": "gelu",
}
LEGACY_TRAIN_CONFIG: dict[str, Any] = {
    "weight_decay": 0.1,
    "beta1": 0.9,
    "beta2": 0.95,
    "grad_clip": 1.0,
    "compile": False,
    "optimizer": "adamw",
    "answer_probe": 0,
}


def saved_model_config(raw: Any, key: str = "model_config") -> ModelConfig:
    """The ModelConfig of a saved model (export config.json, checkpoint), strictly, with
    LEGACY_MODEL_CONFIG for the keys older files leave out."""
    return _validate(ModelConfig, {**LEGACY_MODEL_CONFIG, **raw} if isinstance(raw, dict) else raw, key)


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    try:
        file = _validate(_ParamsFile, raw)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    data = DataConfig(**dataclasses.asdict(file.data), **{name: getattr(file, name) for name in _TOP_LEVEL})
    profiles = {name: Profile(name=name, model=s.model, train=s.train) for name, s in file.profiles.items()}
    return Params(data=data, profiles=profiles, grounded=file.grounded, notes=file.notes, eval=file.eval)


def load_params(path: str | Path | None = None) -> Params:
    from bytechat.core import paths

    path = Path(path) if path is not None else paths.params_file()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from None
    return parse_params(raw, str(path))


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)

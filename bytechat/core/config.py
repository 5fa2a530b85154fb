"""Typed configuration built from params.yaml.

Every section maps onto a dataclass. Loading is strict: an unknown key, a missing key or
a value of the wrong type is a ConfigError naming the file and the dotted key, e.g.

    params.yaml: profiles.smoke.train.lr: expected float, got str 'fast'

params.yaml is the one home of every setting that shapes a model or its training, so DVC
sees each of them (the train stage depends on `profiles.<name>`): those fields have no
default here. Only operational settings that change no weights (train.log_every,
data.hub_timeout_s) keep a dataclass default, and so may be left out of params.yaml.
ModelConfig.vocab_size is fixed by the byte tokenizer (256), not a setting: params.yaml
may not set it.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bytechat.text.tokenizer import VOCAB_SIZE

SOURCES = ("wiki", "roam", "primer", "grounded")
ACTIVATIONS = ("gelu", "relu2")
OPTIMIZERS = ("adamw", "muon")


class ConfigError(ValueError):
    """params.yaml (or a checkpoint's config) does not describe a valid configuration."""


@dataclass(frozen=True)
class ModelConfig:
    # Every field but vocab_size is required: its value lives in params.yaml.
    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    rope_theta: float
    mlp_ratio: int
    dropout: float
    # Width of the depthwise causal convolution before each attention (blocks.ShortConv);
    # 0 = none. It makes copying from the context learnable at this size (docs/notes.md).
    conv_kernel: int
    # Width of the copy head's queries and keys (model/copy_head.py); 0 = no copy head.
    copy_dim: int
    # Whether the copy head prefers to go on where it copied from the byte before
    # (model/copy_head.py): a pointer that loses its place mid-quote is its main error.
    copy_continue: bool
    # RMS-normalise queries and keys per head before RoPE (blocks.CausalSelfAttention).
    qk_norm: bool
    # The MLP's nonlinearity: gelu (tanh form) or relu2 (relu squared); blocks.MLP.
    activation: str
    # Fixed by the byte tokenizer, not a setting (params.yaml may not set it).
    vocab_size: int = VOCAB_SIZE

    def __post_init__(self) -> None:
        _require(self.conv_kernel >= 0, "conv_kernel", "must be >= 0 (0 = no convolution)")
        _require(self.copy_dim >= 0, "copy_dim", "must be >= 0 (0 = no copy head)")
        for name in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "mlp_ratio"):
            _require(getattr(self, name) > 0, name, "must be > 0")
        _require(self.n_embd % self.n_head == 0, "n_embd", "must be divisible by n_head")
        _require((self.n_embd // self.n_head) % 2 == 0, "n_head", "head dim (n_embd / n_head) must be even for RoPE")
        _require(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)")
        _require(self.rope_theta > 0, "rope_theta", "must be > 0")
        _require(self.activation in ACTIVATIONS, "activation", f"must be one of {', '.join(ACTIVATIONS)}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


@dataclass(frozen=True)
class TrainConfig:
    # Every field but log_every is required: its value lives in params.yaml.
    steps: int
    batch_size: int  # global batch in sequences per optimizer step (per micro-step x grad_accum)
    grad_accum: int
    # adamw: AdamW for every parameter. muon: Muon for the hidden weight matrices and AdamW
    # for the rest (embedding, norms, gains, convolutions); bytechat/train/step.py.
    optimizer: str
    lr: float
    min_lr: float
    warmup_steps: int
    weight_decay: float  # decoupled, on the weight matrices only
    beta1: float
    beta2: float
    grad_clip: float  # max global gradient norm; 0 = no clipping
    eval_every: int
    eval_batches: int
    checkpoint_every: int
    dtype: str  # auto | bf16 | fp32 (autocast dtype; master weights stay fp32)
    compile: bool
    # The last chat_fraction of the optimizer steps draw batches by p_chat instead of
    # p_train (the "chat phase"), so a small model sees enough dialogues, late, to learn
    # the turn format; 0 disables it.
    chat_fraction: float
    # Questions the answer probe asks at each evaluation of the chat phase (greedy, through
    # the chat path; bytechat.eval.answer_probe): best.pt goes by their share first. 0: by val/loss.
    answer_probe: int
    # Operational: how often the progress bar and dvclive log; changes no weights.
    log_every: int = 10

    def __post_init__(self) -> None:
        for name in (
            "steps",
            "batch_size",
            "grad_accum",
            "eval_every",
            "eval_batches",
            "checkpoint_every",
            "log_every",
        ):
            _require(getattr(self, name) > 0, name, "must be > 0")
        _require(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        _require(self.batch_size % self.grad_accum == 0, "batch_size", "must be divisible by grad_accum")
        _require(0 < self.min_lr <= self.lr, "min_lr", "must be in (0, lr]")
        _require(self.dtype in ("auto", "bf16", "fp32"), "dtype", "must be one of auto, bf16, fp32")
        _require(self.optimizer in OPTIMIZERS, "optimizer", f"must be one of {', '.join(OPTIMIZERS)}")
        _require(0.0 <= self.chat_fraction < 1.0, "chat_fraction", "must be in [0, 1) (0 disables the chat phase)")
        _require(self.answer_probe >= 0, "answer_probe", "must be >= 0 (0 disables the probe)")


@dataclass(frozen=True)
class DataConfig:
    seed: int
    wikitext_source: str  # auto | hub | offline | path to a local copy
    wikitext_config: str
    val_fraction: float
    p_train: dict[str, float]
    # The mix of the chat phase (the last train.chat_fraction of a run's steps).
    p_chat: dict[str, float]
    # Operational: how long `auto` waits for the Hub before the offline corpus.
    hub_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        _require(0.0 < self.val_fraction < 1.0, "val_fraction", "must be in (0, 1)")
        check_probabilities(self.p_train, "p_train")
        check_probabilities(self.p_chat, "p_chat")


@dataclass(frozen=True)
class GroundedConfig:
    """The grounded dialogues stage (bytechat/notes/grounded.py, stages/grounded.py)."""

    roam_dialogues: int  # about the person's roam train pages
    synthetic_pages: int  # random pages nobody can memorise (bytechat/notes/synthetic.py)
    synthetic_dialogues: int  # about those
    val_dialogues: int  # about the roam validation pages (grounded_val, and eval)
    uncovered: float  # share of questions the notes do not answer
    k: int  # blocks retrieval puts in the prompt, at most (as chat does)
    context_bytes: int  # the smallest block_size a profile uses: the notes must fit it

    def __post_init__(self) -> None:
        for name in ("roam_dialogues", "synthetic_pages", "synthetic_dialogues", "val_dialogues"):
            _require(getattr(self, name) >= 0, name, "must be >= 0")
        _require(0.0 <= self.uncovered < 1.0, "uncovered", "must be in [0, 1)")
        _require(self.k >= 1, "k", "must be >= 1")
        _require(self.context_bytes >= 256, "context_bytes", "must be >= 256")


@dataclass(frozen=True)
class Profile:
    name: str
    model: ModelConfig
    train: TrainConfig


@dataclass(frozen=True)
class Params:
    data: DataConfig
    profiles: dict[str, Profile]
    grounded: GroundedConfig

    @property
    def seed(self) -> int:
        return self.data.seed

    def profile(self, name: str) -> Profile:
        if name not in self.profiles:
            raise ConfigError(f"profiles.{name}: no such profile (have: {', '.join(self.profiles)})")
        return self.profiles[name]


def check_probabilities(p: dict[str, float], key: str, sources: tuple[str, ...] | None = SOURCES) -> None:
    """p is a probability mix (over exactly `sources`, unless None)."""
    if sources is not None and set(p) != set(sources):
        raise ConfigError(f"{key}: needs exactly the sources {', '.join(sources)} (got {', '.join(p) or 'none'})")
    for name, value in p.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0 or not math.isfinite(value):
            raise ConfigError(f"{key}.{name}: must be a probability >= 0 (got {value!r})")
    if not math.isclose(sum(p.values()), 1.0, abs_tol=1e-6):
        raise ConfigError(f"{key}: probabilities must sum to 1 (sum is {sum(p.values()):.6g})")


def _require(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {problem}")


def _check_type(value: Any, tp: Any, key: str) -> Any:
    """Return value converted to tp (int -> float widening only) or raise naming the key."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        _, vtype = typing.get_args(tp)
        return {str(k): _check_type(v, vtype, f"{key}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        raise TypeError("union-typed config fields are not supported")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (tp in (int, float) and isinstance(value, bool)) or not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def from_dict(cls: type, raw: Any, key: str, *, fill: dict[str, Any] | None = None):
    """Build dataclass `cls` from a mapping, strictly: every field without a dataclass
    default must be there. fill: values for keys that are absent (LEGACY_MODEL_CONFIG)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{key}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in raw:
        if name not in fields:
            raise ConfigError(f"{key}.{name}: unknown key (known: {', '.join(fields)})")
    raw = {**(fill or {}), **raw}
    values = {}
    for name, f in fields.items():
        if name in raw:
            values[name] = _check_type(raw[name], hints[name], f"{key}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key}.{name}: missing key")
    try:
        return cls(**values)
    except ConfigError as exc:
        raise ConfigError(f"{key}.{exc}") from None


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

VOCAB_FIXED = f"fixed by the byte tokenizer ({VOCAB_SIZE}), not a params.yaml setting"


def saved_model_config(raw: Any, key: str = "model_config") -> ModelConfig:
    """The ModelConfig of a saved model (export config.json, checkpoint), strictly, with
    LEGACY_MODEL_CONFIG for the keys older files leave out."""
    return from_dict(ModelConfig, raw, key, fill=LEGACY_MODEL_CONFIG)


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    try:
        if not isinstance(raw, dict):
            raise ConfigError("top level: expected a mapping")
        top_level = ("seed", "p_train", "p_chat")  # DataConfig fields written at the top level
        known = {*top_level, "data", "profiles", "grounded"}
        for name in raw:
            if name not in known:
                raise ConfigError(f"{name}: unknown key (known: {', '.join(sorted(known))})")
        for name in known:
            if name not in raw:
                raise ConfigError(f"{name}: missing key")
        data_raw = dict(_check_type(raw["data"], dict[str, Any], "data"))
        for name in top_level:
            if name in data_raw:
                raise ConfigError(f"data.{name}: belongs at the top level")
        data_raw["seed"] = _check_type(raw["seed"], int, "seed")
        for name in ("p_train", "p_chat"):
            data_raw[name] = _check_type(raw[name], dict[str, float], name)
        try:
            data = from_dict(DataConfig, data_raw, "data")
        except ConfigError as exc:  # seed/p_train/p_chat live at the top level
            msg = str(exc)
            for name in top_level:
                msg = msg.replace(f"data.{name}", name)
            raise ConfigError(msg) from None
        profiles_raw = _check_type(raw["profiles"], dict[str, Any], "profiles")
        if not profiles_raw:
            raise ConfigError("profiles: at least one profile is needed")
        profiles = {}
        for name, body in profiles_raw.items():
            key = f"profiles.{name}"
            if not isinstance(body, dict):
                raise ConfigError(f"{key}: expected a mapping")
            for part in body:
                if part not in ("model", "train"):
                    raise ConfigError(f"{key}.{part}: unknown key (known: model, train)")
            for part in ("model", "train"):
                if part not in body:
                    raise ConfigError(f"{key}.{part}: missing key")
            if isinstance(body["model"], dict) and "vocab_size" in body["model"]:
                raise ConfigError(f"{key}.model.vocab_size: {VOCAB_FIXED}")
            profiles[name] = Profile(
                name=name,
                model=from_dict(ModelConfig, body["model"], f"{key}.model"),
                train=from_dict(TrainConfig, body["train"], f"{key}.train"),
            )
        grounded = from_dict(GroundedConfig, raw["grounded"], "grounded")
        return Params(data=data, profiles=profiles, grounded=grounded)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_params(path: str | Path | None = None) -> Params:
    from bytechat.core import paths

    path = Path(path) if path is not None else paths.PARAMS
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from None
    return parse_params(raw, str(path))


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)

import copy
import dataclasses

import pytest
import yaml

from bytechat.core.config import (
    ConfigError,
    DataConfig,
    GroundedConfig,
    ModelConfig,
    TrainConfig,
    LEGACY_MODEL_CONFIG,
    load_params,
    parse_params,
    saved_model_config,
)
from tests.conftest import REPO
from tests.helpers import TINY_MODEL, model_config, train_config

RAW = yaml.safe_load((REPO / "params.yaml").read_text())


def test_repo_params_load():
    params = load_params(REPO / "params.yaml")
    assert params.seed == RAW["seed"]
    assert set(params.profiles) >= {"smoke", "train"}
    assert params.profile("smoke").train.steps == RAW["profiles"]["smoke"]["train"]["steps"]
    assert params.profile("train").train.steps == 20000
    # The base phase keeps the seed's mix; grounded dialogues come in through p_chat.
    assert params.data.p_train == pytest.approx({"wiki": 0.784, "roam": 0.196, "primer": 0.020, "grounded": 0.0})
    assert params.data.p_chat == pytest.approx(RAW["p_chat"]) and params.data.p_chat["grounded"] > 0
    assert params.grounded.context_bytes <= min(p.model.block_size for p in params.profiles.values())


def _with(mutate):
    raw = copy.deepcopy(RAW)
    mutate(raw)
    return raw


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda r: r["profiles"]["smoke"]["train"].update(lr="fast"), "profiles.smoke.train.lr: expected float"),
        (lambda r: r["profiles"]["smoke"]["model"].update(n_layers=4), "profiles.smoke.model.n_layers: unknown key"),
        (lambda r: r["profiles"]["smoke"]["train"].pop("steps"), "profiles.smoke.train.steps: missing key"),
        (lambda r: r["profiles"]["smoke"]["model"].update(n_layer=True), "profiles.smoke.model.n_layer: expected int"),
        (lambda r: r.update(seed="x"), "seed: expected int"),
        (lambda r: r.pop("p_train"), "p_train: missing key"),
        (lambda r: r["p_train"].update(wiki=0.5), "p_train: probabilities must sum to 1"),
        (lambda r: r["p_train"].update(wiki=-0.1, roam=1.08), "p_train.wiki: must be a probability"),
        (lambda r: r["data"].update(val_fraction=1.5), "data.val_fraction: must be in (0, 1)"),
        (lambda r: r["data"].update(colour="red"), "data.colour: unknown key"),
        (lambda r: r["profiles"]["smoke"]["model"].update(n_head=3), "profiles.smoke.model.n_embd: must be divisible"),
        (lambda r: r.update(extra=1), "extra: unknown key"),
        (lambda r: r.pop("p_chat"), "p_chat: missing key"),
        (lambda r: r["p_chat"].update(primer=0.7), "p_chat: probabilities must sum to 1"),
        (lambda r: r["p_chat"].pop("roam"), "p_chat: needs exactly the sources"),
        (lambda r: r["p_chat"].update(wiki="lots"), "p_chat.wiki: expected float"),
        (lambda r: r["data"].update(p_chat=r["p_chat"]), "data.p_chat: belongs at the top level"),
        (
            lambda r: r["profiles"]["smoke"]["train"].update(chat_fraction=1.0),
            "profiles.smoke.train.chat_fraction: must be in [0, 1)",
        ),
        (
            lambda r: r["profiles"]["smoke"]["train"].update(chat_fraction=-0.1),
            "profiles.smoke.train.chat_fraction: must be in [0, 1)",
        ),
        (
            lambda r: r["profiles"]["smoke"]["train"].pop("chat_fraction"),
            "profiles.smoke.train.chat_fraction: missing key",
        ),
        # Every model and optimizer setting is required: params.yaml is its only home.
        (lambda r: r["profiles"]["smoke"]["model"].pop("dropout"), "profiles.smoke.model.dropout: missing key"),
        (lambda r: r["profiles"]["train"]["model"].pop("rope_theta"), "profiles.train.model.rope_theta: missing key"),
        (lambda r: r["profiles"]["smoke"]["model"].pop("copy_dim"), "profiles.smoke.model.copy_dim: missing key"),
        (
            lambda r: r["profiles"]["smoke"]["train"].pop("weight_decay"),
            "profiles.smoke.train.weight_decay: missing key",
        ),
        (lambda r: r["profiles"]["train"]["train"].pop("compile"), "profiles.train.train.compile: missing key"),
        (lambda r: r["profiles"]["smoke"]["train"].update(beta2="high"), "profiles.smoke.train.beta2: expected float"),
        (lambda r: r["profiles"]["smoke"]["train"].update(compile="no"), "profiles.smoke.train.compile: expected bool"),
        (
            lambda r: r["profiles"]["smoke"]["model"].update(mlp_ratio=4.5),
            "profiles.smoke.model.mlp_ratio: expected int",
        ),
        (
            lambda r: r["profiles"]["smoke"]["model"].update(vocab_size=256),
            "profiles.smoke.model.vocab_size: fixed by the byte tokenizer (256)",
        ),
    ],
)
def test_bad_params_name_the_key(mutate, key):
    with pytest.raises(ConfigError) as err:
        parse_params(_with(mutate), "params.yaml")
    assert str(err.value).startswith("params.yaml: ")
    assert key in str(err.value)


def test_int_widens_to_float_but_not_bool():
    raw = _with(lambda r: r["profiles"]["smoke"]["train"].update(lr=1))
    assert parse_params(raw).profile("smoke").train.lr == 1.0
    with pytest.raises(ConfigError, match="lr: expected float"):
        parse_params(_with(lambda r: r["profiles"]["smoke"]["train"].update(lr=True)))


def test_unreadable_params_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ConfigError, match="params.yaml: not valid YAML"):
        load_params(bad)
    with pytest.raises(ConfigError, match="file not found"):
        load_params(tmp_path / "nope.yaml")


def test_unknown_profile():
    with pytest.raises(ConfigError, match="profiles.huge: no such profile"):
        load_params(REPO / "params.yaml").profile("huge")


def test_odd_head_dim_rejected():
    with pytest.raises(ConfigError, match="head dim"):
        model_config(n_embd=12, n_head=4)


def test_chat_fraction_zero_disables_the_chat_phase():
    raw = _with(lambda r: r["profiles"]["smoke"]["train"].update(chat_fraction=0))
    assert parse_params(raw).profile("smoke").train.chat_fraction == 0.0


MODEL_AND_OPTIMIZER = {
    "model": (
        "n_layer",
        "n_head",
        "n_embd",
        "block_size",
        "rope_theta",
        "mlp_ratio",
        "dropout",
        "conv_kernel",
        "copy_dim",
        "copy_continue",
        "span_dim",
        "span_weight",
        "qk_norm",
        "activation",
    ),
    "train": (
        "optimizer",
        "lr",
        "min_lr",
        "warmup_steps",
        "weight_decay",
        "beta1",
        "beta2",
        "grad_clip",
        "compile",
        "steps",
        "batch_size",
        "grad_accum",
        "dtype",
        "chat_fraction",
    ),
}


@pytest.mark.parametrize("profile", ["smoke", "train"])
def test_every_model_and_optimizer_setting_is_written_in_params_yaml(profile):
    for part, names in MODEL_AND_OPTIMIZER.items():
        written = RAW["profiles"][profile][part]
        assert set(names) <= set(written), sorted(set(names) - set(written))
    model = load_params(REPO / "params.yaml").profile(profile).model
    raw = RAW["profiles"][profile]["model"]
    assert (model.rope_theta, model.mlp_ratio, model.dropout, model.vocab_size) == (10000.0, 4, raw["dropout"], 256)


def test_only_operational_settings_have_code_defaults():
    """One home for each number: a dataclass default only where params.yaml may leave the key
    out (operational settings that change no weights) or where it is no setting (vocab_size)."""
    defaults = {
        cls.__name__: {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        }
        for cls in (ModelConfig, TrainConfig, DataConfig, GroundedConfig)
    }
    assert defaults == {
        "ModelConfig": {"vocab_size"},
        "TrainConfig": {"log_every"},
        "DataConfig": {"hub_timeout_s"},
        "GroundedConfig": set(),
    }


def test_operational_settings_may_be_left_out():
    def drop(r):
        r["profiles"]["smoke"]["train"].pop("log_every", None)
        r["data"].pop("hub_timeout_s")

    params = parse_params(_with(drop))
    assert params.profile("smoke").train.log_every == 10 and params.data.hub_timeout_s == 5.0


def test_an_error_is_one_line_naming_file_key_expected_and_found():
    with pytest.raises(ConfigError) as err:
        parse_params(_with(lambda r: r["profiles"]["smoke"]["model"].update(copy_continue="yes")), "params.yaml")
    assert str(err.value) == "params.yaml: profiles.smoke.model.copy_continue: expected bool, got str 'yes'"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda r: r["profiles"]["smoke"]["model"].update(activation="swish"),
            "profiles.smoke.model.activation: expected 'gelu' or 'relu2', got str 'swish'",
        ),
        (
            lambda r: r["profiles"]["smoke"]["model"].update(conv_kernel=-1),
            "profiles.smoke.model.conv_kernel: must be >= 0, got -1 (0 = no convolution)",
        ),
        (
            lambda r: r["profiles"]["train"]["model"].update(dropout=1.0),
            "profiles.train.model.dropout: must be in [0, 1)",
        ),
        (lambda r: r["grounded"].update(k=0), "grounded.k: must be >= 1, got 0"),
        (lambda r: r["profiles"]["smoke"]["train"].update(min_lr=0.5), "profiles.smoke.train.min_lr: must be <= lr"),
        (lambda r: r["profiles"]["smoke"]["train"].update(lr=float("nan")), "train.lr: must be a finite number"),
        (lambda r: r["profiles"]["smoke"]["train"].update(optimizer="sgd"), "train.optimizer: expected 'adamw' or"),
        (lambda r: r["profiles"].clear(), "params.yaml: profiles: needs at least 1 entry"),
        (lambda r: r.update(profiles=["smoke"]), "params.yaml: profiles: expected a mapping, got list"),
        (lambda r: r["p_train"].update({3: 0.0}), "params.yaml: p_train.3: expected str, got int 3"),
        # a misspelt key: the unknown one is named first (its missing twin is counted)
        (
            lambda r: r["profiles"]["smoke"]["model"].update(n_layers=r["profiles"]["smoke"]["model"].pop("n_layer")),
            "profiles.smoke.model.n_layers: unknown key (known: n_layer, ",
        ),
    ],
)
def test_messages_say_what_was_expected(mutate, message):
    with pytest.raises(ConfigError) as err:
        parse_params(_with(mutate), "params.yaml")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_configs_built_in_code_are_checked_the_same_way():
    with pytest.raises(ConfigError, match=r"^steps: must be > 0, got 0$"):
        train_config(steps=0)
    with pytest.raises(ConfigError, match="^colour: unknown key"):
        model_config(colour="red")
    with pytest.raises(ConfigError, match="^n_layer: expected int, got str '2'"):
        dataclasses.replace(model_config(), n_layer="2")
    assert dataclasses.replace(train_config(), lr=1).lr == 1.0  # int widens to float
    with pytest.raises(dataclasses.FrozenInstanceError):
        model_config().n_layer = 3


def test_saved_model_configs_fill_the_legacy_keys():
    old = {k: TINY_MODEL[k] for k in ("n_layer", "n_head", "n_embd", "block_size")}  # a config from before them
    cfg = saved_model_config(old)
    assert {k: getattr(cfg, k) for k in LEGACY_MODEL_CONFIG} == LEGACY_MODEL_CONFIG and cfg.vocab_size == 256
    assert saved_model_config({**TINY_MODEL, "vocab_size": 256}) == model_config()
    with pytest.raises(ConfigError, match=r"^model_config\.n_layer: expected int, got str '2'$"):
        saved_model_config({**old, "n_layer": "2"})
    with pytest.raises(ConfigError, match="^model_config: expected a mapping, got list"):
        saved_model_config([1])

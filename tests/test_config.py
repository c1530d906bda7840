"""Tests for the params.yaml loader: every bad value fails with one line naming the key."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ganlab.core.config import ConfigError, Params, TrainConfig, flatten, load_params, parse_params

from .scratch import ROOT


def test_repo_params_load():
    params = load_params(ROOT / "params.yaml")
    assert params.train.model in ("mlp", "mlp_bn", "dcgan")
    assert params.prepare.source == "auto"


@pytest.mark.parametrize(
    "raw, words",
    [
        ({"train": {"iteratons": 5}}, ["train.iteratons", "did you mean train.iterations"]),
        ({"trian": {}}, ["trian", "did you mean train"]),
        ({"train": {"model": "gan"}}, ["train.model", "'gan'", "mlp, mlp_bn, dcgan"]),
        ({"train": {"iterations": "many"}}, ["train.iterations", "integer"]),
        ({"train": {"iterations": 0}}, ["train.iterations", ">= 1"]),
        ({"train": {"batch_size": 100000}}, ["train.batch_size", "60000"]),
        ({"train": {"resume": "yes"}}, ["train.resume", "true or false"]),
        ({"train": {"ema": 1.5}}, ["train.ema", "0 (off) or a decay in (0, 1)"]),
        ({"train": {"ema": 0, "keep": "best_ema"}}, ["train.keep", "or set train.ema"]),
        ({"train": {"label_smoothing": 0.5}}, ["train.label_smoothing", "a number in [0, 0.5)"]),
        ({"train": {"d_learning_rate": 0}}, ["train.d_learning_rate", "null or in (0, 1)"]),
        ({"train": {"g_top_k": 0}}, ["train.g_top_k", "a share in (0, 1]"]),
        ({"train": {"latent_modes": 1}}, ["train.latent_modes", "0 (z alone) or an integer in [2, "]),
        ({"train": {"z_dim": 8, "latent_modes": 10}}, ["train.latent_modes", "in [2, train.z_dim = 8]"]),
        ({"train": {"model": "cdcgan", "latent_modes": 10}}, ["train.latent_modes", "null or 0 for cdcgan"]),
        ({"train": {"latent_modes": 10, "info_weight": -1}}, ["train.info_weight", "a weight in (0, 10]"]),
        ({"train": {"mixed_precision": "on"}}, ["train.mixed_precision", "auto, off, float16, bfloat16"]),
        ({"train": {"sample_interval": 7, "checkpoint_interval": 10}}, ["train.checkpoint_interval", "multiple"]),
        ({"prepare": {"source": "internet"}}, ["prepare.source", "auto, cache, download, package"]),
        ({"prepare": {"mirrors": "http://x"}}, ["prepare.mirrors", "list"]),
        ({"evaluate": {"n_samples": 5}}, ["evaluate.n_samples"]),
    ],
)
def test_bad_values_name_the_key(raw, words):
    with pytest.raises(ConfigError) as err:
        parse_params(raw)
    msg = str(err.value)
    assert "\n" not in msg
    for word in words:
        assert word in msg


def test_an_unquoted_off_means_off():
    # What `dvc exp run -S train.mixed_precision=off` writes: YAML 1.1 reads it as false.
    raw = yaml.safe_load("train:\n  mixed_precision: off\n")
    assert raw["train"]["mixed_precision"] is False
    assert parse_params(raw).train.mixed_precision == "off"
    with pytest.raises(ConfigError, match="train.mixed_precision = True"):
        parse_params({"train": {"mixed_precision": True}})


def test_broken_yaml(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  model: [mlp\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(path)


def test_replace_and_flatten():
    params = Params()
    small = dataclasses.replace(params.train, iterations=10, sample_interval=5, checkpoint_interval=5)
    flat = flatten(dataclasses.replace(params, train=small))
    assert flat["train.iterations"] == 10 and "prepare.mirrors" in flat


SECTIONS = {f.name: f.type for f in dataclasses.fields(Params)}
anything = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                     st.text(max_size=8), st.lists(st.integers(), max_size=2))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(list(SECTIONS)),
                       st.dictionaries(st.text(min_size=1, max_size=12) | st.sampled_from(
                           ["model", "iterations", "batch_size", "source", "n_samples", "seed", "resume",
                            "learning_rate", "sample_interval", "mirrors", "epochs", "max_runs"]),
                           anything, max_size=3), max_size=3))
def test_loader_never_crashes_untidily(raw):
    """Any mapping either loads into a valid config or fails with one ConfigError line."""
    try:
        params = parse_params(raw)
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("params.yaml")
    else:
        yaml.safe_dump(flatten(params))  # loaded values are plain data


def test_a_checkpoint_interval_off_the_models_sample_interval_is_refused():
    from ganlab.nets.specs import resolve

    with pytest.raises(ConfigError) as err:
        resolve(TrainConfig(model="mlp", checkpoint_interval=500))  # mlp samples every 1,000
    assert "train.checkpoint_interval = 500" in str(err.value) and "1000" in str(err.value)
    assert resolve(TrainConfig(model="dcgan", checkpoint_interval=600)).checkpoint_interval == 600


def test_the_code_and_its_reader_resolve_by_model_and_refuse_what_cannot_be():
    from ganlab.nets.specs import resolve

    def code(**kw):
        r = resolve(TrainConfig(**kw))
        return r.latent_modes, r.info_weight

    assert code(model="dcgan_tuned") == (10, 1.0) and code(model="dcgan") == code(model="mlp") == (0, 0.0)
    assert code(model="dcgan_tuned", latent_modes=0) == (0, 0.0)  # no code: no reader either
    assert code(model="dcgan", latent_modes=4, info_weight=0.5) == (4, 0.5)
    for kw, words in [(dict(model="mlp", info_weight=1.0), "train.info_weight = 1.0 is not allowed without a code"),
                      (dict(model="dcgan_tuned", z_dim=8), "(dcgan_tuned's 10) is not allowed with train.z_dim = 8")]:
        with pytest.raises(ConfigError) as err:
            resolve(TrainConfig(**kw))
        assert words in str(err.value) and "\n" not in str(err.value)


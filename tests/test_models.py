"""Builders produce the seeds' architectures with the right shapes and sizes; saving is atomic."""

from pathlib import Path

import keras
import numpy as np
import pytest

from ganlab.core.files import StageError
from ganlab.nets import inference, models, saving
from ganlab.nets.layers import FusedBatchNormalization, UpConv2D
from ganlab.nets.specs import SPECS

from .conftest import upconv_and_layer_pair


def test_every_named_model_has_its_builders():
    assert list(models.BUILDERS) == list(SPECS)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_shapes(name):
    g, d = models.build(name, z_dim=100)
    z = np.random.default_rng(0).standard_normal((5, 100)).astype(np.float32)
    x = models.draw(g, z)
    assert x.shape == (5, 28, 28, 1)
    assert -1 <= x.min() and x.max() <= 1  # tanh, like the rescaled data
    judged = d({"image": x, "digit": models.grid_digits(5)}) if models.is_conditional(d) else d(x)
    assert judged.shape == (5, 1)
    assert models.is_conditional(g) == SPECS[name].conditional


def test_predict_in_batches_gives_kerass_predict_for_a_dict_of_inputs():
    g, _ = models.build("cdcgan", z_dim=100, width=0.25)
    z = np.random.default_rng(0).standard_normal((10, 100)).astype(np.float32)
    inputs = models.g_input(z, models.grid_digits(10))
    got = inference.predict(g, inputs, batch=4)  # three calls, the last of two rows
    np.testing.assert_allclose(got, g.predict(inputs, verbose=0), atol=1e-6)
    assert got.shape == (10, 28, 28, 1)


def test_the_conditional_generator_draws_what_the_digit_says(tmp_path):
    g, d = models.build("cdcgan", z_dim=100, width=0.25)
    z = np.random.default_rng(0).standard_normal((4, 100)).astype(np.float32)
    threes, sevens = models.draw(g, z, np.full(4, 3)), models.draw(g, z, np.full(4, 7))
    assert not np.allclose(threes, sevens), "the digit does not reach G"
    real = np.zeros((2, 28, 28, 1), np.float32)
    assert not np.allclose(d({"image": real, "digit": np.array([[1], [8]])}).numpy()[0],
                           d({"image": real, "digit": np.array([[8], [8]])}).numpy()[0]), "the digit does not reach D"
    saving.save_model(g, tmp_path / "g.keras")
    again = saving.load_model(tmp_path / "g.keras")
    assert models.is_conditional(again)
    np.testing.assert_allclose(models.draw(again, z, np.full(4, 3)), threes, atol=1e-6)


def test_book_mlp_sizes():
    g, d = models.build("mlp", z_dim=100)
    # Dense(100->128) + Dense(128->784); D: Dense(784->128) + Dense(128->1), as in the chapter.
    assert g.count_params() == 100 * 128 + 128 + 128 * 784 + 784
    assert d.count_params() == 784 * 128 + 128 + 128 + 1


def test_dcgan_matches_blog_summary():
    g, d = models.build("dcgan", z_dim=100)
    dense = [layer for layer in g.layers if layer.name.startswith("dense")][0]
    assert dense.count_params() == 633472  # the blog's model.summary()
    convs = [layer.count_params() for layer in d.layers if layer.name.startswith("conv2d")]
    assert convs == [544, 32832, 131200]


def test_width_scales_hidden_layers():
    g, _ = models.build("mlp", z_dim=10, width=0.5)
    assert g.layers[0].units == 64


def test_failed_model_write_keeps_the_old_file_and_leaves_no_partial(tmp_path, monkeypatch):
    import errno

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    dest = tmp_path / "generator.keras"
    saving.save_model(model, dest)
    good = dest.read_bytes()

    def full_disk(self, path, *args, **kwargs):
        Path(path).write_bytes(b"PK half a zip")  # part of the file is on disk when the write fails
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(keras.Model, "save", full_disk)
    with pytest.raises(OSError):
        saving.save_model(model, dest)
    assert dest.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ["generator.keras"]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing"])
def test_broken_model_file_is_refused_with_one_line(tmp_path, damage):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    path = tmp_path / "generator.keras"
    saving.save_model(model, path)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "garbage":
        path.write_bytes(b"not a model at all" * 10)
    else:
        path.unlink()
    with pytest.raises(StageError) as err:
        saving.load_model(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    # The cheapest repair, never `dvc repro -f` (which retrains everything).
    assert f"dvc checkout --force {path.parent}" in str(err.value) and "repro -f" not in str(err.value)


@pytest.mark.parametrize("size, c_in, c_out", [(7, 8, 6), (5, 3, 4)])
def test_upconv_equals_upsampling_then_conv(size, c_in, c_out):
    x, up, pair = upconv_and_layer_pair(size, c_in, c_out)
    want = np.asarray(pair(x))
    assert want.shape == (3, 2 * size, 2 * size, c_out)
    # Relative too: outputs reach ~30, and the two sum 128 float32 products in different orders
    # (on AVX-512 cores oneDNN's order differed by 1.7e-5 at 27.86, 7e-7 relative).
    np.testing.assert_allclose(np.asarray(up(x)), want, rtol=1e-5, atol=1e-5)


def _batch_norm_pass(layer, x: np.ndarray, dtype: str) -> list[np.ndarray]:
    """A training-mode pass with its gradients and moving averages, then an inference-mode pass."""
    import tensorflow as tf

    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(tf.cast(xt, dtype), training=True)
        loss = tf.reduce_sum(tf.cast(y, "float32") * tf.sin(tf.cast(y, "float32")))
    grads = tape.gradient(loss, [xt, *layer.trainable_variables])
    stats = [layer.moving_mean, layer.moving_variance]
    return [np.asarray(tf.cast(v, "float32")) for v in (y, *grads, *stats, layer(xt, training=False))]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fused_batch_norm_computes_keras_batch_norm(dtype):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((16, 6, 6, 5)) * 3 + 1).astype(np.float32)
    policy = "float32" if dtype == "float32" else "mixed_bfloat16"
    stock = keras.layers.BatchNormalization(momentum=0.8, dtype=policy)
    fused = FusedBatchNormalization(momentum=0.8, dtype=policy)
    start = [rng.standard_normal(5), rng.standard_normal(5), rng.standard_normal(5), rng.uniform(0.5, 2, 5)]
    for layer in (stock, fused):
        layer.build(x.shape)
        layer.set_weights(start)
    tol = 1e-4 if dtype == "float32" else 2e-2
    for want, got in zip(_batch_norm_pass(stock, x, dtype), _batch_norm_pass(fused, x, dtype), strict=True):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    # ... and through the fused kernel, not Keras' own ops; in inference, or where the kernel would not
    # compute Keras' function (float64, a tiny epsilon), through Keras' own.
    def kernels(layer, v, training=True):
        graph = tf.function(lambda t: layer(t, training=training)).get_concrete_function(tf.constant(v)).graph
        return {op.type for op in graph.get_operations()}

    assert "FusedBatchNormV3" in kernels(fused, x)
    assert "FusedBatchNormV3" not in kernels(fused, x, training=False)
    assert "FusedBatchNormV3" not in kernels(FusedBatchNormalization(dtype="float64"), x.astype(np.float64))
    assert "FusedBatchNormV3" not in kernels(FusedBatchNormalization(epsilon=1e-6), x)


def test_dcgan_generator_keeps_the_blogs_parameters_and_saves(tmp_path):
    g, _ = models.build("dcgan", z_dim=100)
    assert g.count_params() == 1_028_289 + 384  # the blog's summary: trainable + BN moving statistics
    z = np.random.default_rng(0).standard_normal((2, 100)).astype(np.float32)
    saving.save_model(g, tmp_path / "g.keras")
    np.testing.assert_allclose(np.asarray(saving.load_model(tmp_path / "g.keras")(z)), np.asarray(g(z)), atol=1e-6)


def test_a_latent_with_modes_feeds_g_z_and_the_one_hot_of_its_mode():
    g, _ = models.build("dcgan", z_dim=16, width=0.25, modes=10)
    z = np.random.default_rng(0).standard_normal((20_000, 16)).astype(np.float32)
    latent = keras.Model(g.inputs, g.get_layer("latent").output).predict(z, batch_size=5000, verbose=0)
    mode = np.asarray(models.latent_mode(z, 10))
    np.testing.assert_array_equal(mode, z[:, :10].argmax(axis=1))
    np.testing.assert_array_equal(latent[:, :16], z)
    blended = ~np.isclose(latent[:, 16:], np.eye(10)[mode], atol=1e-5).all(axis=1)
    assert blended.sum() <= 5  # one mode's one-hot; a blend of two about 0.4 times in 20,000 (models._latent)
    assert np.bincount(mode, minlength=10).min() > 1_800  # each of the ten as likely
    # The code's only weights are the frozen pick, the same in every build (a checkpoint, the EMA copy);
    # G's first layer reads 10 more numbers.
    plain = models.build("dcgan", z_dim=16, width=0.25)[0]
    assert len(g.trainable_weights) == len(plain.trainable_weights) and g.get_layer("latent_mode").trainable is False
    assert g.trainable_weights[0].shape == (26, plain.trainable_weights[0].shape[1])
    with pytest.raises(ValueError, match="takes 2 to 16 modes, not 17"):
        models.build("dcgan", 16, 0.25, modes=17)


def test_with_code_sets_the_mode_and_keeps_the_draw():
    z = np.random.default_rng(3).standard_normal((500, 12)).astype(np.float32)
    for value in (0, 5):
        moved = models.with_code(z, 6, value)
        assert (np.asarray(models.latent_mode(moved, 6)) == value).all()
        np.testing.assert_array_equal(np.sort(moved[:, :6], 1), np.sort(z[:, :6], 1))  # the same numbers
        assert ((moved != z).sum(1) <= 2).all()  # two of them swapped, no more
        np.testing.assert_array_equal(moved[:, 6:], z[:, 6:])
    already = z[:, :6].argmax(1) == 2
    np.testing.assert_array_equal(models.with_code(z, 6, 2)[already], z[already])


def test_code_values_reads_the_codes_size_from_a_saved_generator(tmp_path):
    g, _ = models.build("mlp", z_dim=8, width=0.1, modes=4)
    saving.save_model(g, tmp_path / "g.keras")
    assert models.code_values(saving.load_model(tmp_path / "g.keras")) == 4
    assert models.code_values(models.build_generator("mlp", 8, 0.1)) == 0
    assert models.code_values(models.build_generator("cdcgan", 8, 0.25)) == 0


@pytest.mark.slow
@pytest.mark.parametrize("name, modes", [("dcgan", 0), ("cdcgan", 0), ("dcgan", 4)])
def test_a_saved_generator_loads_in_plain_keras_without_ganlab(name, modes, tmp_path):
    import os
    import subprocess
    import sys

    from ganlab.nets.saving import save_model

    g, _ = models.build(name, z_dim=8, width=0.25, modes=modes)
    stock = models.portable(name, g, 8, 0.25, modes)
    assert not any(isinstance(layer, (UpConv2D, FusedBatchNormalization)) for layer in stock.layers)
    save_model(stock, tmp_path / "generator.keras")
    z = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "want.npy", models.draw(g, z))
    # A fresh Python that cannot import ganlab, as on a machine that only downloaded the model.
    script = (
        "import sys, numpy as np; sys.modules['ganlab'] = None; import keras\n"
        f"g = keras.saving.load_model('{tmp_path}/generator.keras')\n"
        f"z = np.load('{tmp_path}/z.npy')\n"
        "x = {'z': z, 'digit': (np.arange(len(z)) % 10).reshape(-1, 1).astype('int32')} "
        "if len(g.inputs) == 2 else z\n"
        f"np.save('{tmp_path}/got.npy', g.predict(x, verbose=0))\n")
    out = subprocess.run([sys.executable, "-c", script], env={**os.environ, "KERAS_BACKEND": "tensorflow"},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "got.npy"), np.load(tmp_path / "want.npy"), rtol=1e-5, atol=1e-5)

"""Quality metrics and D's confusion matrix on hand-built cases."""

import numpy as np
import pytest

from ganlab.evaluation import judge as ev
from ganlab.evaluation import metrics


def test_confusion_matrix_arithmetic():
    d_real = np.array([0.9, 0.6, 0.5, 0.2])  # 3 judged real (>= 0.5), 1 judged fake
    d_fake = np.array([0.1, 0.7, 0.3, 0.0, 0.49])  # 1 judged real
    cm = metrics.confusion(d_real, d_fake)
    assert (cm["tp"], cm["fn"], cm["tn"], cm["fp"]) == (3, 1, 4, 1)
    assert cm["accuracy"] == pytest.approx(7 / 9)
    assert cm["precision"] == pytest.approx(3 / 4)
    assert cm["recall"] == pytest.approx(3 / 4)
    assert cm["f1"] == pytest.approx(0.75)
    assert cm["mean_d_real"] == pytest.approx(0.55) and cm["mean_d_fake"] == pytest.approx(0.318)


def test_frechet_distance_zero_for_identical_and_grows_with_shift():
    x = np.random.default_rng(0).standard_normal((2000, 8))
    assert metrics.frechet_distance(x, x) == pytest.approx(0, abs=1e-6)
    near, far = metrics.frechet_distance(x, x + 0.5), metrics.frechet_distance(x, x + 2.0)
    assert near == pytest.approx(8 * 0.25, rel=1e-3)  # |mu1 - mu2|^2, same covariance
    assert far > near > 0


def onehot(labels, n=10):
    return np.eye(n)[labels] * 0.99 + 0.001


def test_modes_and_kl_on_collapsed_and_uniform_sets():
    uniform = onehot(np.arange(1000) % 10)
    collapsed = onehot(np.array([3] * 995 + [4] * 5))
    assert metrics.modes_covered(uniform) == 10 and metrics.kl_to_uniform(uniform) == pytest.approx(0, abs=1e-9)
    assert metrics.modes_covered(collapsed) == 1  # class 4 has 0.5% < 1%
    assert metrics.kl_to_uniform(collapsed) > 2
    assert metrics.classifier_score(uniform) > 9 > 1.2 > metrics.classifier_score(collapsed)


def test_unsure_share_counts_the_images_no_digit_is_given_090_to():
    sure = onehot(np.arange(10))
    blends = (onehot(np.arange(10)) + onehot((np.arange(10) + 1) % 10)) / 2  # half one digit, half another
    assert metrics.unsure_share(sure) == 0 and metrics.unsure_share(blends) == 1
    assert metrics.unsure_share(np.concatenate([sure, sure, sure, blends])) == pytest.approx(0.25)


def test_manifold_scores_on_known_sets():
    rng = np.random.default_rng(0)
    real = rng.standard_normal((1000, 4))
    same = metrics.manifold(real, rng.standard_normal((1000, 4)), k=3)
    assert same["precision"] > 0.8 and same["recall"] > 0.8
    assert 0.8 < same["density"] < 1.2 and same["coverage"] > 0.8
    # Mode collapse: fakes sit in one small corner of the real manifold -> high precision, low recall.
    collapsed = metrics.manifold(real, rng.standard_normal((1000, 4)) * 0.1, k=3)
    assert collapsed["precision"] > 0.9 and collapsed["recall"] < 0.3 and collapsed["coverage"] < 0.2
    # Fakes far away: none of them.
    far = metrics.manifold(real, rng.standard_normal((1000, 4)) + 20, k=3)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    # Radii given are the radii used; the reference's own give the figures computed without them.
    fakes = rng.standard_normal((300, 4))
    assert metrics.manifold(real, fakes, 3, metrics.kth_radius(real, 3)) == metrics.manifold(real, fakes, 3)
    assert metrics.manifold(real, fakes, 3, np.zeros(len(real)))["precision"] == 0.0


def test_knn_radii_and_scores_are_scipys_distances_in_chunks_and_in_float32():
    """`evaluate` measures the conv features' k-NN distances in float32 (features.embedder), chunk by chunk."""
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(2)
    real, fake = rng.standard_normal((300, 40)), rng.standard_normal((200, 40)) * 1.1
    exact = np.sqrt(np.sort(cdist(real, real, "sqeuclidean"), 1)[:, 3])  # column 0: the point itself
    for dtype in (np.float64, np.float32):
        np.testing.assert_allclose(metrics.kth_radius(real.astype(dtype), 3, chunk=64), exact, rtol=1e-5)
        chunked = metrics.manifold(real.astype(dtype), fake.astype(dtype), 3, chunk=64)
        assert chunked == metrics.manifold(real, fake, 3, chunk=1000)
    assert 0 < chunked["precision"] < 1 and 0 < chunked["coverage"] < 1


def test_grey_images_and_one_repeated_image_score_precision_one_but_cover_nothing():
    """Blank or grey images sit near the origin of the conv features, inside the large balls of a few
    outlying reals, and one real image drawn again and again sits inside its own ball: improved precision
    is 1.0 for both. Coverage tells them from a generator: the share of reals whose ball holds a fake."""
    rng = np.random.default_rng(1)
    # Real features: most on a shell of radius ~4, a few faint ones near the origin with wide balls.
    real = rng.standard_normal((1000, 8))
    real = real / np.linalg.norm(real, axis=1, keepdims=True) * 4 + rng.standard_normal((1000, 8)) * 0.3
    real[:5] = rng.standard_normal((5, 8)) * 0.8
    grey = np.abs(rng.standard_normal((1000, 8))) * 0.05
    repeated = np.repeat(real[500:501], 1000, axis=0)
    for fakes in (grey, repeated):
        m = metrics.manifold(real, fakes, k=3)
        assert m["precision"] == 1.0 and m["recall"] < 0.01
        assert m["coverage"] < 0.02, m
    assert metrics.manifold(real, real[::-1] + rng.standard_normal(real.shape) * 0.05, k=3)["coverage"] > 0.9


def test_interpolation_and_neighbours():
    a, b = np.zeros(3), np.ones(3)
    line = metrics.interpolate(a, b, 5)
    assert line.shape == (5, 3) and np.allclose(line[2], 0.5)
    train = np.random.default_rng(0).uniform(-1, 1, (50, 28, 28, 1)).astype(np.float32)
    idx = metrics.nearest_neighbours(train[[7, 31]] + 0.01, train, chunk=16)
    assert idx.tolist() == [7, 31]


def test_the_stage_work_on_tiny_models(tmp_path):
    """judge, confusion_rows and pictures end to end on untrained tiny models and 40 fake images."""
    import keras

    from ganlab.core.config import EvaluateConfig
    from ganlab.evaluation.classifier import build_classifier
    from ganlab.nets import models

    g, d = models.build("mlp", z_dim=8, width=0.1)
    rng = np.random.default_rng(0)
    x_train = rng.uniform(-1, 1, (40, 28, 28, 1)).astype(np.float32)
    x_test = rng.uniform(-1, 1, (30, 28, 28, 1)).astype(np.float32)
    cfg = EvaluateConfig(n_samples=20, pr_k=2, n_interpolations=2, n_neighbours=3)
    keras.utils.set_random_seed(0)
    metrics, d_real, d_fake = ev.judge(g, d, build_classifier(), x_train, x_test, cfg, z_dim=8)
    cm = metrics["confusion"]
    assert cm["tp"] + cm["fn"] == 20 and cm["tn"] + cm["fp"] == 20 and d_real.shape == d_fake.shape == (20, 1)
    assert set(metrics) == {"confusion", "quality", "reference", "noise", "pixel_gap"}
    assert 0 <= metrics["quality"]["modes_covered"] <= 10 and metrics["quality"]["frechet_distance"] >= 0
    again, _, _ = ev.judge(g, d, build_classifier(), x_train, x_test, cfg, z_dim=8)
    assert again["confusion"] == cm  # same seed, same fakes, same verdicts
    assert "quality_ema" not in metrics
    with_ema, _, _ = ev.judge(g, d, build_classifier(), x_train, x_test, cfg, 8, ema=g)
    assert with_ema["quality_ema"] == with_ema["quality"]  # the same G as its own average: the same z, scores
    assert with_ema["pixel_gap_ema"] == with_ema["pixel_gap"]

    rows = ev.confusion_rows(d_real, d_fake)
    assert list(rows.columns) == ["actual", "predicted"] and len(rows) == 40
    assert (rows.predicted[:20] == "real").sum() == cm["tp"] and (rows.predicted[20:] == "fake").sum() == cm["tn"]

    files = ev.pictures(g, x_train, cm, cfg, 8, tmp_path / "out")
    assert sorted(f.name for f in files) == sorted(["grid_4x4.png", "grid_5x5.png", "grid_10x10.png",
                                                    "interpolation.png", "neighbours.png", "confusion.png"])
    assert all(f.stat().st_size > 0 for f in files)


def test_label_agreement_overall_and_per_digit():
    asked = np.array([0, 0, 1, 1, 2])
    read = np.array([0, 5, 1, 1, 7])
    agree = metrics.label_agreement(asked, read)
    assert agree["overall"] == pytest.approx(3 / 5)
    assert agree["per_digit"] == {"0": 0.5, "1": 1.0, "2": 0.0}


def test_pixel_gap_finds_a_bright_corner_dot_and_only_there():
    rng = np.random.default_rng(0)
    real = rng.uniform(-1, -0.9, (200, 28, 28, 1))
    fakes = real.copy()
    fakes[:, 26, 26, 0] = 0.5  # a dot near the bottom-right corner in every sample
    gap = metrics.pixel_gap(fakes, real)
    assert (gap["at_row"], gap["at_col"]) == (26, 26) and gap["max_abs"] > 1.3
    assert gap["bottom_right_mean_abs"] > 0.1 > max(gap["top_left_mean_abs"], gap["middle_mean_abs"])
    assert metrics.pixel_gap(real, real)["max_abs"] == 0


def test_code_digits_names_each_values_digit_its_share_and_its_unsure_share():
    codes = np.array([5, 0, 5, 2, 0, 5, 0, 2, 0])  # out of order; values 1, 3 and 4 drew nothing
    probs = onehot(np.array([7, 4, 7, 9, 4, 1, 4, 9, 4]))
    probs[1] = (onehot(4) + onehot(9)) / 2  # a blend: unsure, read as 4 (the first of two equal)
    code = metrics.code_digits(codes, probs, 6)
    assert code["digit"] == {"0": 4, "1": -1, "2": 9, "3": -1, "4": -1, "5": 7} and code["distinct_digits"] == 3
    assert code["share"] == {"0": 1.0, "1": 0.0, "2": 1.0, "3": 0.0, "4": 0.0, "5": 0.66667}
    assert code["purity"] == pytest.approx(8 / 9, abs=1e-5)
    assert code["unsure"] == {"0": 0.25, "1": 0.0, "2": 0.0, "3": 0.0, "4": 0.0, "5": 0.0}


def test_a_generator_with_a_code_is_scored_and_drawn_per_value(tmp_path, monkeypatch):
    import keras

    from ganlab.core.config import EvaluateConfig
    from ganlab.evaluation.classifier import build_classifier
    from ganlab.nets import models
    from ganlab.nets.saving import load_model

    keras.utils.set_random_seed(0)
    g, d = models.build("mlp", z_dim=8, width=0.1, modes=4)
    g.save(tmp_path / "g.keras")
    saved = load_model(tmp_path / "g.keras")
    ema = models.build_generator("mlp", 8, 0.1, modes=4)  # other weights: its own fakes, its own figures
    x = np.random.default_rng(0).uniform(-1, 1, (60, 28, 28, 1)).astype(np.float32)
    cfg = EvaluateConfig(n_samples=40, pr_k=2, n_interpolations=2, n_neighbours=3)
    classifier = build_classifier()
    # Untrained, it reads every image as one digit; its last layer 300 times sharper reads them apart.
    kernel, bias = classifier.layers[-1].get_weights()
    classifier.layers[-1].set_weights([kernel * 300, bias])
    m, _, _ = ev.judge(saved, d, classifier, x, x[:50], cfg, 8, ema=ema)
    assert m["code"] != m["code_ema"]
    z = np.random.default_rng(cfg.seed).standard_normal((40, 8)).astype(np.float32)  # judge's z
    for key, net in (("code", saved), ("code_ema", ema)):
        probs = classifier.predict(net.predict(z, verbose=0), verbose=0)
        assert m[key] == metrics.code_digits(z[:, :4].argmax(1), probs, 4)
    assert sorted(m["code"]["digit"]) == ["0", "1", "2", "3"]

    drawn = []
    monkeypatch.setattr(ev, "draw", lambda gen, zs, digits=None: drawn.append(zs) or models.draw(gen, zs, digits))
    files = ev.pictures(saved, x, m["confusion"], cfg, 8, tmp_path / "out")
    picture = keras.utils.load_img(tmp_path / "out/codes.png", color_mode="grayscale")
    assert tmp_path / "out/codes.png" in files and picture.size == (3 * (10 * 30 + 2), 3 * (4 * 30 + 2))
    rows = next(zs for zs in drawn if len(zs) == 40).reshape(4, 10, 8)  # the codes picture's z
    assert [list(np.unique(r[:, :4].argmax(1))) for r in rows] == [[0], [1], [2], [3]]
    np.testing.assert_array_equal(rows[:, :, 4:], np.broadcast_to(rows[0, :, 4:], rows[:, :, 4:].shape))


def test_the_classifiers_features_come_from_one_pass_through_a_saved_classifier(tmp_path):
    import keras
    import tensorflow as tf

    from ganlab.evaluation import classifier as clf
    from ganlab.evaluation.features import feature_model
    from ganlab.nets.inference import predict

    path = tmp_path / "classifier.keras"
    clf.build_classifier().save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(0).uniform(-1, 1, (40, 28, 28, 1)).astype(np.float32)
    features = feature_model(loaded, clf.FEATURES, clf.CONV_FEATURES)
    got = predict(features, x, batch=16)  # in batches, the last one short
    want = [keras.Model(loaded.inputs, loaded.get_layer(name).output).predict(x, verbose=0)
            for name in (clf.FEATURES, clf.CONV_FEATURES)] + [loaded.predict(x, verbose=0)]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    # One pass: the traced call holds the classifier's two convolutions once.
    graph = tf.function(lambda t: features(t, training=False)).get_concrete_function(
        tf.TensorSpec((None, 28, 28, 1))).graph
    assert sum(op.type == "Conv2D" for op in graph.get_operations()) == 2

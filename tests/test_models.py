"""Builders produce the seeds' architectures with the right shapes and sizes."""

import numpy as np
import pytest

from ganlab import models


@pytest.mark.parametrize("name", sorted(models.REGISTRY))
def test_shapes(name):
    g, d = models.build(name, z_dim=100)
    z = np.random.default_rng(0).standard_normal((5, 100)).astype(np.float32)
    x = g(z).numpy()
    assert x.shape == (5, 28, 28, 1)
    assert -1 <= x.min() and x.max() <= 1  # tanh, like the rescaled data
    assert d(x).shape == (5, 1)


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

"""Generator and discriminator builders, one pair per architecture, chosen by name.

Discriminators end in a single float32 logit (D(x) = sigmoid(logit)); the
seeds' final sigmoid moves into the loss, which is the numerically stable
form of the same model. Adding an architecture is one builder pair here and one `ModelSpec` entry in
`ganlab.nets.specs`.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
from keras import layers

from ganlab.nets.inference import predict
from ganlab.nets.layers import FusedBatchNormalization, UpConv2D

IMG_SHAPE = (28, 28, 1)


def _units(n: int, width: float) -> int:
    return max(1, round(n * width))


# `train.latent_modes`: softmax(this x z's first numbers) is one-hot unless the two largest lie within
# about 1e-5. For ten modes the second gets a weight above 1e-5 in about 2 draws in 100,000 (a layer of
# stock Keras is continuous in z, so some sliver must blend; scipy gives the two largest of ten normals
# a gap density of 1.54 at 0).
_MODE_SHARPNESS = 1e6


def _latent(z, z_dim: int, modes: int):
    """z, or with `modes` z joined by the one-hot of its mode: which of z's first `modes` numbers is the
    largest (each mode as likely). A categorical code, as InfoGAN's, that G reads as `cdcgan`'s G reads
    the digit, but drawn from z itself, so every sampler still draws one N(0, I) z. A stock, frozen
    float32 Dense picks and scales z's first numbers and a softmax makes them one-hot, so the saved G
    loads in plain Keras. (A stock layer that only scales, `Rescaling`, needs TensorFlow, which a JAX
    stage runs without: the picking is a Dense, so a GPU's TF32 product rounds z first, and there, by
    estimate, about 2 draws in 1,000 blend the two largest modes.)"""
    if not modes:
        return z
    if not 2 <= modes <= z_dim:
        raise ValueError(f"a latent of {z_dim} numbers takes 2 to {z_dim} modes, not {modes}")
    # Zeros until set: a random initialiser would draw from Keras' seed.
    pick = layers.Dense(modes, use_bias=False, trainable=False, kernel_initializer="zeros", dtype="float32",
                        name="latent_mode")
    onehot = layers.Softmax(dtype="float32", name="latent_onehot")(pick(z))
    pick.set_weights([np.eye(z_dim, modes, dtype=np.float32) * _MODE_SHARPNESS])
    return layers.Concatenate(dtype="float32", name="latent")([z, onehot])


def _generator(z_dim: int, stack: list, modes: int = 0) -> keras.Model:
    """G as `stack` over its latent (`_latent`): the sources' Sequential model when `modes` is 0."""
    if not modes:
        return keras.Sequential([keras.Input((z_dim,)), *stack], name="generator")
    z = keras.Input((z_dim,))
    return keras.Model(z, _apply(stack, _latent(z, z_dim, modes)), name="generator")


def mlp_generator(z_dim: int, width: float = 1.0, modes: int = 0) -> keras.Model:
    """The book's G: Dense(128), LeakyReLU(0.01), Dense(784, tanh), reshaped to 28x28x1."""
    return _generator(z_dim, [
        layers.Dense(_units(128, width)),
        layers.LeakyReLU(negative_slope=0.01),
        layers.Dense(28 * 28, activation="tanh", dtype="float32"),
        layers.Reshape(IMG_SHAPE, dtype="float32"),
    ], modes)


def mlp_discriminator(width: float = 1.0) -> keras.Model:
    """The book's D: Flatten, Dense(128), LeakyReLU(0.01), Dense(1) as a logit."""
    return keras.Sequential(
        [
            keras.Input(IMG_SHAPE),
            layers.Flatten(),
            layers.Dense(_units(128, width)),
            layers.LeakyReLU(negative_slope=0.01),
            layers.Dense(1, dtype="float32"),
        ],
        name="discriminator",
    )


def mlp_bn_generator(z_dim: int, width: float = 1.0, modes: int = 0) -> keras.Model:
    """Keras-GAN's G: Dense 256-512-1024, each LeakyReLU(0.2) then BatchNorm(momentum=0.8)."""
    stack: list = []
    for n in (256, 512, 1024):
        stack += [
            layers.Dense(_units(n, width)),
            layers.LeakyReLU(negative_slope=0.2),
            layers.BatchNormalization(momentum=0.8),
        ]
    stack += [layers.Dense(28 * 28, activation="tanh", dtype="float32"), layers.Reshape(IMG_SHAPE, dtype="float32")]
    return _generator(z_dim, stack, modes)


def mlp_bn_discriminator(width: float = 1.0) -> keras.Model:
    """Keras-GAN's D: Flatten, Dense 512-256 with LeakyReLU(0.2), Dense(1) logit."""
    return keras.Sequential(
        [
            keras.Input(IMG_SHAPE),
            layers.Flatten(),
            layers.Dense(_units(512, width)),
            layers.LeakyReLU(negative_slope=0.2),
            layers.Dense(_units(256, width)),
            layers.LeakyReLU(negative_slope=0.2),
            layers.Dense(1, dtype="float32"),
        ],
        name="discriminator",
    )


def _batch_norm(fused: bool) -> layers.Layer:
    return FusedBatchNormalization() if fused else layers.BatchNormalization()


def _dcgan_g_layers(z_dim: int, width: float, fused: bool) -> list:
    c = _units(128, width)

    def up(filters: int) -> list:
        if fused:
            return [UpConv2D(filters, 4, activation="relu")]
        return [layers.UpSampling2D(), layers.Conv2D(filters, 4, padding="same", activation="relu")]

    return [
        layers.Dense(7 * 7 * c, activation="relu"),
        layers.Reshape((7, 7, c)),
        *up(c),
        _batch_norm(fused),
        *up(_units(64, width)),
        _batch_norm(fused),
        layers.Conv2D(1, 4, padding="same", activation="tanh", dtype="float32"),
    ]


def dcgan_generator(z_dim: int, width: float = 1.0, fused: bool = True, modes: int = 0) -> keras.Model:
    """The blog's G: Dense(7*7*128, relu), 2x (UpSampling, Conv2D(k=4, relu), BN), Conv2D(1, 4, tanh).

    With `fused` (the default) each UpSampling + Conv2D pair is one `UpConv2D` (same weights, same
    outputs, 25/64 of the multiply-adds) and each BatchNorm a `FusedBatchNormalization`. `fused=False`
    builds the blog's stock layers: the benchmark's comparison, and `portable`'s saved G.
    """
    return _generator(z_dim, _dcgan_g_layers(z_dim, width, fused), modes)


def _dcgan_d_layers(width: float, fused: bool) -> list:
    stack: list = []
    for n in (32, 64, 128):
        stack += [layers.Conv2D(_units(n, width), 4, strides=2, padding="same", activation="relu"),
                  _batch_norm(fused)]
    return stack + [
        layers.Flatten(),
        layers.Dense(_units(256, width), activation="relu"),
        layers.Dropout(0.25),
        layers.Dense(1, dtype="float32"),
    ]


def dcgan_discriminator(width: float = 1.0, fused: bool = True) -> keras.Model:
    """The blog's D: Conv2D 32/64/128 (k=4, s=2, relu) each with BN, Dense(256), Dropout(0.25), Dense(1);
    `fused` as for G."""
    return keras.Sequential([keras.Input(IMG_SHAPE), *_dcgan_d_layers(width, fused)], name="discriminator")


def _apply(stack: list, x):
    for layer in stack:
        x = layer(x)
    return x


def _one_hot(digit):
    """The digit (batch, 1) as a one-hot (batch, 10): a frozen identity embedding, a plain Keras layer
    that safe mode loads. One-hot, as keras.io's conditional GAN, rather than a learned embedding: an
    embedding starts at +-0.05, and Adam at 2e-4 moves it too slowly for the digit to count by 900
    iterations (label agreement 11%, chance, at iteration 300 while G already drew digits)."""
    return layers.Flatten()(layers.Embedding(10, 10, embeddings_initializer="identity", trainable=False)(digit))


def cdcgan_generator(z_dim: int, width: float = 1.0, fused: bool = True) -> keras.Model:
    """The blog's G conditioned on the digit, as keras.io's conditional GAN: the one-hot digit joined
    to z. Inputs `z` (z_dim floats) and `digit` (one int in 0-9)."""
    z = keras.Input((z_dim,), name="z")
    digit = keras.Input((1,), dtype="int32", name="digit")
    out = _apply(_dcgan_g_layers(z_dim, width, fused), layers.Concatenate()([z, _one_hot(digit)]))
    return keras.Model({"z": z, "digit": digit}, out, name="generator")


def cdcgan_discriminator(width: float = 1.0, fused: bool = True) -> keras.Model:
    """The blog's D conditioned on the digit, as keras.io's conditional GAN: the one-hot digit spread
    over ten 28x28 planes joined to the image as channels. Inputs `image` and `digit`."""
    image = keras.Input(IMG_SHAPE, name="image")
    digit = keras.Input((1,), dtype="int32", name="digit")
    planes = layers.UpSampling2D(IMG_SHAPE[:2])(layers.Reshape((1, 1, 10))(_one_hot(digit)))
    out = _apply(_dcgan_d_layers(width, fused), layers.Concatenate()([image, planes]))
    return keras.Model({"image": image, "digit": digit}, out, name="discriminator")


def mode_reader(name: str, modes: int, width: float = 1.0) -> keras.Model:
    """InfoGAN's Q for `train.info_weight`: reads back from G's image which of the latent's `modes` drew it,
    as `modes` logits. Of the family of architecture `name`'s D, without BatchNorm or Dropout (it only ever
    runs in G's step, on fakes), so it holds no state but its weights: the DCGANs' convolutions (about as
    many FLOPs as D, some 5% of an iteration), a Dense for the MLPs (whose JAX step runs 20 iterations
    a call, where XLA's CPU convolutions run slowly)."""
    stack: list = [keras.Input(IMG_SHAPE)]
    if name in UPCONV:
        for n in (32, 64, 128):
            stack.append(layers.Conv2D(_units(n, width), 4, strides=2, padding="same", activation="relu"))
    stack += [layers.Flatten(), layers.Dense(_units(256, width), activation="relu"),
              layers.Dense(modes, dtype="float32")]
    return keras.Sequential(stack, name="mode_reader")


def latent_mode(z, modes: int):
    """z's mode, the categorical code G reads (`_latent`): the index of the largest of z's first `modes`
    numbers, as the latent's own layers pick it."""
    return keras.ops.argmax(z[:, :modes], axis=-1)


def code_values(generator: keras.Model) -> int:
    """How many values the latent's code of a (saved or built) G takes: `train.latent_modes`, 0 without."""
    names = {layer.name: layer for layer in generator.layers}
    return int(names["latent_mode"].units) if "latent_mode" in names else 0


def with_code(z: np.ndarray, modes: int, value: int) -> np.ndarray:
    """z with `value` made its mode by swapping z's largest of the first `modes` numbers into place: a
    draw as likely under N(0, I) as z, whose code is `value` and whose other numbers are z's."""
    z = np.array(z, np.float32, copy=True)
    rows, top = np.arange(len(z)), np.asarray(latent_mode(z, modes))
    z[rows, top], z[rows, value] = z[rows, value], z[rows, top]
    return z


# The models built of `ganlab.nets.layers`' fused layers (their builders take `fused`).
UPCONV = ("dcgan", "dcgan_tuned", "cdcgan")
# One builder pair per name of `ganlab.nets.specs.SPECS` (tests/test_models.py holds the two lists equal).
BUILDERS: dict[str, tuple[Callable[..., keras.Model], Callable[..., keras.Model]]] = {
    "mlp": (mlp_generator, mlp_discriminator),
    "mlp_bn": (mlp_bn_generator, mlp_bn_discriminator),
    "dcgan": (dcgan_generator, dcgan_discriminator),
    "dcgan_tuned": (dcgan_generator, dcgan_discriminator),  # the same layers, trained otherwise (specs)
    "cdcgan": (cdcgan_generator, cdcgan_discriminator),
}


def weights_digest(*nets: keras.Model) -> str:
    """A short hash of every weight of `nets`: the same model, whatever file or process holds it."""
    import hashlib

    h = hashlib.sha256()
    for net in nets:
        for w in net.weights:
            h.update(np.asarray(w).tobytes())
    return h.hexdigest()[:16]


def is_conditional(model: keras.Model) -> bool:
    """Whether `model` also takes the digit (a `cdcgan` G or D, saved or not)."""
    return any(t.name == "digit" for t in model.inputs)


def grid_digits(n: int) -> np.ndarray:
    """Digits 0-9 in turn, shape (n, 1): what a conditional G draws when none are asked for."""
    return (np.arange(n) % 10).astype(np.int32).reshape(n, 1)


def g_input(z, digits=None):
    """What G takes: z alone, or with the digits (one per z) for a conditional G, named as its Inputs.
    (The served model builds the same dict itself: it runs without this package.)"""
    return z if digits is None else {"z": z, "digit": digits}


def d_input(images, digits=None):
    """What D takes: the images alone, or with their digits for a conditional D, named as its Inputs."""
    return images if digits is None else {"image": images, "digit": digits}


def draw(generator: keras.Model, z: np.ndarray, digits: np.ndarray | None = None, batch_size: int = 1000):
    """G's images for `z` as a numpy array; a conditional G draws `digits` (by default 0-9 in turn)."""
    if not is_conditional(generator):
        return predict(generator, z, batch_size)
    digits = grid_digits(len(z)) if digits is None else np.asarray(digits, np.int32).reshape(-1, 1)
    return predict(generator, g_input(z, digits), batch_size)


def _stock_layers(name: str, fused: bool) -> dict:
    """The builder's keyword for `fused=False`; only the DCGANs' builders take it."""
    return {} if fused or name not in UPCONV else {"fused": False}


def build_generator(name: str, z_dim: int, width: float = 1.0, fused: bool = True, modes: int = 0) -> keras.Model:
    """G of architecture `name`; `fused=False` gives the DCGAN's G the blog's stock layers instead of
    `UpConv2D` and `FusedBatchNormalization` (the same function); with `modes` G also reads a categorical
    code of that many values drawn from z (`_latent`; unconditional Gs only)."""
    kwargs = _stock_layers(name, fused) | ({"modes": modes} if modes else {})
    return BUILDERS[name][0](z_dim, width, **kwargs)


def build(name: str, z_dim: int, width: float = 1.0, fused: bool = True,
          modes: int = 0) -> tuple[keras.Model, keras.Model]:
    """Return (generator, discriminator) for architecture `name` (`build_generator` says what `fused` and
    `modes` do to G, and `fused` to the DCGANs' D; `fused=False` is the benchmark's comparison)."""
    return build_generator(name, z_dim, width, fused, modes), BUILDERS[name][1](width, **_stock_layers(name, fused))


def portable(name: str, generator: keras.Model, z_dim: int, width: float = 1.0, modes: int = 0) -> keras.Model:
    """`generator` with stock Keras layers only (each `UpConv2D` as the blog's UpSampling2D + Conv2D, each
    `FusedBatchNormalization` as Keras' own), the same weights and outputs: saved, it loads in plain
    Keras, without this package."""
    if name not in UPCONV:
        return generator
    stock = build_generator(name, z_dim, width, fused=False, modes=modes)
    stock.set_weights(generator.get_weights())
    return stock

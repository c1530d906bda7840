"""Custom Keras layers of the DCGANs; importing this module registers them for loading. Each computes
the function of stock Keras layers, faster: `models.portable` swaps the stock ones back into G."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

# How UpSampling2D(2) followed by a 4-tap 'same' convolution reads its input along one axis: the
# output at 2p (even) takes x[p-1], x[p], x[p+1] with taps w0, w1+w2, w3, and the output at 2p+1
# takes x[p], x[p+1] with w0+w1, w2+w3. Laid out as one 5-tap transposed-convolution kernel
# (stride 2, cropped by 2 before and 1 after) that is [w3, w2+w3, w1+w2, w0+w1, w0].
_UP4_TO_T5 = np.array([[0, 0, 0, 1], [0, 0, 1, 1], [0, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]], np.float32)
# The same, as two 3-tap kernels over x[p-1], x[p], x[p+1]: one for the even outputs, one for the odd.
_UP4_TO_EVEN3 = np.array([[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]], np.float32)
_UP4_TO_ODD3 = np.array([[0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1]], np.float32)


@keras.saving.register_keras_serializable(package="ganlab")
class UpConv2D(layers.Conv2D):
    """UpSampling2D(2) then Conv2D(filters, 4, padding="same"), the same function computed with fewer
    multiply-adds: on TensorFlow one strided transposed convolution (25 per 2x2 output block instead
    of 64), on JAX one sub-pixel convolution (36, of which 25 are not zero).

    The weight is the blog's 4x4 kernel, so parameter counts and checkpoints are the blog's; the
    kernel of either form is built from it in every call (tests hold both equal to the layer pair).
    """

    def __init__(self, filters: int, kernel_size=4, **kwargs):
        kwargs.pop("padding", None)
        if kernel_size not in (4, (4, 4), [4, 4]):
            raise ValueError("UpConv2D is exact for 4x4 kernels only")
        super().__init__(filters, 4, padding="same", **kwargs)

    def call(self, inputs):
        # XLA's CPU backend runs a transposed convolution (a convolution of a zero-dilated input) about
        # 7x slower than a plain one of the same function (docs/benchmarks.md); oneDNN runs it fast.
        y = self._sub_pixel(inputs) if keras.backend.backend() == "jax" else self._transposed(inputs)
        if self.use_bias:
            y = y + self.bias
        return self.activation(y) if self.activation is not None else y

    def _transposed(self, inputs):
        m = ops.convert_to_tensor(_UP4_TO_T5, dtype=self.kernel.dtype)
        # conv_transpose wants (rows, cols, out, in); the stored kernel is (rows, cols, in, out).
        kernel = ops.einsum("au,bv,uvio->aboi", m, m, self.kernel)
        return ops.conv_transpose(inputs, kernel, strides=2, padding="valid")[:, 2:-1, 2:-1, :]

    def _sub_pixel(self, inputs):
        """Each of the four output phases (row, column even or odd) as a 3x3 convolution of the input
        padded by one, all four in one convolution with 4x the filters, then interleaved."""
        even, odd = (ops.convert_to_tensor(m, dtype=self.kernel.dtype) for m in (_UP4_TO_EVEN3, _UP4_TO_ODD3))
        kernel = ops.concatenate([ops.einsum("au,bv,uvio->abio", a, b, self.kernel)
                                  for a in (even, odd) for b in (even, odd)], axis=-1)
        y = ops.conv(ops.pad(inputs, [[0, 0], [1, 1], [1, 1], [0, 0]]), kernel, padding="valid")
        h, w = inputs.shape[1], inputs.shape[2]
        y = ops.reshape(y, (-1, h, w, 2, 2, self.filters))  # (batch, row, col, row phase, col phase, out)
        return ops.reshape(ops.transpose(y, (0, 1, 3, 2, 4, 5)), (-1, 2 * h, 2 * w, self.filters))

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        return (b, None if h is None else 2 * h, None if w is None else 2 * w, self.filters)


@keras.saving.register_keras_serializable(package="ganlab")
class FusedBatchNormalization(layers.BatchNormalization):
    """Keras' BatchNormalization, whose training-mode call on TensorFlow is one fused kernel (oneDNN's,
    where it is on) instead of about ten element-wise ops and reductions each way: the same batch
    statistics, outputs and moving averages; the DCGAN's TensorFlow step costs 1.14x less CPU time with
    it (docs/benchmarks.md).
    Inference, JAX (whose XLA fuses the ops itself) and the options the kernel lacks take Keras' path.
    """

    def call(self, inputs, training=None, mask=None):
        # The kernel computes in float32 and, on GPUs, with an epsilon of at least 1.001e-5 (cuDNN's).
        plain = (not training or not self.trainable or mask is not None or len(inputs.shape) != 4
                 or self.axis not in (-1, 3) or not (self.center and self.scale) or self.synchronized
                 or self.renorm or self.epsilon < 1.001e-5
                 or keras.backend.standardize_dtype(inputs.dtype) not in ("float32", "bfloat16", "float16")
                 or keras.backend.backend() != "tensorflow")
        if plain:
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        # As Keras does: the statistics in float32 whatever the compute dtype.
        x = tf.cast(inputs, tf.float32)
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, tf.cast(self.gamma, tf.float32), tf.cast(self.beta, tf.float32), epsilon=self.epsilon,
            is_training=True)
        # The kernel returns the unbiased variance (for its own moving average); Keras averages the
        # biased one, which is also what normalised the batch.
        n = tf.cast(tf.size(x) // tf.shape(x)[-1], tf.float32)
        variance = variance * (n - 1.0) / n
        m = self.momentum
        self.moving_mean.assign(self.moving_mean * m + tf.cast(mean, self.moving_mean.dtype) * (1.0 - m))
        self.moving_variance.assign(
            self.moving_variance * m + tf.cast(variance, self.moving_variance.dtype) * (1.0 - m))
        return tf.cast(y, self.compute_dtype)

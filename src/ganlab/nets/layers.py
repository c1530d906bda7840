"""Custom Keras layers of the architectures; importing this module registers them for loading."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

# How UpSampling2D(2) followed by a 4-tap 'same' convolution reads its input along one axis: the
# output at 2p (even) takes x[p-1], x[p], x[p+1] with taps w0, w1+w2, w3, and the output at 2p+1
# takes x[p], x[p+1] with w0+w1, w2+w3. Laid out as one 5-tap transposed-convolution kernel
# (stride 2, cropped by 2 before and 1 after) that is [w3, w2+w3, w1+w2, w0+w1, w0].
_UP4_TO_T5 = np.array([[0, 0, 0, 1], [0, 0, 1, 1], [0, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]], np.float32)


@keras.saving.register_keras_serializable(package="ganlab")
class UpConv2D(layers.Conv2D):
    """UpSampling2D(2) then Conv2D(filters, 4, padding="same"), computed as one strided transposed
    convolution: 25 multiply-adds per 2x2 output block instead of 64, the same function.

    The weight is the blog's 4x4 kernel, so parameter counts and checkpoints are the blog's; the
    5x5 transposed kernel is built from it in every call (tests hold it equal to the layer pair).
    """

    def __init__(self, filters: int, kernel_size=4, **kwargs):
        kwargs.pop("padding", None)
        if kernel_size not in (4, (4, 4), [4, 4]):
            raise ValueError("UpConv2D is exact for 4x4 kernels only")
        super().__init__(filters, 4, padding="same", **kwargs)

    def call(self, inputs):
        m = ops.convert_to_tensor(_UP4_TO_T5, dtype=self.kernel.dtype)
        # conv_transpose wants (rows, cols, out, in); the stored kernel is (rows, cols, in, out).
        kernel = ops.einsum("au,bv,uvio->aboi", m, m, self.kernel)
        y = ops.conv_transpose(inputs, kernel, strides=2, padding="valid")[:, 2:-1, 2:-1, :]
        if self.use_bias:
            y = y + self.bias
        return self.activation(y) if self.activation is not None else y

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        return (b, None if h is None else 2 * h, None if w is None else 2 * w, self.filters)

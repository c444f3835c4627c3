"""The Keras 3 side of the custom-layer examples: what a user's own package holds.

``kconv verify --keras-objects examples/extensions/keras_layers.py`` imports this file so Keras can
load the models ``scripts/make_custom_fixtures.py`` writes (``kconv convert`` never needs it: it
reads the files without running their code).
"""
import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kconv_examples")
class AttentionPooling(keras.layers.Layer):
    """Attention-weighted mean over time: score_t = v . tanh(W x_t + b), softmax over unmasked steps."""

    def __init__(self, units=8, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.supports_masking = True

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=(input_shape[-1], self.units))
        self.b = self.add_weight(name="b", shape=(self.units,), initializer="zeros")
        self.v = self.add_weight(name="v", shape=(self.units,))

    def call(self, x, mask=None):
        scores = ops.sum(ops.tanh(ops.matmul(x, self.w) + self.b) * self.v, axis=-1)  # (batch, time)
        if mask is not None:
            scores = ops.where(mask, scores, -1e9)
        weights = ops.softmax(scores, axis=-1)
        return ops.sum(x * ops.expand_dims(weights, -1), axis=1)

    def compute_mask(self, x, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="kconv_examples")
class ScaledTanh(keras.layers.Layer):
    """alpha * tanh(beta * x): no weights, two config numbers."""

    def __init__(self, alpha=1.7159, beta=2 / 3, **kwargs):
        super().__init__(**kwargs)
        self.alpha, self.beta = alpha, beta

    def call(self, x):
        return self.alpha * ops.tanh(self.beta * x)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "beta": self.beta}


@keras.saving.register_keras_serializable(package="kconv_examples")
class FixedStandardize(keras.layers.Layer):
    """(x - mean) / sqrt(var + eps) * gain: mean and var are non-trainable state, gain is trained."""

    def __init__(self, epsilon=1e-3, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        n = input_shape[-1]
        self.mean = self.add_weight(name="mean", shape=(n,), initializer="zeros", trainable=False)
        self.var = self.add_weight(name="var", shape=(n,), initializer="ones", trainable=False)
        self.gain = self.add_weight(name="gain", shape=(n,), initializer="ones")

    def call(self, x):
        return (x - self.mean) / ops.sqrt(self.var + self.epsilon) * self.gain

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="kconv_examples")
def squash(x):
    """A named function used in a Lambda layer: Keras stores only its name."""
    return x * ops.sigmoid(x) - 0.5


@keras.saving.register_keras_serializable(package="kconv_examples")
def scale_shift(x, factor=1.0, shift=0.0):
    """A named function with Lambda arguments (stored in the layer config)."""
    return x * factor + shift


class ChannelScale(keras.layers.Layer):
    """Keras 3 twin of keras2_layers.ChannelScale: lets Keras 3 load fixtures/custom/k2_scale.h5."""

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.scale


#: Classes Keras looks up by the plain name a legacy .h5 records (no registered package prefix).
custom_objects = {"ChannelScale": ChannelScale}

"""The tf-keras 2 side of the legacy custom-layer example (``fixtures/custom/k2_scale.h5``).

``kconv verify --keras-objects examples/extensions/keras2_layers.py`` hands Keras these classes
through ``custom_objects`` (a tf-keras 2 .h5 file needs tf-keras to load: TF_USE_LEGACY_KERAS=1).
"""
import tf_keras as keras


class ChannelScale(keras.layers.Layer):
    """x * scale, one trained scale per feature."""

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.scale


custom_objects = {"ChannelScale": ChannelScale}

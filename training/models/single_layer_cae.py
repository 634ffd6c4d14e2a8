"""Single-layer convolutional autoencoder: one padded Conv2D encoder layer, one Conv2D decoder layer.

The classic textbook CAE (e.g. the MNIST single-layer CAE of Masci et al.): pixels are scaled to
[-1, 1], a 'same' 3×3 Conv2D with tanh gives `filters` feature maps at full resolution, and a second
'same' 3×3 Conv2D with tanh maps them back; the output is mapped to [0, 1] for the interface. There is
no bottleneck (the latent is H×W×filters), so it learns local features rather than compressing; L2
weight decay on the encoder kernel alone keeps it from learning the identity trivially. It is the
simplest baseline of the zoo, useful for anomaly maps and as a sanity check of the pipeline.
Being fully convolutional it could take any size, but like the other seeds it is built for one fixed
input shape (the card states the resize policy).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from training.models.base import QuantizedLatentAutoencoder
from training.models.registry import register


@register("single_layer_cae")
class SingleLayerCAE(QuantizedLatentAutoencoder):
    architecture = "single_layer_cae"

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (28, 28, 1),
        filters: int = 16,
        kernel_size: int = 3,
        l2_penalty: float = 1e-4,
        **kwargs,
    ) -> None:
        super().__init__(input_shape, **kwargs)
        h, w, c = input_shape
        if h is None or w is None:
            raise ValueError("single_layer_cae is built for a fixed input size")
        if l2_penalty < 0:
            raise ValueError("l2_penalty must be >= 0")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.l2_penalty = float(l2_penalty)
        # Weight decay on the encoder kernel only (the classic recipe); it shows up in `self.losses`.
        regularizer = keras.regularizers.L2(self.l2_penalty) if self.l2_penalty > 0 else None
        self.encoder = keras.Sequential(
            [
                keras.Input(shape=input_shape),
                layers.Conv2D(self.filters, self.kernel_size, padding="same", activation="tanh",
                              kernel_regularizer=regularizer, name="encode_conv"),
            ],
            name="encoder",
        )
        self.decoder = keras.Sequential(
            [
                keras.Input(shape=(h, w, self.filters)),
                layers.Conv2D(c, self.kernel_size, padding="same", activation="tanh", name="decode_conv"),
            ],
            name="decoder",
        )
        self.build_quantizer(self.filters)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "l2_penalty": self.l2_penalty,
        }

    @property
    def latent_shape(self) -> tuple[int, ...]:
        h, w, _ = self.image_shape
        return (h, w, self.filters)

    def encode_latent(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.encoder(images * 2.0 - 1.0, training=training)

    def _decode_signed(self, latent: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Reconstruction on the network's own [-1, 1] scale."""
        return self.decoder(latent, training=training)

    def decode_latent(self, latent: tf.Tensor, training: bool = False) -> tf.Tensor:
        return (self._decode_signed(latent, training=training) + 1.0) * 0.5

    def compute_losses(self, images: tf.Tensor, training: bool = True) -> dict[str, tf.Tensor]:
        signed = self._decode_signed(self.encode_latent(images, training=training), training=training)
        mse_signed = tf.reduce_mean(tf.square(images * 2.0 - 1.0 - signed))  # the classic loss, on [-1, 1]
        mse = tf.reduce_mean(tf.square(images - (signed + 1.0) * 0.5))  # on [0, 1], comparable across models
        l2 = tf.add_n(self.losses) if self.losses else tf.constant(0.0)
        return {"loss": mse_signed + l2, "mse_signed": mse_signed, "mse": mse, "l2": l2}

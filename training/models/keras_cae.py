"""Conv2D/Conv2DTranspose autoencoder with a dense latent of size z (the Keras CAE write-up).

Encoder: Conv2D 32 (stride 1), 64 (stride 2), 128 (stride 2), flatten, Dense(z). Decoder mirrors it with
Conv2DTranspose and ends in a sigmoid; trained with binary cross-entropy on pixels in [0, 1].
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from training.models.base import QuantizedLatentAutoencoder
from training.models.registry import register


@register("keras_cae")
class KerasCAE(QuantizedLatentAutoencoder):
    architecture = "keras_cae"

    def __init__(self, input_shape=(28, 28, 1), latent_dim: int = 16, **kwargs) -> None:
        super().__init__(input_shape, **kwargs)
        h, w, c = input_shape
        if h % 4 or w % 4:
            raise ValueError("keras_cae needs height and width divisible by 4")
        self.latent_dim = latent_dim
        self.encoder = keras.Sequential(
            [
                keras.Input(shape=input_shape),
                layers.Conv2D(32, 3, strides=1, padding="same", activation="relu"),
                layers.Conv2D(64, 3, strides=2, padding="same", activation="relu"),
                layers.Conv2D(128, 3, strides=2, padding="same", activation="relu"),
                layers.Flatten(),
                layers.Dense(latent_dim, name="latent"),
            ],
            name="encoder",
        )
        self.decoder = keras.Sequential(
            [
                keras.Input(shape=(latent_dim,)),
                layers.Dense((h // 4) * (w // 4) * 128, activation="relu"),
                layers.Reshape((h // 4, w // 4, 128)),
                layers.Conv2DTranspose(64, 3, strides=2, padding="same", activation="relu"),
                layers.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu"),
                layers.Conv2DTranspose(c, 3, strides=1, padding="same", activation="sigmoid"),
            ],
            name="decoder",
        )
        self.build_quantizer(latent_dim)

    def get_config(self) -> dict:
        return {**super().get_config(), "latent_dim": self.latent_dim}

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.latent_dim,)

    def encode_latent(self, images, training=False):
        return self.encoder(images, training=training)

    def decode_latent(self, latent, training=False):
        return self.decoder(latent, training=training)

    def compute_losses(self, images, training=True):
        recon = self(images, training=training)
        bce = tf.reduce_mean(keras.losses.binary_crossentropy(images, recon))
        mse = tf.reduce_mean(tf.square(images - recon))
        return {"loss": bce, "bce": bce, "mse": mse}

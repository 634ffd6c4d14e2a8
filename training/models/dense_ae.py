"""Fully connected autoencoder with batch normalisation and a latent sized by a compression ratio.

Flatten → Dense+BatchNorm+ReLU per entry of `hidden` (e.g. 512, 256) → linear Dense latent of
round(compression_ratio × H·W·C) values (1/4, 1/9, 1/16 of the input size, the usual sweep; an explicit
`latent_dim` overrides it) → the mirror image back up → Dense(H·W·C) logits → sigmoid, reshaped to the
image. The simplest "undercomplete" autoencoder whose rate is set directly by the latent size; batch
norm makes the deeper MLP train quickly. Trained with sigmoid cross-entropy on logits. BatchNorm uses
batch statistics only when `training=True` is passed down; coding (`encode`/`decode`) always uses the
moving averages, so exported signatures are deterministic per image.
"""

from __future__ import annotations

import math

import keras
from keras import layers

from training.models.base import SigmoidBCEAutoencoder
from training.models.registry import register


def _dense_bn_relu(units: int, momentum: float, name: str) -> list[layers.Layer]:
    return [
        layers.Dense(units, use_bias=False, name=f"{name}_dense"),  # BN's beta is the bias
        layers.BatchNormalization(momentum=momentum, name=f"{name}_bn"),
        layers.ReLU(name=f"{name}_relu"),
    ]


@register("dense_ae")
class DenseAE(SigmoidBCEAutoencoder):
    architecture = "dense_ae"

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (28, 28, 1),
        hidden: tuple[int, ...] | list[int] = (512, 256),
        compression_ratio: float = 1 / 4,
        latent_dim: int | None = None,
        bn_momentum: float = 0.99,
        **kwargs,
    ) -> None:
        super().__init__(input_shape, **kwargs)
        h, w, c = input_shape
        if h is None or w is None:
            raise ValueError("dense_ae is built for a fixed input size")
        size = h * w * c
        if latent_dim is None:
            if not 0 < compression_ratio <= 1:
                raise ValueError("compression_ratio must be in (0, 1]")
            latent_dim = max(1, round(compression_ratio * size))
        if latent_dim < 1:
            raise ValueError("latent_dim must be >= 1")
        self.hidden = [int(u) for u in hidden]
        self.compression_ratio = float(compression_ratio)
        self.latent_dim = int(latent_dim)
        self.bn_momentum = float(bn_momentum)

        encoder_layers: list[layers.Layer] = [keras.Input(shape=input_shape), layers.Flatten()]
        for i, units in enumerate(self.hidden):
            encoder_layers += _dense_bn_relu(units, self.bn_momentum, f"enc{i}")
        encoder_layers.append(layers.Dense(self.latent_dim, name="latent"))
        self.encoder = keras.Sequential(encoder_layers, name="encoder")

        decoder_layers: list[layers.Layer] = [keras.Input(shape=(self.latent_dim,))]
        for i, units in enumerate(reversed(self.hidden)):
            decoder_layers += _dense_bn_relu(units, self.bn_momentum, f"dec{i}")
        decoder_layers += [layers.Dense(size, name="logits"), layers.Reshape((h, w, c))]
        self.decoder = keras.Sequential(decoder_layers, name="decoder")
        self.build_quantizer(self.latent_dim)

    def get_config(self) -> dict:
        # latent_dim is the resolved size, so the config rebuilds exactly this model.
        return {
            **super().get_config(),
            "hidden": list(self.hidden),
            "compression_ratio": self.compression_ratio,
            "latent_dim": self.latent_dim,
            "bn_momentum": self.bn_momentum,
        }

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.latent_dim,)

    @property
    def effective_ratio(self) -> float:
        """Latent values per input value (before quantisation)."""
        return self.latent_dim / math.prod(self.image_shape)

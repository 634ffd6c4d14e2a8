"""Convolutional autoencoder with a spatial latent: VGG-style blocks down, transposed convolutions up.

Encoder: per entry of `filters`, two 3×3 ReLU convs then 2× downsampling, either max-pooling (the
classic Keras/TF tutorial CAE) or a learned stride-2 conv (`downsample="strided"`, as in most learned
codecs); a 1×1 conv then gives `latent_channels` maps at ceil(H/2^n) × ceil(W/2^n). Keeping the latent
spatial (instead of flattening) preserves locality, so it compresses by channel count and stride.
Decoder: stride-2 Conv2DTranspose layers back up, a 3×3 conv to the image channels, a crop to the
input size (so odd sizes such as 30×30 work: 'same' padding rounds up, the crop removes the excess at
the bottom/right where the padding went), and a sigmoid. Trained with sigmoid cross-entropy on logits.
"""

from __future__ import annotations

import math
from typing import Literal

import keras
from keras import layers

from training.models.base import SigmoidBCEAutoencoder
from training.models.registry import register

Downsample = Literal["maxpool", "strided"]


@register("conv_ae")
class ConvAE(SigmoidBCEAutoencoder):
    architecture = "conv_ae"

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (28, 28, 1),
        filters: tuple[int, ...] | list[int] = (32, 64),
        latent_channels: int = 8,
        downsample: Downsample = "maxpool",
        **kwargs,
    ) -> None:
        super().__init__(input_shape, **kwargs)
        h, w, c = input_shape
        if h is None or w is None:
            raise ValueError("conv_ae is built for a fixed input size")
        if downsample not in ("maxpool", "strided"):
            raise ValueError(f"downsample must be 'maxpool' or 'strided', not {downsample!r}")
        if not filters:
            raise ValueError("conv_ae needs at least one block (filters)")
        self.filters = [int(f) for f in filters]
        self.latent_channels = int(latent_channels)
        self.downsample = downsample
        stride = 2 ** len(self.filters)
        self._latent_hw = (math.ceil(h / stride), math.ceil(w / stride))

        encoder_layers: list[layers.Layer] = [keras.Input(shape=input_shape)]
        for i, f in enumerate(self.filters):
            encoder_layers += [
                layers.Conv2D(f, 3, padding="same", activation="relu", name=f"block{i}_conv1"),
                layers.Conv2D(f, 3, padding="same", activation="relu", name=f"block{i}_conv2"),
                layers.MaxPooling2D(2, padding="same", name=f"block{i}_pool")
                if downsample == "maxpool"
                else layers.Conv2D(f, 3, strides=2, padding="same", activation="relu", name=f"block{i}_down"),
            ]
        encoder_layers.append(layers.Conv2D(self.latent_channels, 1, name="latent"))
        self.encoder = keras.Sequential(encoder_layers, name="encoder")

        up_h, up_w = self._latent_hw[0] * stride, self._latent_hw[1] * stride
        decoder_layers: list[layers.Layer] = [keras.Input(shape=self.latent_shape)]
        for i, f in enumerate(reversed(self.filters)):
            decoder_layers.append(
                layers.Conv2DTranspose(f, 3, strides=2, padding="same", activation="relu", name=f"up{i}")
            )
        decoder_layers += [
            layers.Conv2D(c, 3, padding="same", name="logits"),
            layers.Cropping2D(((0, up_h - h), (0, up_w - w)), name="crop"),
        ]
        self.decoder = keras.Sequential(decoder_layers, name="decoder")
        self.build_quantizer(self.latent_channels)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "filters": list(self.filters),
            "latent_channels": self.latent_channels,
            "downsample": self.downsample,
        }

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (*self._latent_hw, self.latent_channels)

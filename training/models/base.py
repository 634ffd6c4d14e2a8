"""The one interface every architecture implements, so training, export and evaluation treat them alike.

Two states, as in tensorflow/compression: *training* (`call` returns a reconstruction from continuous
latents, `compute_losses` the terms to minimise) and *coding* (`encode` returns integer symbols,
`decode` inverts it, `reconstruct = decode ∘ encode`). `finalize(dataset)` moves a trained model from
the first state to the second by freezing whatever coding needs (latent quantiser range, entropy
tables); export refuses a model that was not finalized.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import ClassVar

import keras
import numpy as np
import tensorflow as tf

from contract.card import EffortSpec, InputSpec, LatentSpec, RateSpec
from training import complexity

SCORE_COMPONENTS = ("mse", "ssim", "bits")
SCORE_KINDS = (*SCORE_COMPONENTS, "combined", "complexity")


class Autoencoder(keras.Model):
    """Base class: subclasses build `encoder` and `decoder` and may override the loss and coding."""

    architecture: ClassVar[str] = ""

    def __init__(self, input_shape: tuple[int | None, int | None, int], score_kind: str = "mse", **kwargs) -> None:
        super().__init__(**kwargs)
        if score_kind not in SCORE_KINDS:
            raise ValueError(f"anomaly score must be one of {', '.join(SCORE_KINDS)}, not {score_kind!r}")
        self.image_shape = tuple(input_shape)
        self.finalized = False
        #: Which score `anomaly_score` returns as "score" (written into the card).
        self.score_kind = score_kind
        # z-normalisation of the components for the "combined" score, set from held-out normal images.
        self.score_center = self.add_weight(shape=(len(SCORE_COMPONENTS),), initializer="zeros",
                                            trainable=False, name="score_center")
        self.score_scale = self.add_weight(shape=(len(SCORE_COMPONENTS),), initializer="ones",
                                           trainable=False, name="score_scale")
        if score_kind == "complexity":  # (intercept, slope) of log mse on log PNG bpp (training/complexity.py)
            self.complexity_fit = self.add_weight(shape=(2,), initializer="zeros", trainable=False,
                                                  name="complexity_fit")

    # ---- configuration ---------------------------------------------------------------------------
    def get_config(self) -> dict:
        return {"input_shape": list(self.image_shape), "score_kind": self.score_kind}

    def input_spec_card(self) -> InputSpec:
        h, w, c = self.image_shape
        if h is None or w is None:
            return InputSpec(channels=c, any_size=True, size_multiple=self.size_multiple, size_policy="pad",
                             tile_halo=self.tile_halo)
        return InputSpec(height=h, width=w, channels=c, size_policy="resize")

    size_multiple: ClassVar[int] = 1
    #: Any-size models: the receptive field a tile needs as context (card `input.tile_halo`); None leaves
    #: it to the server's setting.
    tile_halo: ClassVar[int | None] = None

    # ---- training state --------------------------------------------------------------------------
    def call(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Reconstruction from continuous latents, pixels in [0, 1]."""
        return self.decode_latent(self.encode_latent(images, training=training), training=training)

    def encode_latent(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
        raise NotImplementedError

    def decode_latent(self, latent: tf.Tensor, training: bool = False) -> tf.Tensor:
        raise NotImplementedError

    def compute_losses(self, images: tf.Tensor, training: bool = True) -> dict[str, tf.Tensor]:
        """Named loss terms; `loss` is what the optimiser minimises. Default: MSE + regularisers."""
        recon = self(images, training=training)
        mse = tf.reduce_mean(tf.square(images - recon))
        reg = tf.add_n(self.losses) if self.losses else tf.constant(0.0)
        return {"loss": mse + reg, "mse": mse}

    # ---- coding state ----------------------------------------------------------------------------
    def finalize(self, dataset: tf.data.Dataset) -> None:
        """Freeze what coding needs from (a sample of) training images. Called after `fit`."""
        raise NotImplementedError

    def latent_specs(self) -> list[LatentSpec]:
        raise NotImplementedError

    def effort_spec(self) -> EffortSpec | None:
        """The card's encoder effort (None: the model has no `encode_refined`)."""
        return None

    def rate_spec(self) -> RateSpec | None:
        """Variable-rate models: the quality range their coding signatures take (None: a single rate)."""
        return None

    def entropy_tables(self) -> dict[str, tf.Tensor]:
        """Categorical probability tables [channels, symbols], keyed by latent name."""
        raise NotImplementedError

    def encode(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """Integer symbols per latent, keyed by LatentSpec.name."""
        raise NotImplementedError

    def decode(self, latents: dict[str, tf.Tensor]) -> tf.Tensor:
        raise NotImplementedError

    def hyper_decode(self, latents: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Scale indices of conditionally coded latents; only models with Gaussian latents need it."""
        return {}

    def parameter_stages(self) -> dict[str, tuple[list[tf.TensorSpec], Callable]]:
        """Signature name → (int32 input specs, function of a dict of those inputs): the stages the
        service runs to get each Gaussian latent's scale indices (`LatentSpec.scale_source`; see
        `contract.entropy.staged_scales`). Default: one `hyper_decode` stage fed by every
        categorical latent."""
        specs = self.latent_specs()
        if not any(s.coding == "gaussian" for s in specs):
            return {}
        inputs = [tf.TensorSpec([None, *s.shape] if s.shape else [None, None, None, s.channels], tf.int32, name=s.name)
                  for s in specs if s.coding == "categorical"]
        return {"hyper_decode": (inputs, self.hyper_decode)}

    def reconstruct(self, images: tf.Tensor) -> tf.Tensor:
        return self.decode(self.encode(images))

    def coded_bits(self, latents: dict[str, tf.Tensor]) -> tf.Tensor:
        """Information content [B] of integer latents under the frozen entropy model, in bits."""
        raise NotImplementedError

    def anomaly_score(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """Per-image score components, the chosen `score`, and a per-pixel squared-error map.

        mse: reconstruction error; ssim: 1 - SSIM (structure-aware); bits: code length per pixel under
        the learned prior (what the model cannot compress is unusual); combined: the sum of the three
        components' absolute deviations from their median on held-out normal images, each divided by
        its interquartile range (`set_score_normalization`); complexity (only for that score kind, with
        its png_bpp component): log mse minus its line on log PNG size, fitted on held-out normal images
        (`set_complexity_fit`, training/complexity.py).
        """
        latents = self.encode(images)
        recon = tf.clip_by_value(self.decode(latents), 0.0, 1.0)
        error_map = tf.reduce_mean(tf.square(images - recon), axis=-1)
        h, w = self.image_shape[0], self.image_shape[1]
        filter_size = min(7, h, w) if h and w else 7
        bits = self.coded_bits(latents)
        if isinstance(bits, dict):  # models with several latents report bits per latent
            bits = tf.add_n(list(bits.values()))
        components = {
            "mse": tf.reduce_mean(error_map, axis=[1, 2]),
            "ssim": 1.0 - tf.image.ssim(images, recon, max_val=1.0, filter_size=filter_size),
            "bits": bits / tf.cast(tf.shape(images)[1] * tf.shape(images)[2], tf.float32),
        }
        stacked = tf.stack([components[name] for name in SCORE_COMPONENTS], axis=-1)
        # Two-sided: an image coded in unusually *few* bits (e.g. a near-blank one) is unusual too.
        components["combined"] = tf.reduce_sum(tf.abs(stacked - self.score_center) / self.score_scale, axis=-1)
        if self.score_kind == "complexity":
            components["png_bpp"] = complexity.png_bits_per_pixel(images)
            components["complexity"] = complexity.corrected_score(components["mse"], components["png_bpp"],
                                                                  self.complexity_fit)
        return {"score": components[self.score_kind], "error_map": error_map, **components}

    def set_score_normalization(self, components: dict[str, np.ndarray]) -> None:
        """Centre and scale each component by its median and spread on held-out normal images."""
        values = np.stack([np.asarray(components[name], np.float64) for name in SCORE_COMPONENTS], axis=-1)
        center = np.median(values, axis=0)
        spread = np.maximum(np.quantile(values, 0.75, axis=0) - np.quantile(values, 0.25, axis=0), 1e-9)
        self.score_center.assign(center.astype(np.float32))
        self.score_scale.assign(spread.astype(np.float32))

    def set_complexity_fit(self, components: dict[str, np.ndarray]) -> dict[str, float]:
        """Fit the `complexity` score's line on held-out *normal* images' mse and png_bpp components."""
        fit = complexity.fit_line(components["mse"], components["png_bpp"])
        self.complexity_fit.assign(np.array([fit["intercept"], fit["slope"]], np.float32))
        return fit

    def fingerprint(self) -> str:
        """sha256 over weights and entropy tables: identifies exactly which model made a stream."""
        digest = hashlib.sha256()
        for weight in self.weights:
            digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
        for name, table in sorted(self.entropy_tables().items()):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(np.asarray(table)).tobytes())
        return digest.hexdigest()


class QuantizedLatentAutoencoder(Autoencoder):
    """A classic autoencoder whose continuous latent is uniformly quantised to `latent_bits` (default 8).

    The range per channel is frozen by `finalize` from training latents (0.1/99.9 percentiles), and a
    per-channel histogram of the symbols becomes the categorical entropy table, so even the seeds'
    models produce real, entropy-coded bitstreams.
    """

    def __init__(self, input_shape: tuple[int | None, int | None, int], latent_bits: int = 8, **kwargs) -> None:
        super().__init__(input_shape, **kwargs)
        if not 1 <= latent_bits <= 12:
            raise ValueError("latent_bits must be between 1 and 12")
        self.latent_bits = latent_bits
        self.levels = 2**latent_bits

    def get_config(self) -> dict:
        return {**super().get_config(), "latent_bits": self.latent_bits}

    def build_quantizer(self, channels: int) -> None:
        self.latent_lo = self.add_weight(shape=(channels,), initializer="zeros", trainable=False, name="latent_lo")
        self.latent_hi = self.add_weight(shape=(channels,), initializer="ones", trainable=False, name="latent_hi")
        self.latent_table = self.add_weight(
            shape=(channels, self.levels), initializer="ones", trainable=False, name="latent_table"
        )

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Per-image latent shape (channels last)."""
        raise NotImplementedError

    def _to_symbols(self, latent: tf.Tensor) -> tf.Tensor:
        scale = (self.levels - 1) / tf.maximum(self.latent_hi - self.latent_lo, 1e-6)
        return tf.cast(tf.clip_by_value(tf.round((latent - self.latent_lo) * scale), 0, self.levels - 1), tf.int32)

    def _from_symbols(self, symbols: tf.Tensor) -> tf.Tensor:
        step = (self.latent_hi - self.latent_lo) / (self.levels - 1)
        return tf.cast(symbols, tf.float32) * step + self.latent_lo

    def finalize(self, dataset: tf.data.Dataset, max_batches: int = 64) -> None:
        latents = [self.encode_latent(batch, training=False).numpy() for batch in dataset.take(max_batches)]
        flat = np.concatenate(latents).reshape(-1, self.latent_shape[-1])
        lo, hi = np.percentile(flat, 0.1, axis=0), np.percentile(flat, 99.9, axis=0)
        hi = np.maximum(hi, lo + 1e-3)
        self.latent_lo.assign(lo.astype(np.float32))
        self.latent_hi.assign(hi.astype(np.float32))
        symbols = self._to_symbols(tf.constant(flat)).numpy()
        counts = np.stack([np.bincount(symbols[:, c], minlength=self.levels) for c in range(flat.shape[1])])
        self.latent_table.assign((counts + 0.5).astype(np.float32) / (counts.sum(axis=1, keepdims=True) + 0.5 * self.levels))
        self.finalized = True

    def latent_specs(self) -> list[LatentSpec]:
        shape = list(self.latent_shape)
        return [LatentSpec(name="y", channels=shape[-1], shape=shape, coding="categorical",
                           min_symbol=0, max_symbol=self.levels - 1)]

    def entropy_tables(self) -> dict[str, tf.Tensor]:
        return {"y": tf.convert_to_tensor(self.latent_table)}

    def encode(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": self._to_symbols(self.encode_latent(images, training=False))}

    def decode(self, latents: dict[str, tf.Tensor]) -> tf.Tensor:
        return self.decode_latent(self._from_symbols(latents["y"]), training=False)

    def coded_bits(self, latents: dict[str, tf.Tensor]) -> tf.Tensor:
        symbols = tf.reshape(latents["y"], [tf.shape(latents["y"])[0], -1, self.latent_shape[-1]])
        table = self.latent_table / tf.reduce_sum(self.latent_table, axis=1, keepdims=True)
        log_p = tf.math.log(tf.transpose(table))  # [levels, channels]
        channel = tf.broadcast_to(tf.range(self.latent_shape[-1]), tf.shape(symbols))
        bits = -tf.gather_nd(log_p, tf.stack([symbols, channel], axis=-1)) / np.log(2.0)
        return tf.reduce_sum(bits, axis=[1, 2])


class SigmoidBCEAutoencoder(QuantizedLatentAutoencoder):
    """`encoder` → latent, `decoder` → logits; sigmoid output, cross-entropy on the logits.

    Cross-entropy on logits is the numerically stable form of "sigmoid output + binary cross-entropy".
    """

    def encode_latent(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.encoder(images, training=training)

    def decode_logits(self, latent: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.decoder(latent, training=training)

    def decode_latent(self, latent: tf.Tensor, training: bool = False) -> tf.Tensor:
        return tf.sigmoid(self.decode_logits(latent, training=training))

    def compute_losses(self, images: tf.Tensor, training: bool = True) -> dict[str, tf.Tensor]:
        logits = self.decode_logits(self.encode_latent(images, training=training), training=training)
        bce = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=images, logits=logits))
        mse = tf.reduce_mean(tf.square(images - tf.sigmoid(logits)))
        reg = tf.add_n(self.losses) if self.losses else tf.constant(0.0)
        return {"loss": bce + reg, "bce": bce, "mse": mse}

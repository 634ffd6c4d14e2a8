"""Test metrics measured the way the service serves: integer latents, real entropy-coded bitstreams.

The same code evaluates an in-memory Keras model (right after training) and an exported SavedModel
(`python -m training evaluate`), so the card's figures describe the artifact that is served.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from contract.bitstream import Bitstream, write_stream
from contract.card import LatentSpec, ModelCard, quality_value
from contract.entropy import ScaleFn, staged_scales
from contract.sizing import pad_to_multiple
from training.data import eval_batches

Tensors = Mapping[str, np.ndarray]
#: tf.image.ssim_multiscale with its defaults (5 scales, 11-px window) needs this many pixels per side.
MS_SSIM_MIN_SIDE = 161


@dataclass
class Coder:
    """The served operations, as numpy callables, plus what entropy coding needs."""

    name: str
    version: int
    tables_hash: bytes
    size_multiple: int
    specs: list[LatentSpec]
    tables: dict[str, np.ndarray]
    encode: Callable[[np.ndarray], Tensors]
    decode: Callable[[Tensors], np.ndarray]
    anomaly_score: Callable[[np.ndarray], Tensors]
    run_stage: Callable[[str, Tensors], Tensors] | None = None  # parameter stages, by signature name
    stage_inputs: dict[str, list[str]] | None = None
    quality_hundredths: int | None = None  # variable-rate models: the quality coded at (in the stream header)

    def scale_fn(self) -> ScaleFn | None:
        """A fresh scale function for one image (as the service's LoadedModel.scale_fn)."""
        if not self.stage_inputs:
            return None
        assert self.run_stage is not None
        return staged_scales(self.specs, self.run_stage, self.stage_inputs)

    def stream_bytes(self, latents: Tensors, index: int, height: int, width: int, channels: int) -> int:
        """Length of the real bitstream for image `index` of a batch (header + payloads + CRC)."""
        header = Bitstream(self.name, self.version, self.tables_hash, height, width, channels,
                           quality_hundredths=self.quality_hundredths)
        return len(write_stream(header, self.specs, {k: v[index] for k, v in latents.items()}, self.tables,
                                self.scale_fn()))


def coder_from_keras(model, name: str, version: int = 1) -> Coder:
    """Coder around an in-memory Autoencoder (the training side); a variable-rate model codes at its
    `rate_level` (the quality its methods use when given none)."""
    as_np = lambda d: {k: v.numpy() for k, v in d.items()}
    stages = model.parameter_stages()
    rate = model.rate_spec()
    return Coder(
        name, version, bytes.fromhex(model.fingerprint())[:4], model.size_multiple, model.latent_specs(),
        {k: np.asarray(v) for k, v in model.entropy_tables().items()},
        encode=lambda x: as_np(model.encode(tf.constant(x))),
        decode=lambda lat: np.clip(model.decode({k: tf.constant(v) for k, v in lat.items()}).numpy(), 0, 1),
        anomaly_score=lambda x: as_np(model.anomaly_score(tf.constant(x))),
        run_stage=lambda stage, feed: as_np(stages[stage][1]({k: tf.constant(v) for k, v in feed.items()})),
        stage_inputs={stage: [spec.name for spec in specs] for stage, (specs, _) in stages.items()},
        quality_hundredths=None if rate is None else rate.hundredths(None),
    )


def coder_from_saved_model(version_dir: Path, quality: float | None = None) -> Coder:
    """Coder around an exported SavedModel, read through its signatures only; a variable-rate model
    codes at `quality` (its card's default when None)."""
    card = ModelCard.read(version_dir)
    loaded = tf.saved_model.load(str(version_dir))
    sig = loaded.signatures
    as_np = lambda d: {k: v.numpy() for k, v in d.items()}
    call = lambda name, **kw: as_np(sig[name](**{k: tf.constant(v) for k, v in kw.items()}))
    hundredths = None
    if card.rate is not None:
        hundredths = card.rate.hundredths(quality)
    elif quality is not None:
        raise ValueError(f"{card.name} is a single-rate model: it takes no quality")

    def q(batch: int) -> dict[str, np.ndarray]:
        return {} if hundredths is None else {"quality": np.full([batch], quality_value(hundredths), np.float32)}

    return Coder(
        card.name, card.version, bytes.fromhex(card.tables_sha256)[:4], card.input.size_multiple, card.latents,
        call("entropy_tables"),
        encode=lambda x: call("encode", images=x, **q(len(x))),
        decode=lambda lat: call("decode", **lat, **q(len(next(iter(lat.values())))))["images"],
        anomaly_score=lambda x: call("anomaly_score", images=x),
        run_stage=lambda stage, feed: call(stage, **feed),
        stage_inputs={spec.scale_source: list(sig[spec.scale_source].structured_input_signature[1])
                      for spec in card.latents if spec.coding == "gaussian" and spec.scale_source},
        quality_hundredths=hundredths,
    )


@dataclass
class Evaluation:
    metrics: dict[str, float]
    scores: np.ndarray  # per-image anomaly scores, in input order
    components: dict[str, np.ndarray]  # every score component (mse, ssim, bits, combined), in input order


def evaluate(coder: Coder, images, labels: np.ndarray | None = None, normal_classes: list[int] | None = None,
             batch_size: int = 256, with_bpp: bool = True) -> Evaluation:
    """MSE/PSNR on [0,1] pixels, MS-SSIM (tf.image.ssim_multiscale, default settings, on images of at least
    161 px a side: `ms_ssim` is the mean over them, `ms_ssim_db` -10·log10(1 - that mean), `ms_ssim_images`
    how many; absent when none is that big), real bpp and code bytes, anomaly scores (+ AUROC when labelled)."""
    sq_err, psnrs, bits, pixels, code_bytes, scores = [], [], 0, 0, [], []
    ms_ssims: list[np.ndarray] = []
    components: dict[str, list[np.ndarray]] = {}
    for batch in eval_batches(images, batch_size):
        h, w, c = batch.shape[1:]
        padded = pad_to_multiple(batch, coder.size_multiple)
        latents = coder.encode(padded)
        recon = coder.decode(latents)[:, :h, :w, :]
        per_image = np.mean((recon.astype(np.float64) - batch) ** 2, axis=(1, 2, 3))
        sq_err.append(per_image)
        psnrs.append(10 * np.log10(1.0 / np.maximum(per_image, 1e-12)))
        if min(h, w) >= MS_SSIM_MIN_SIDE:
            ms_ssims.append(tf.image.ssim_multiscale(
                tf.constant(batch, tf.float32), tf.constant(np.clip(recon, 0, 1), tf.float32), max_val=1.0).numpy())
        outputs = coder.anomaly_score(padded)
        scores.append(outputs["score"])
        for key, value in outputs.items():
            if key not in {"score", "error_map"}:
                components.setdefault(key, []).append(np.asarray(value))
        if with_bpp:
            for i in range(len(batch)):
                n = coder.stream_bytes(latents, i, h, w, c)
                code_bytes.append(n)
                bits += 8 * n
                pixels += h * w
    mse_all = np.concatenate(sq_err)
    metrics = {
        "mse": float(mse_all.mean()),
        "psnr": float(10 * np.log10(1.0 / mse_all.mean())),
        "psnr_per_image_mean": float(np.concatenate(psnrs).mean()),
        "images": float(len(mse_all)),
    }
    if ms_ssims:
        ms_ssim = float(np.concatenate(ms_ssims).mean())
        metrics |= {"ms_ssim": ms_ssim, "ms_ssim_db": float(-10 * np.log10(max(1.0 - ms_ssim, 1e-12))),
                    "ms_ssim_images": float(sum(len(v) for v in ms_ssims))}
    if with_bpp:
        metrics |= {"bpp": bits / pixels, "code_bytes_mean": float(np.mean(code_bytes))}
    score_all = np.concatenate(scores)
    parts = {key: np.concatenate(values) for key, values in components.items()}
    if labels is not None and normal_classes is not None:
        from sklearn.metrics import roc_auc_score

        anomalous = ~np.isin(labels, normal_classes)
        if 0 < anomalous.sum() < len(anomalous):
            metrics["auroc"] = float(roc_auc_score(anomalous, score_all))
            for key, values in parts.items():
                metrics[f"auroc_{key}"] = float(roc_auc_score(anomalous, values))
    return Evaluation(metrics, score_all, parts)

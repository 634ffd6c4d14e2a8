"""Warm starts: a codec that takes a trained one's weights and goes on training from where it stood.

Each keeps what the source computed (its symbols and pictures, or exactly its y and x̂) so that no step
of training is spent relearning it; new λ levels, latent channels or filters start where they cost
nothing and still receive gradients.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers


def interpolate_rows(x: np.ndarray, rows: np.ndarray, x_new: np.ndarray) -> np.ndarray:
    """Rows [len(x_new), C]: `rows` [len(x), C] linearly interpolated at `x_new` (x ascending), extended
    past either end along the line through the two end rows."""
    j = np.clip(np.searchsorted(x, x_new) - 1, 0, len(x) - 2)  # left end of each point's segment
    t = ((x_new - x[j]) / (x[j + 1] - x[j]))[:, None]
    return (1 - t) * rows[j] + t * rows[j + 1]


def adopt_codec(model: keras.Model, source: keras.Model) -> None:
    """Take every weight of `source`, a trained codec with other λ levels and/or another number of
    latent channels (same `num_filters`), so training can go on from it.

    Levels: gains of a λ the source has are copied; those of a new λ are interpolated (or
    extrapolated from the two nearest levels) in log λ, per channel: the learned gains are close to
    linear there, so a level added below or above the trained range starts near where it belongs.

    Wider latent (M_source < M): the first M_source channels of y are the source's, and the new ones
    start silent: g_a emits them near zero (its new filters scaled by 1e-2), so they round to the
    symbol 0 at every level; h_a ignores them (zero weights); h_s predicts μ = 0 and σ at its lower
    bound for them (zero weights and biases). So the widened codec codes the source's symbols and
    pictures, and its new channels cost next to no bits until training turns them on. g_s keeps
    random weights on them: y reaches g_s rounded (straight-through), so they change nothing while
    silent, yet pass the distortion's gradient back to the channels. Their gains start at each
    level's mean gain over the source's channels. They may never wake: the training rate (additive
    noise) charges a silent channel for its noise, which holds it at zero (models_store/README.md,
    "Measurements behind the code").

    Narrower latent (M_source > M): the first M channels are kept and the rest dropped — the way
    back from a widening whose new channels stayed silent. Not exact: h_s still predicts a mean for
    a silent channel, which g_s saw as ŷ = μ there and now does not see at all: g_s uses those means,
    side information from z, so PSNR drops slightly until training resumes (models_store/README.md).
    """
    m_old, m_new = source.latent_channels, model.latent_channels
    if source.num_filters != model.num_filters or source.mean_scale != model.mean_scale:
        raise ValueError(f"cannot adopt a codec with N={source.num_filters}, M={m_old}, mean_scale="
                         f"{source.mean_scale} into N={model.num_filters}, M={m_new}, mean_scale={model.mean_scale}")
    if (model.log_gain is None) != (source.log_gain is None):
        raise ValueError("adopting a codec needs both multi-rate or both single-rate "
                         "(a single-rate one loads into a multi-rate one by --init-from directly)")
    if model.log_gain is not None:
        old, new = np.log(np.asarray(source.lmbdas)), np.log(np.asarray(model.lmbdas))
        for ours, theirs in ((model.log_gain, source.log_gain), (model.log_inv_gain, source.log_inv_gain)):
            rows = interpolate_rows(old, theirs.numpy(), new)
            fill = np.repeat(rows.mean(axis=1, keepdims=True), max(0, m_new - m_old), axis=1)
            ours.assign(np.concatenate([rows[:, :m_new], fill], axis=1).astype(np.float32))
    on_latent_axis = {id(w) for w in (model.g_a.layers[-1].kernel, model.g_a.layers[-1].bias,
                                      model.g_s.layers[0].kernel, model.h_a.layers[0].kernel,
                                      model.h_s.layers[-1].kernel, model.h_s.layers[-1].bias)}
    skip = {id(w) for w in (model.log_gain, model.log_inv_gain, model.rate_level) if w is not None}
    for ours, theirs in zip(model.weights, source.weights, strict=True):
        if id(ours) in skip:
            continue
        if ours.shape == theirs.shape:
            ours.assign(theirs)
        elif id(ours) in on_latent_axis and m_old < m_new:
            ours.assign(_codec_widened(model, ours, theirs.numpy(), m_old))
        elif id(ours) in on_latent_axis:
            ours.assign(_codec_narrowed(model, ours, theirs.numpy(), m_old))
        else:
            raise ValueError(f"{ours.path}: shape {ours.shape} cannot take {theirs.shape}")


def _codec_narrowed(model: keras.Model, ours: tf.Variable, theirs: np.ndarray, m_old: int) -> np.ndarray:
    """The source's weight `theirs` cut to the first M latent channels (σ's and μ's halves of h_s each)."""
    m = model.latent_channels
    if ours is model.h_s.layers[-1].kernel or ours is model.h_s.layers[-1].bias:
        axis = 2 if theirs.ndim == 4 else 0
        keep = list(range(m)) + ([m_old + c for c in range(m)] if model.mean_scale else [])
        return np.take(theirs, keep, axis=axis)
    axis = 2 if ours is model.h_a.layers[0].kernel else -1  # h_a reads y: its input axis; else the output
    return np.take(theirs, range(m), axis=axis)


def _codec_widened(model: keras.Model, ours: tf.Variable, theirs: np.ndarray, m_old: int) -> np.ndarray:
    """`ours` (a weight with a latent-channel axis) holding the source's `theirs` in its first channels
    (μ's half of h_s moved to its new place); new channels as `adopt_codec` describes."""
    value = ours.numpy()
    m = model.latent_channels
    if ours is model.g_a.layers[-1].kernel:  # [k, k, N, M]: new output filters, tiny
        return np.concatenate([theirs, 1e-2 * value[..., m_old:]], axis=-1)
    if ours is model.g_a.layers[-1].bias:
        return np.concatenate([theirs, np.zeros(m - m_old, value.dtype)])
    if ours is model.g_s.layers[0].kernel:  # Conv2DTranspose [k, k, N, M]: new inputs keep random weights
        return np.concatenate([theirs, value[..., m_old:]], axis=-1)
    if ours is model.h_a.layers[0].kernel:  # [k, k, M, N]: new inputs ignored
        return np.concatenate([theirs, np.zeros_like(value[:, :, m_old:])], axis=2)
    # h_s output: [σ (M), μ (M)] along the last axis of the bias, axis 2 of the transposed kernel
    axis = 2 if value.ndim == 4 else 0
    scale_old, mean_old = np.split(theirs, 2, axis=axis) if model.mean_scale else (theirs, None)
    pad_shape = list(value.shape)
    pad_shape[axis] = m - m_old
    pad = np.zeros(pad_shape, value.dtype)
    parts = [scale_old, pad] if mean_old is None else [scale_old, pad, mean_old, pad]
    return np.concatenate(parts, axis=axis)


def _grown(ours: np.ndarray, theirs: np.ndarray, kind: str) -> np.ndarray:
    """`ours` holding `theirs` in its leading block, the rest so that the old channels compute as before.

    kind "conv" (kernel [k, k, in, out]) or "deconv" ([k, k, out, in]): weights from a new input to an
    old output are zero (old outputs unchanged); weights into new outputs keep our random init, scaled
    by 0.1, so gradients reach every new weight from the first step. "gamma" (GDN [N, N], stored so
    that 0 decodes to 0): old channels ignore new ones and new ones start from our diagonal init.
    Anything else (biases, GDN beta): the old entries copied, new ones at our init.
    """
    out = ours.copy()
    if kind in ("conv", "deconv"):
        a_old, b_old = theirs.shape[2], theirs.shape[3]
        out[:, :, a_old:, :] *= 0.1
        out[:, :, :, b_old:] *= 0.1
        if kind == "conv":
            out[:, :, a_old:, :b_old] = 0.0
        else:
            out[:, :, :a_old, b_old:] = 0.0
    elif kind == "gamma":
        n_old = theirs.shape[0]
        out[:n_old, n_old:] = 0.0
        out[n_old:, :n_old] = 0.0
    out[tuple(slice(0, d) for d in theirs.shape)] = theirs
    return out


def adopt_into_channel_codec(model: keras.Model, source: keras.Model) -> None:
    """Start from a trained `codec` with the same M and z channels and at most our N: its g_a, g_s
    and h_a, widened to our N so that the widened transforms compute exactly the source's y and x̂
    (new filters start random but feed nothing: their outgoing weights start at zero, and old GDN
    channels ignore them), and its gains interpolated in log λ onto our levels (extended linearly
    past either end). h_s and the slice networks are new and start from scratch."""
    if (source.latent_channels != model.latent_channels or source.num_filters > model.num_filters
            or source.num_filters != model.hyper_channels):
        raise ValueError(f"cannot adopt a codec with N={source.num_filters}, M={source.latent_channels} into "
                         f"N={model.num_filters}, M={model.latent_channels}, z channels={model.hyper_channels}")
    if not getattr(source, "mean_scale", False):
        raise ValueError("cannot adopt a scale-only hyperprior: its h_a reads |y|, ours reads y")
    for ours, theirs in ((model.g_a, source.g_a), (model.g_s, source.g_s)):
        for mine, old in zip(ours.layers, theirs.layers, strict=True):
            for w_mine, w_old in zip(mine.weights, old.weights, strict=True):
                kind = ("gamma" if w_mine.path.endswith("gamma") else
                        "deconv" if w_mine.ndim == 4 and isinstance(mine, layers.Conv2DTranspose) else
                        "conv" if w_mine.ndim == 4 else "other")
                w_mine.assign(_grown(w_mine.numpy(), w_old.numpy(), kind))
    for mine, old in zip(model.h_a.weights, source.h_a.weights, strict=True):
        mine.assign(old)
    for mine, old in zip(model.z_density.weights, source.z_density.weights, strict=True):
        mine.assign(old)
    if model.log_gain is not None and source.log_gain is not None:
        old, new = np.log(np.asarray(source.lmbdas)), np.log(np.asarray(model.lmbdas))
        model.log_gain.assign(interpolate_rows(old, source.log_gain.numpy(), new).astype(np.float32))
        model.log_inv_gain.assign(interpolate_rows(old, source.log_inv_gain.numpy(), new).astype(np.float32))

"""The conversion that makes `codec_cc`'s streams portable: its float entropy-parameter networks turned,
at `finalize`, into integer networks whose outputs are the same on every machine (see the
portable-streams section of models_store/README.md)."""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np

from training.entropy_models import MEAN_EXPONENT, MEAN_LIMIT, SCALE_EXPONENT, Z_EXPONENT
from training.layers.integer import ACT_BITS, convert, relu_exponent


def convert_entropy_networks(model: keras.Model, peak: Mapping[str, float], stats: dict[str, float],
                             y_symbol_range: int) -> None:
    """Every entropy-parameter network of a `codec_cc` as integers (`training/layers/integer.py`): h_s from
    ẑ in 2^-Z_EXPONENT steps to a linear support with one exponent, then each slice network from support
    and earlier ȳ to μ in 2^-MEAN_EXPONENT and σ in 2^-SCALE_EXPONENT. `peak`: each layer's calibrated
    activation peak (the output exponents); every layer's input bound is the previous one's clip (what `convert`
    sizes its accumulator shifts by)."""
    z_bound = (model.z_radius + float(np.max(np.abs(model.z_medians.numpy())))) * 2.0**Z_EXPONENT + 1
    exponents = np.full(model.hyper_channels, float(Z_EXPONENT))
    bound = z_bound
    for i, (layer, state) in enumerate(zip(model.h_s_layers, model._int_hs)):
        last = i == len(model.h_s_layers) - 1
        if last:  # linear support: one exponent, |support_int| ≤ 2^14 − 1
            e = relu_exponent(peak[f"h_s_{i}"])
            out_e = np.full(layer.filters, float(e))
            top = 2.0**14 - 1
            conv = convert(layer, exponents, bound, out_e, (np.full(layer.filters, -top), np.full(layer.filters, top)))
            stats["support_exponent"] = float(e)
            model.support_exponent.assign(float(e))
        else:
            out_e = np.full(layer.filters, float(relu_exponent(peak[f"h_s_{i}"])))
            conv = convert(layer, exponents, bound, out_e)
        state.assign(conv)
        exponents, bound = out_e, float(np.max(np.abs(conv.clip_high)))
    support_e, support_bound = exponents[0], bound
    mean_bound = MEAN_LIMIT + y_symbol_range * 2.0**MEAN_EXPONENT
    for k, (convs, states) in enumerate(zip(model.param_layers, model._int_param_nets)):
        exps = np.concatenate([np.full(model.support_channels, support_e),
                               np.full(sum(model.slices[:k]), float(MEAN_EXPONENT))])
        bound = max(support_bound, mean_bound if k else 0.0)
        for i, (layer, state) in enumerate(zip(convs, states)):
            if i < len(convs) - 1:
                out_e = np.full(layer.filters, float(relu_exponent(peak[f"p{k}_{i}"])))
                conv = convert(layer, exps, bound, out_e)
            else:
                w = model.slices[k]
                out_e = np.concatenate([np.full(w, float(MEAN_EXPONENT)), np.full(w, float(SCALE_EXPONENT))])
                low = np.concatenate([np.full(w, -MEAN_LIMIT), np.full(w, 0.0)])
                high = np.concatenate([np.full(w, MEAN_LIMIT), np.full(w, 2.0**30)])
                conv = convert(layer, exps, bound, out_e, (low, high))
            state.assign(conv)
            exps, bound = out_e, float(np.max(np.abs(conv.clip_high)))
            if i == 0 and model.checkerboard:
                # the checkerboard context joins this layer's output: converted to the same exponents,
                # clipped to the ReLU's range either side, so the next layer's input bound doubles at most
                top = 2.0**ACT_BITS - 1
                width = model.slices[k]
                context = convert(model.ctx_layers[k], np.full(width, float(MEAN_EXPONENT)), mean_bound, out_e,
                                  (np.full(layer.filters, -top), np.full(layer.filters, top)))
                model._int_ctx[k].assign(context)
                bound += top

"""Codec v2's training graph (`training/models/codec_cc.py`) in PyTorch, for machines without TensorFlow.

Only what training needs: the float transforms, the channel-conditional entropy model with its noise, the
likelihoods and the level-weighted rate–distortion loss. Finalizing (integer entropy networks, z tables)
and exporting stay with the Keras model, which takes these weights back by name.

Weights keep the Keras model's names and layouts (`ChannelCodec.named_weights`): a convolution's kernel
is [kh, kw, in, out], a transposed one's [kh, kw, out, in], GDN stores its reparameterised β and γ. So a
snapshot moves between the two frameworks without conversion tables, and what is checked against the
Keras model is the arithmetic, not a mapping. Images are NCHW here; TensorFlow's "same" padding
(more on the bottom/right for stride 2) is reproduced exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SCALE_BOUND = 0.11  # training/entropy_models.py
LIKELIHOOD_BOUND = 1e-9
DEFAULT_SLICES = (16, 16, 32, 64, 64)
LEVEL_SYNTHESIS_GAIN = 10.0  # codec_cc.LEVEL_SYNTHESIS_GAIN (this module imports no TensorFlow)
SYNTHESIS_RESIDUAL_GAIN = 10.0  # codec_cc.SYNTHESIS_RESIDUAL_GAIN


class _LowerBound(torch.autograd.Function):
    """max(x, bound) whose gradient still flows when it would move x back up (TFC's lower_bound)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bound: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.bound = bound
        return torch.clamp(x, min=bound)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        passes = (x >= ctx.bound) | (grad < 0)
        return torch.where(passes, grad, torch.zeros_like(grad)), None


def lower_bound(x: torch.Tensor, bound: float, training: bool = True) -> torch.Tensor:
    return _LowerBound.apply(x, bound) if training else torch.clamp(x, min=bound)


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "same" padding of one axis: (before, after), the odd one after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class Conv(nn.Module):
    """keras.layers.Conv2D(padding="same"), kernel [kh, kw, in, out]."""

    def __init__(self, in_channels: int, filters: int, kernel: int, stride: int = 1, relu: bool = False,
                 bias: bool = True, zero: bool = False) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.relu = kernel, stride, relu
        weight = torch.empty(kernel, kernel, in_channels, filters)
        if zero:
            nn.init.zeros_(weight)
        else:  # Glorot uniform, as Keras
            limit = math.sqrt(6.0 / ((in_channels + filters) * kernel * kernel))
            nn.init.uniform_(weight, -limit, limit)
        self.kernel = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(filters)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size, self.stride
        top, bottom = _same_padding(x.shape[2], k, s)
        left, right = _same_padding(x.shape[3], k, s)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        x = F.conv2d(x, self.kernel.permute(3, 2, 0, 1), self.bias, stride=s)
        return F.relu(x) if self.relu else x


class ResidualBlock(nn.Module):
    """training/layers/residual.py's block: x + gain·(W₂ ∗ relu(gain·(W₁ ∗ x + b₁)) + b₂), identity at the start."""

    def __init__(self, channels: int, gain: float) -> None:
        super().__init__()
        self.gain = float(gain)
        std = math.sqrt(2.0 / (9 * channels)) / self.gain
        self.kernel_0 = nn.Parameter(torch.randn(3, 3, channels, channels) * std)
        self.bias_0 = nn.Parameter(torch.zeros(channels))
        self.kernel_1 = nn.Parameter(torch.zeros(3, 3, channels, channels))
        self.bias_1 = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.gain
        hidden = F.relu(F.conv2d(x, g * self.kernel_0.permute(3, 2, 0, 1), g * self.bias_0, padding=1))
        return x + F.conv2d(hidden, g * self.kernel_1.permute(3, 2, 0, 1), g * self.bias_1, padding=1)


class Deconv(nn.Module):
    """keras.layers.Conv2DTranspose(padding="same"), kernel [kh, kw, out, in]: output = input · stride."""

    def __init__(self, in_channels: int, filters: int, kernel: int, stride: int, relu: bool = False) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.relu = kernel, stride, relu
        limit = math.sqrt(6.0 / ((in_channels + filters) * kernel * kernel))
        self.kernel = nn.Parameter(torch.empty(kernel, kernel, filters, in_channels).uniform_(-limit, limit))
        self.bias = nn.Parameter(torch.zeros(filters))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size, self.stride
        full = F.conv_transpose2d(x, self.kernel.permute(3, 2, 0, 1), self.bias, stride=s)
        before = max(k - s, 0) // 2  # the forward convolution's "same" padding, cropped back off
        h, w = x.shape[2] * s, x.shape[3] * s
        x = full[:, :, before:before + h, before:before + w]
        return F.relu(x) if self.relu else x


class GDN(nn.Module):
    """training/layers/gdn.py: x / sqrt(β + γ·x²) (or · for the inverse), β and γ reparameterised."""

    def __init__(self, channels: int, inverse: bool = False, beta_min: float = 1e-6, gamma_init: float = 0.1,
                 reparam_offset: float = 2.0**-18) -> None:
        super().__init__()
        self.inverse = inverse
        self.pedestal = reparam_offset**2
        self.beta_bound = (beta_min + self.pedestal) ** 0.5
        self.gamma_bound = reparam_offset
        self.beta = nn.Parameter(torch.sqrt(torch.ones(channels) + self.pedestal))
        self.gamma = nn.Parameter(torch.sqrt(gamma_init * torch.eye(channels) + self.pedestal))

    def forward(self, x: torch.Tensor, training: bool = True) -> torch.Tensor:
        beta = lower_bound(self.beta, self.beta_bound, training) ** 2 - self.pedestal
        gamma = lower_bound(self.gamma, self.gamma_bound, training) ** 2 - self.pedestal
        norm = F.conv2d(x * x, gamma[:, :, None, None], beta)
        return x * torch.sqrt(norm) if self.inverse else x * torch.rsqrt(norm)


class FactorizedDensity(nn.Module):
    """training/entropy_models.py's per-channel learned cumulative, for the likelihood of z."""

    def __init__(self, channels: int, filters: Sequence[int] = (3, 3, 3), init_scale: float = 10.0) -> None:
        super().__init__()
        widths = (1, *filters, 1)
        scale = init_scale ** (1.0 / (len(filters) + 1))
        self.depth = len(widths) - 1
        for i in range(self.depth):
            init = float(np.log(np.expm1(1.0 / scale / widths[i + 1])))
            self.register_parameter(f"matrix_{i}", nn.Parameter(torch.full((channels, widths[i + 1], widths[i]), init)))
            self.register_parameter(f"bias_{i}", nn.Parameter(torch.rand(channels, widths[i + 1], 1) - 0.5))
            if i < self.depth - 1:
                self.register_parameter(f"factor_{i}", nn.Parameter(torch.zeros(channels, widths[i + 1], 1)))

    def logits_cumulative(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.depth):
            x = torch.matmul(F.softplus(getattr(self, f"matrix_{i}")), x) + getattr(self, f"bias_{i}")
            if i < self.depth - 1:
                x = x + torch.tanh(getattr(self, f"factor_{i}")) * torch.tanh(x)
        return x

    def likelihood(self, values: torch.Tensor, training: bool = True) -> torch.Tensor:
        """P(bin of each value), values NCHW; the same shape back."""
        moved = values.transpose(0, 1)
        flat = moved.reshape(moved.shape[0], 1, -1)
        lower = self.logits_cumulative(flat - 0.5)
        upper = self.logits_cumulative(flat + 0.5)
        sign = torch.where(lower + upper > 0, -1.0, 1.0).detach()
        lik = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        return lower_bound(lik, LIKELIHOOD_BOUND, training).reshape(moved.shape).transpose(0, 1)


def gaussian_likelihood(values: torch.Tensor, scales: torch.Tensor, training: bool = True) -> torch.Tensor:
    """P(bin of centred `values`) under N(0, scale²) ⊛ U(−½, ½), evaluated in the left tail."""
    values = torch.abs(values)
    upper = 0.5 * torch.erfc(-(0.5 - values) / scales * 2.0**-0.5)
    lower = 0.5 * torch.erfc(-(-0.5 - values) / scales * 2.0**-0.5)
    return lower_bound(upper - lower, LIKELIHOOD_BOUND, training)


class ChannelCodecTorch(nn.Module):
    """The training graph of `ChannelCodec` with its constructor's arguments (the run's --model-args)."""

    def __init__(self, num_filters: int = 128, latent_channels: int = 192, hyper_channels: int = 128,
                 support_channels: int = 128, slices: Sequence[int] | None = None,
                 param_hidden: Sequence[int] = (96, 96), lrp_hidden: int = 64, lmbda: float = 0.01,
                 lmbdas: Sequence[float] | None = None, z_radius: int = 32, level_weight_exponent: float = 0.0,
                 level_synthesis: bool = False, synthesis_residual: Sequence[int] | None = None,
                 channels: int = 3) -> None:
        super().__init__()
        n, m, nh, ns = int(num_filters), int(latent_channels), int(hyper_channels), int(support_channels)
        self.slices = [int(s) for s in (slices or DEFAULT_SLICES)]
        if sum(self.slices) != m:
            raise ValueError(f"slices {self.slices} must sum to latent_channels {m}")
        self.lmbdas = sorted(float(v) for v in lmbdas) if lmbdas else [float(lmbda)]
        self.level_weight_exponent = float(level_weight_exponent)
        self.g_a = nn.ModuleList([Conv(channels, n, 5, 2), GDN(n), Conv(n, n, 5, 2), GDN(n), Conv(n, n, 5, 2), GDN(n),
                                  Conv(n, m, 5, 2)])
        self.g_s = nn.ModuleList([Deconv(m, n, 5, 2), GDN(n, True), Deconv(n, n, 5, 2), GDN(n, True),
                                  Deconv(n, n, 5, 2), GDN(n, True), Deconv(n, channels, 5, 2)])
        self.h_a = nn.ModuleList([Conv(m, nh, 3, relu=True), Conv(nh, nh, 5, 2, relu=True),
                                  Conv(nh, nh, 5, 2, bias=False)])
        self.h_s = nn.ModuleList([Deconv(nh, nh, 5, 2, relu=True), Deconv(nh, nh, 5, 2, relu=True), Conv(nh, ns, 3)])
        h1, h2 = (int(h) for h in param_hidden)
        self.params = nn.ModuleList()
        self.lrp = nn.ModuleList()
        for k, width in enumerate(self.slices):
            before = ns + sum(self.slices[:k])
            self.params.append(nn.ModuleList([Conv(before, h1, 1, relu=True), Conv(h1, h2, 3, relu=True),
                                              Conv(h2, 2 * width, 1)]))
            self.lrp.append(nn.ModuleList([Conv(before + width, int(lrp_hidden), 1, relu=True),
                                           Conv(int(lrp_hidden), width, 3, zero=True)]))
        levels = len(self.lmbdas)
        init = 0.5 * np.log(np.asarray(self.lmbdas) / np.exp(np.mean(np.log(self.lmbdas))))
        gains = torch.tensor(np.repeat(init[:, None], m, axis=1), dtype=torch.float32)
        self.log_gain = nn.Parameter(gains.clone()) if levels > 1 else None
        self.log_inv_gain = nn.Parameter(-gains.clone()) if levels > 1 else None
        # level-conditional synthesis (ChannelCodec's `level_synthesis`): [3, L, N] tables, kept ×10 as there
        self.level_synthesis = bool(level_synthesis) and levels > 1
        self.synthesis_scale = nn.Parameter(torch.zeros(3, levels, n)) if self.level_synthesis else None
        self.synthesis_shift = nn.Parameter(torch.zeros(3, levels, n)) if self.level_synthesis else None
        # residual blocks after the inverse GDNs (ChannelCodec's `synthesis_residual`)
        self.synthesis_residual = [int(b) for b in (synthesis_residual or [0, 0, 0])]
        self.g_s_blocks = nn.ModuleList(nn.ModuleList(ResidualBlock(n, SYNTHESIS_RESIDUAL_GAIN) for _ in range(count))
                                        for count in self.synthesis_residual)
        self.z_density = FactorizedDensity(nh)
        self.register_buffer("log_lmbdas", torch.log(torch.tensor(self.lmbdas, dtype=torch.float64)).float())

    # ---- the Keras model's names ---------------------------------------------------------------
    def named_weights(self) -> Iterator[tuple[str, nn.Parameter]]:
        """(name, parameter) under `ChannelCodec.named_weights`'s names."""
        groups = {"g_a": self.g_a, "g_s": self.g_s, "h_a": self.h_a, "h_s": self.h_s}
        groups |= {f"p{k}": net for k, net in enumerate(self.params)}
        groups |= {f"lrp{k}": net for k, net in enumerate(self.lrp)}
        groups |= {f"g_s_res{i}": stage for i, stage in enumerate(self.g_s_blocks) if len(stage)}
        for group, layers in groups.items():
            for i, layer in enumerate(layers):
                for short, param in layer.named_parameters(recurse=False):
                    yield f"{group}.{i}.{short}", param
        for short, param in self.z_density.named_parameters(recurse=False):
            yield f"z_density.{short}", param
        if self.log_gain is not None:
            yield "log_gain", self.log_gain
            yield "log_inv_gain", self.log_inv_gain
        if self.level_synthesis:
            yield "synthesis_scale", self.synthesis_scale
            yield "synthesis_shift", self.synthesis_shift

    def load_weights(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Take every weight from `arrays` (a snapshot's, Keras names and layouts); a missing or
        misshapen one is an error, extra ones (the coding state's tables) are ignored."""
        with torch.no_grad():
            for name, param in self.named_weights():
                if name not in arrays:
                    raise KeyError(f"the snapshot has no weight {name!r}")
                value = torch.as_tensor(np.asarray(arrays[name], np.float32))
                if tuple(value.shape) != tuple(param.shape):
                    raise ValueError(f"weight {name!r} is {tuple(value.shape)} in the snapshot, {tuple(param.shape)} here")
                param.copy_(value)

    def weight_arrays(self) -> dict[str, np.ndarray]:
        return {name: param.detach().cpu().numpy().astype(np.float32) for name, param in self.named_weights()}

    # ---- training graph ------------------------------------------------------------------------
    def _interpolated(self, table: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        levels = table.shape[0]
        j = torch.clamp(torch.floor(positions).long(), max=levels - 2)
        t = (positions - j.float()).reshape(-1, *([1] * (table.dim() - 1)))
        return (1.0 - t) * table[j] + t * table[j + 1]

    @staticmethod
    def _run(layers: nn.ModuleList, x: torch.Tensor, training: bool) -> torch.Tensor:
        for layer in layers:
            x = layer(x, training) if isinstance(layer, GDN) else layer(x)
        return x

    def _synthesis(self, latent: torch.Tensor, positions: torch.Tensor, training: bool) -> torch.Tensor:
        """g_s, with the per-level scales and shifts and then the residual blocks after each inverse GDN
        when the model has them."""
        if not self.level_synthesis and not any(self.synthesis_residual):
            return self._run(self.g_s, latent, training)
        if self.level_synthesis:
            gain = LEVEL_SYNTHESIS_GAIN
            scales = torch.exp(gain * self._interpolated(self.synthesis_scale.transpose(0, 1), positions))  # [B, 3, N]
            shifts = gain * self._interpolated(self.synthesis_shift.transpose(0, 1), positions)
        x, i = latent, 0
        for layer in self.g_s:
            if isinstance(layer, GDN):
                x = layer(x, training)
                if self.level_synthesis:
                    x = x * scales[:, i, :, None, None] + shifts[:, i, :, None, None]
                for block in self.g_s_blocks[i]:
                    x = block(x)
                i += 1
            else:
                x = layer(x)
        return x

    def losses(self, images: torch.Tensor, noise: Sequence[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """`ChannelCodec.compute_losses(images, training=True)` for NCHW images in [0, 1]. `noise`
        replaces the random draws, in the Keras model's order: the level per image [B], z's uniform
        noise, then each slice's (tests). Training only: the coding state is the Keras model's."""
        training = True
        draws = list(noise) if noise is not None else None

        def uniform(shape: Sequence[int]) -> torch.Tensor:
            if draws is not None:
                return draws.pop(0)
            return torch.rand(shape, device=images.device) - 0.5

        batch = images.shape[0]
        levels = len(self.lmbdas)
        if draws is not None:
            positions = draws.pop(0).float()
        else:
            positions = torch.randint(0, levels, (batch,), device=images.device).float()
        if levels > 1:
            gain = torch.exp(self._interpolated(self.log_gain, positions))[:, :, None, None]
            inv_gain = torch.exp(self._interpolated(self.log_inv_gain, positions))[:, :, None, None]
            lmbda = torch.exp(self._interpolated(self.log_lmbdas, positions))
        else:
            gain = inv_gain = torch.ones((), device=images.device)
            lmbda = torch.exp(self.log_lmbdas[0]).expand(batch)
        y = self._run(self.g_a, images, training) * gain
        z = self._run(self.h_a, y, training)
        z_hat = z + uniform(z.shape)
        support = self._run(self.h_s, z_hat, training)
        bars: list[torch.Tensor] = []
        synth: list[torch.Tensor] = []
        bits_y = torch.zeros(batch, device=images.device)
        for k, y_k in enumerate(torch.split(y, self.slices, dim=1)):
            mean, raw_scale = torch.chunk(self._run(self.params[k], torch.cat([support, *bars], dim=1), training), 2,
                                          dim=1)
            scale = lower_bound(raw_scale, SCALE_BOUND, training)
            likelihood = gaussian_likelihood(y_k + uniform(y_k.shape) - mean, scale, training)
            bits_y = bits_y - torch.log(likelihood).sum(dim=(1, 2, 3))
            bar = y_k + (torch.round(y_k - mean) + mean - y_k).detach()
            bars.append(bar)
            synth.append(bar + 0.5 * torch.tanh(self._run(self.lrp[k], torch.cat([support, *bars], dim=1), training)))
        x_hat = self._synthesis(torch.cat(synth, dim=1) * inv_gain, positions, training)
        bits_z = -torch.log(self.z_density.likelihood(z_hat, training)).sum(dim=(1, 2, 3))
        pixels = images.shape[2] * images.shape[3] * math.log(2.0)
        bits_y, bits_z = bits_y / pixels, bits_z / pixels
        mse_each = torch.mean((images - x_hat) ** 2, dim=(1, 2, 3))
        per_image = lmbda * 255.0**2 * mse_each + bits_y + bits_z
        if self.level_weight_exponent and levels > 1:
            centre = float(np.exp(np.mean(np.log(self.lmbdas))))
            per_image = per_image * torch.pow(lmbda / centre, -self.level_weight_exponent)
        mse = mse_each.mean()
        return {"loss": per_image.mean(), "mse": mse, "bpp": (bits_y + bits_z).mean(), "bpp_y": bits_y.mean(),
                "bpp_z": bits_z.mean(), "psnr": -10.0 * torch.log10(torch.clamp(mse, min=1e-10))}

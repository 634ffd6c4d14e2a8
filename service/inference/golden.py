"""The load-time check every version passes before it serves: a fixed test image through every signature,
and encode → entropy-code → bitstream → decode equal to `reconstruct`. It runs before the version is
swapped in, outside any request, so it calls signatures directly (`LoadedModel.run`)."""

from __future__ import annotations

import numpy as np

from contract.card import InputSpec
from service.inference import imaging
from service.inference.codec import check, model_quality, pack, parse, quality_input, unpack
from service.inference.loaded import LoadedModel, LoadError


def golden_image(height: int, width: int, channels: int) -> np.ndarray:
    """A fixed, smooth test pattern (gradients and a disc): the same bytes on every machine."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    y, x = y / max(height - 1, 1), x / max(width - 1, 1)
    disc = ((x - 0.5) ** 2 + (y - 0.5) ** 2 < 0.09).astype(np.float32)
    planes = [0.6 * disc + 0.2 * x + 0.2 * y, 0.5 * x + 0.3 * disc, 0.8 * y * (1 - disc) + 0.1][:channels]
    return np.clip(np.stack(planes, axis=-1), 0.0, 1.0).astype(np.float32)


def golden_input_size(spec: InputSpec) -> tuple[int, int]:
    """Fixed models: their size. Any-size models: an odd size, so padding and cropping are exercised."""
    return (int(spec.height), int(spec.width)) if not spec.any_size else (43, 37)  # type: ignore[arg-type]


def golden_roundtrip(model: LoadedModel, atol: float = 1e-4) -> None:
    """Warm every signature and prove encode → bitstream → decode reproduces `reconstruct`."""
    spec = model.card.input
    height, width = golden_input_size(spec)
    plan = imaging.plan_size(height, width, spec)
    batch = imaging.to_model(golden_image(height, width, spec.channels), plan)[None]  # float in, float out
    hundredths = model_quality(model, None)
    extra = {k: v[None] for k, v in quality_input(hundredths).items()}
    reference = model.run("reconstruct", {"images": batch, **extra})["images"][0]
    latents = {name: value[0] for name, value in model.run("encode", {"images": batch, **extra}).items()}
    try:
        stream = parse(pack(model, latents, plan, spec.channels, hundredths))
        check(model, stream, max_pixels=height * width)
        decoded = model.run("decode", {**{k: v[None] for k, v in unpack(model, stream).items()}, **extra})["images"][0]
    except Exception as exc:
        raise LoadError(f"golden image round trip failed: {exc}") from exc
    if decoded.shape != reference.shape or not np.allclose(decoded, reference, atol=atol):
        diff = float(np.max(np.abs(decoded - reference))) if decoded.shape == reference.shape else float("nan")
        raise LoadError(f"golden image round trip differs from reconstruct (max abs diff {diff:.3g})")
    if model.card.anomaly is not None:
        scores = model.run("anomaly_score", {"images": batch})
        if scores["score"].shape != (1,) or scores["error_map"].shape[:3] != batch.shape[:3]:
            raise LoadError("anomaly_score must return score [B] and error_map [B, H, W]")

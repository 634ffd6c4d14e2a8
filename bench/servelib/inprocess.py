"""bench/serve.py's in-process rows: the served SavedModel called directly, as the batcher calls it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.servelib.results import InProcess


def _timed(step, batch: int, duration: float, min_calls: int = 3) -> tuple[float, float, float]:
    """(images/s, ms per call, CPU ms per image) of `step`, which handles `batch` images per call."""
    for _ in range(2):  # warm: first calls trace/allocate
        step()
    calls, started, cpu = 0, time.perf_counter(), time.process_time()
    while calls < min_calls or time.perf_counter() - started < duration:
        step()
        calls += 1
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return calls * batch / elapsed, elapsed / calls * 1000, cpu * 1000 / (calls * batch)


def measure_inprocess(
    version_dir: Path, png: bytes, batches: Sequence[int], duration: float, max_batch: int
) -> list[InProcess]:
    """The SavedModel called directly, as the batcher calls it (tf.constant in, .numpy() out)."""
    import tensorflow as tf

    from contract.bitstream import Bitstream
    from contract.card import ModelCard
    from contract.entropy import encode_latents, staged_scales
    from service.inference import imaging

    card = ModelCard.read(version_dir)
    module = tf.saved_model.load(str(version_dir))
    reconstruct, encode = module.signatures["reconstruct"], module.signatures["encode"]
    tables = {k: np.asarray(v.numpy(), np.float64) for k, v in module.signatures["entropy_tables"]().items()}
    tables_hash = bytes.fromhex(card.tables_sha256)[:4]
    source = imaging.read_image(png, card.input.channels, 1 << 30)
    plan = imaging.plan_size(source.height, source.width, card.input)
    one = imaging.to_model(source.pixels, plan)
    stages = {s.scale_source: list(module.signatures[s.scale_source].structured_input_signature[1])
              for s in card.latents if s.coding == "gaussian" and s.scale_source}

    def run_stage(stage: str, feed) -> dict[str, np.ndarray]:  # as LoadedModel.run
        return {k: v.numpy() for k, v in module.signatures[stage](**{k: tf.constant(v) for k, v in feed.items()}).items()}

    def scale_fn():  # one per image, as LoadedModel.scale_fn
        return staged_scales(card.latents, run_stage, stages) if stages else None

    rows: list[InProcess] = []

    def add(what: str, batch: int, step) -> None:
        rows.append(InProcess(what, batch, *_timed(step, batch, duration)))

    for batch in batches:
        images = np.stack([one] * batch)
        add("reconstruct", batch, lambda x=images: reconstruct(images=tf.constant(x))["images"].numpy())
    for batch in batches:
        images = np.stack([one] * batch)

        def encode_step(x=images) -> list[bytes]:
            latents = {k: v.numpy() for k, v in encode(images=tf.constant(x)).items()}
            streams = []
            for i in range(len(x)):
                payloads = encode_latents(card.latents, {k: v[i] for k, v in latents.items()}, tables, scale_fn())
                streams.append(Bitstream(card.name, card.version, tables_hash, plan.height, plan.width,
                                         source.channels, payloads).to_bytes())
            return streams

        add("encode+entropy", batch, encode_step)

    def with_png() -> None:  # what a request adds around the model: decode the PNG, encode the answer
        decoded = [imaging.to_model(imaging.read_image(png, card.input.channels, 1 << 30).pixels, plan)
                   for _ in range(max_batch)]
        out = reconstruct(images=tf.constant(np.stack(decoded)))["images"].numpy()
        for pixels in out:
            imaging.mse_psnr(one, pixels)
            imaging.encode_image(imaging.from_model(pixels, plan))

    add("reconstruct+png", max_batch, with_png)
    return rows

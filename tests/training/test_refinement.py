"""Encoder effort (`encode_refined`): latent refinement by stochastic Gumbel annealing.

What matters to a user: effort 0 is exactly the plain encoder, a refined stream is an ordinary stream
(same decoder, real bits), and refinement lowers the loss the codec is built to minimise, measured
the way the coder codes (integer entropy parameters, rounded symbols, real code lengths).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from contract.card import ModelCard, Provenance
from service.inference import codec as service_codec
from service.inference import imaging
from service.inference.errors import InvalidEffort
from service.inference.registry import ModelRegistry
from tests.training.test_codec_cc import TINY, textured, train_tiny
from training.export import export_model
from training.models import refinement
from training.models.codec_cc import MAX_EFFORT, ChannelCodec


@pytest.fixture(scope="module")
def model() -> ChannelCodec:
    """The tiny codec of test_codec_cc with level-conditional synthesis, trained a little, finalized."""
    return train_tiny(seed=1, level_synthesis=True)[0]


def coded_loss(model: ChannelCodec, image: tf.Tensor, latents: dict[str, tf.Tensor], quality: float) -> float:
    """λ·255²·MSE + bpp of what a stream of these latents costs and decodes to (exact code lengths)."""
    bits = sum(float(v[0]) for v in model.coded_bits(latents).values())
    decoded = model.decode(latents, tf.constant([quality]))
    mse = float(tf.reduce_mean(tf.square(decoded - image)))
    pixels = int(image.shape[1]) * int(image.shape[2])
    lmbda = float(model._lmbda_at(tf.constant([quality - 1.0]))[0])
    return lmbda * 255.0**2 * mse + bits / pixels


def test_annealed_rounding_ends_at_the_nearest_integer_and_is_reproducible() -> None:
    values = tf.constant(np.random.default_rng(0).uniform(-4, 4, size=(2, 8, 8, 3)).astype(np.float32))
    seed = tf.constant([1, 2])
    hot = refinement.annealed_round(values, tf.constant([0.5, 0.5]), seed)
    cold = refinement.annealed_round(values, tf.constant([0.01, 0.01]), seed)
    np.testing.assert_array_equal(hot.numpy(), refinement.annealed_round(values, tf.constant([0.5, 0.5]), seed).numpy())
    floor = np.floor(values.numpy())
    assert np.all(hot.numpy() >= floor - 1e-6) and np.all(hot.numpy() <= floor + 1 + 1e-6)
    # far from the half-way points a cold sample is the rounded value
    clear = np.abs(values.numpy() - np.round(values.numpy())) < 0.4
    np.testing.assert_allclose(cold.numpy()[clear], np.round(values.numpy())[clear], atol=1e-3)
    assert float(tf.reduce_mean(tf.abs(hot - tf.round(values)))) > float(tf.reduce_mean(tf.abs(cold - tf.round(values))))
    with tf.GradientTape() as tape:
        tape.watch(values)
        out = tf.reduce_sum(refinement.annealed_round(values, tf.constant([0.5, 0.5]), seed))
    assert float(tf.reduce_sum(tf.abs(tape.gradient(out, values)))) > 0


def test_effort_zero_codes_what_encode_codes_image_by_image(model: ChannelCodec) -> None:
    images = tf.constant(textured(2, 64, seed=3))
    quality = tf.constant([2.0, 2.0])
    plain = model.encode(images, quality)
    mixed = model.encode_refined(images, quality, tf.constant([0, 2]))
    for name, value in plain.items():
        np.testing.assert_array_equal(mixed[name].numpy()[0], value.numpy()[0])  # effort 0: untouched
    assert any(not np.array_equal(mixed[n].numpy()[1], v.numpy()[1]) for n, v in plain.items())


def test_refinement_lowers_the_coded_rate_distortion_loss(model: ChannelCodec) -> None:
    image = tf.constant(textured(1, 64, seed=7))
    for quality in (1.0, 3.0):
        q = tf.constant([quality])
        plain = coded_loss(model, image, model.encode(image, q), quality)
        refined = coded_loss(model, image, model.encode_refined(image, q, tf.constant([MAX_EFFORT])), quality)
        assert refined < 0.995 * plain, (quality, plain, refined)


def test_refinement_is_deterministic(model: ChannelCodec) -> None:
    image = tf.constant(textured(1, 64, seed=8))
    once = model.encode_refined(image, tf.constant([2.0]), tf.constant([1]))
    again = model.encode_refined(image, tf.constant([2.0]), tf.constant([1]))
    for name in once:
        np.testing.assert_array_equal(once[name].numpy(), again[name].numpy())


def test_checkerboard_models_have_no_effort_setting() -> None:
    model = ChannelCodec(**TINY, checkerboard=True)
    assert model.effort_spec() is None
    with pytest.raises(NotImplementedError):
        model.encode_refined(tf.zeros([1, 64, 64, 3]), tf.constant([1.0]), tf.constant([1]))


def test_exported_effort_runs_through_the_service_and_its_streams_decode(model: ChannelCodec, tmp_path: Path) -> None:
    card = ModelCard(
        name="cc", version=1, architecture="codec_cc", config=model.get_config(), input=model.input_spec_card(),
        latents=model.latent_specs(), tables_sha256=model.fingerprint(), rate=model.rate_spec(),
        effort=model.effort_spec(), training=Provenance(dataset="synthetic", command="tests", steps=30))
    assert card.effort is not None and card.effort.max_effort >= 2
    export_model(model, card, tmp_path)
    pixels = textured(1, 64, seed=11)[0]
    source = imaging.SourceImage(pixels=pixels, channels=3, format="png")

    async def serve() -> dict:
        registry = ModelRegistry(tmp_path)
        report = await registry.refresh()
        assert not report.failed, report
        loaded = registry.resolve("cc")
        out: dict = {}
        for effort in (0, 2):
            encoded = await service_codec.encode(loaded, source, quality=2.0, effort=effort)
            decoded, _ = await service_codec.decode(loaded, service_codec.parse(encoded.stream), max_pixels=1 << 20)
            direct = await service_codec.reconstruct(loaded, source, quality=2.0, effort=effort)
            out[effort] = (encoded, decoded, direct)
        refusals = []
        for kwargs in ({"effort": card.effort.max_effort + 1}, {"effort": 1, "effort_max_pixels": 64 * 63},
                       {"effort": 1, "effort_max_pixels": 0},
                       {"effort": 1, "quality": None, "target": service_codec.SizeTarget(max_bytes=10_000)}):
            kwargs.setdefault("quality", 2.0)
            with pytest.raises(InvalidEffort) as caught:
                await service_codec.encode(loaded, source, **kwargs)
            refusals.append(caught.value.message)
        await registry.close()
        return out | {"refusals": refusals}

    result = asyncio.run(serve())
    (plain, plain_px, _), (refined, refined_px, direct) = result[0], result[2]
    assert plain.stream != refined.stream  # a different stream of the same model...
    assert service_codec.parse(refined.stream).version == service_codec.parse(plain.stream).version
    np.testing.assert_array_equal(refined_px, direct.pixels)  # ...that /reconstruct shows as /decode would
    lmbda = card.rate.lmbda_at(2.0)

    def loss(encoded, decoded) -> float:
        mse = float(np.mean((decoded.astype(np.float64) / 255 - np.round(pixels * 255) / 255) ** 2))
        return lmbda * 255**2 * mse + encoded.bpp

    assert loss(refined, refined_px) < loss(plain, plain_px)
    assert "[0, 5]" in result["refusals"][0] or f"[0, {card.effort.max_effort}]" in result["refusals"][0]
    assert "AEC_EFFORT_MAX_PIXELS" in result["refusals"][1]
    assert "turned off" in result["refusals"][2]
    assert "size target" in result["refusals"][3]


def test_models_without_the_setting_refuse_effort(tmp_path: Path) -> None:
    """natural version 9 (the shipped `codec`) has no encode_refined: effort 0 is fine, effort 1 a 422."""
    (tmp_path / "natural").mkdir()
    (tmp_path / "natural" / "9").symlink_to(Path(__file__).resolve().parents[2] / "models_store" / "natural" / "9")

    async def run() -> str:
        registry = ModelRegistry(tmp_path)
        await registry.refresh()
        loaded = registry.resolve("natural", 9)
        assert loaded.card.effort is None
        assert service_codec.model_effort(loaded, 0) == 0
        with pytest.raises(InvalidEffort) as caught:
            service_codec.model_effort(loaded, 1)
        await registry.close()
        return caught.value.message

    assert "no encoder effort" in asyncio.run(run())

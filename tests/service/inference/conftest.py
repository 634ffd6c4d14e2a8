"""Fixtures of the inference tests."""

from __future__ import annotations

import asyncio

import pytest

from service.inference.registry import ModelRegistry


@pytest.fixture(scope="module")
def codec_model(model_store):
    """The fixture store's any-size codec, loaded by the registry as the service loads it."""

    async def load():
        registry = ModelRegistry(model_store.path)
        await registry.refresh()
        return registry.resolve(model_store.codec)

    return asyncio.run(load())

"""A model's card names the tile halo it needs (its receptive field); the server's setting overrides it
only when the operator sets one."""

from __future__ import annotations

import pytest

from contract.card import InputSpec
from service.inference import tiling


def test_the_cards_halo_wins_over_an_unset_server_halo():
    assert tiling.Tiling(1024).for_model(384) == tiling.Tiling(1024, 384)
    assert tiling.Tiling(1024).for_model(None) == tiling.Tiling(1024, tiling.DEFAULT_HALO)


def test_an_operators_halo_overrides_the_card():
    assert tiling.Tiling(1024, 0).for_model(384) == tiling.Tiling(1024, 0)


def test_spans_refuse_an_unresolved_halo():
    with pytest.raises(ValueError, match="for_model"):
        tiling.spans(2048, tiling.Tiling(1024), 64)


def test_the_halo_decides_which_images_run_in_tiles():
    assert not tiling.Tiling(1024, 384).applies(1792, 1792)
    assert tiling.Tiling(1024, 192).applies(1792, 1792)


def test_an_exported_codec_card_names_its_halo(codec_model):
    """Export writes the architecture's receptive field into the card, and the service tiles with it."""
    assert codec_model.card.input.tile_halo == 192
    from service.inference.codec import _model_tiling

    assert _model_tiling(codec_model, tiling.Tiling(1024)).halo == 192
    assert InputSpec(channels=3, any_size=True, size_multiple=64, size_policy="pad").tile_halo is None

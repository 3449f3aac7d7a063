"""Pillow: images by mode and size, whatever the concrete image class."""

from __future__ import annotations

import io
from collections.abc import Hashable

import pytest

pytest.importorskip("PIL")

from PIL import Image

from tokengate.hashing import HandlerRegistry, make_hashable
from tokengate.numeric import pil_image_fingerprint, register_handlers

REGISTRY = HandlerRegistry()
register_handlers(REGISTRY)

MODES = ["1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "F", "I;16"]


def fingerprint(obj: object) -> Hashable:
    return make_hashable(obj, registry=REGISTRY)


@pytest.mark.parametrize("mode", MODES)
def test_image_is_keyed_by_mode_and_size(mode: str) -> None:
    image = Image.new(mode, (7, 3))
    key = fingerprint(image)
    assert key == ("PIL.Image", mode, (7, 3))
    assert isinstance(key, tuple)
    assert all(type(size) is int for size in key[2])


def test_contents_do_not_matter_size_and_mode_do() -> None:
    black = Image.new("RGB", (4, 4), (0, 0, 0))
    white = Image.new("RGB", (4, 4), (255, 255, 255))
    assert fingerprint(black) == fingerprint(white)
    assert fingerprint(black) != fingerprint(Image.new("RGB", (4, 5)))
    assert fingerprint(black) != fingerprint(black.convert("L"))


def test_opened_image_subclass_gets_the_image_family() -> None:
    buffer = io.BytesIO()
    Image.new("RGBA", (5, 2)).save(buffer, format="PNG")
    buffer.seek(0)
    with Image.open(buffer) as opened:
        assert type(opened) is not Image.Image
        assert isinstance(opened, Image.Image)
        assert fingerprint(opened) == ("PIL.Image", "RGBA", (5, 2))


def test_handler_can_be_called_directly() -> None:
    assert pil_image_fingerprint(Image.new("L", (1, 2))) == ("PIL.Image", "L", (1, 2))

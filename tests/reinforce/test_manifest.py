"""`ReinforcedManifest`: the one reader and writer of a reinforced dataset's `manifest.json`, and the run settings
that shape the stored augmentations (`aug_scale`, `aug_ops`)."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest
from tiny_models import reinforce_config

from edgevl.data.augment import decode_paug
from edgevl.data.readers import open_dataset
from edgevl.data.readers.reinforced_manifest import ReinforcedManifest
from edgevl.errors import ConfigError
from edgevl.reinforce.generate import reinforce
from edgevl.reinforce.verify import verify

TEACHERS = [{"name": "a", "embed_dim": 4, "logit_scale": 100.0}, {"name": "b", "embed_dim": 6, "logit_scale": 50}]


def _write(folder: Path, data: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(data if isinstance(data, str) else json.dumps(data))
    return folder


def test_a_written_manifest_reads_back_to_the_same_bytes(reference, tmp_path):
    out, returned = reference
    manifest = ReinforcedManifest.read(out)
    assert manifest.is_full and manifest.to_dict() == returned
    assert [(t.name, t.embed_dim) for t in manifest.teachers] == [(t["name"], 24 if i == 0 else 16)
                                                                  for i, t in enumerate(returned["teachers"])]
    assert manifest.synthetic_keys == ["syn_text"] and manifest.stores_synthetic_captions
    manifest.write(tmp_path)
    for name in ("manifest.json", "sizes.json"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name


def test_the_minimal_hand_written_form(tmp_path):
    manifest = ReinforcedManifest.read(_write(tmp_path / "dr", {"teachers": TEACHERS, "note": "ignored"}))
    assert not manifest.is_full and manifest.stores_synthetic_captions and manifest.synthetic_keys == []
    assert [(t.name, t.embed_dim, t.logit_scale) for t in manifest.teachers] == [("a", 4, 100.0), ("b", 6, 50.0)]
    teacher_only = ReinforcedManifest.read(_write(tmp_path / "t", {"teachers": TEACHERS, "num_syn_captions": 0}))
    assert not teacher_only.stores_synthetic_captions


@pytest.mark.parametrize("content, message", [
    ("{not json", r"cannot read .*manifest\.json"),
    ([1, 2], r"manifest\.json must hold a JSON object"),
    ({"num_syn_captions": 0}, r"manifest\.json: 'teachers' must be a non-empty list"),
    ({"teachers": [{"name": "a", "embed_dim": 4}]}, r"manifest\.json: teacher 0 needs name, embed_dim and logit_scale"),
    ({"teachers": [{"name": "a", "embed_dim": 0, "logit_scale": 1}]}, r"teacher 0 \('a'\) has non-positive"),
    ({"teachers": TEACHERS, "num_syn_captions": "2"}, r"manifest\.json: 'num_syn_captions' must be int"),
    ({"teachers": TEACHERS, "format": "edgevl-reinforced/0"}, r"has format 'edgevl-reinforced/0'"),
])
def test_invalid_manifests_fail_naming_the_file_and_the_key(tmp_path, content, message):
    with pytest.raises(ConfigError, match=message):
        ReinforcedManifest.read(_write(tmp_path, content))


def test_a_full_manifest_must_have_every_field(reference, tmp_path):
    data = json.loads((reference[0] / "manifest.json").read_text())
    cases = [({k: v for k, v in data.items() if k != "totals"}, r"lacks \['totals'\]"),
             ({**data, "num_augs": "2"}, r"'num_augs' must be int"),
             ({**data, "embeddings": {**data["embeddings"], "member": None}}, r"'embeddings\.member' must be str"),
             ({**data, "shards": [{k: v for k, v in data["shards"][0].items() if k != "sha256"}]},
              r"shard 0 lacks \['sha256'\]")]
    for i, (content, message) in enumerate(cases):
        with pytest.raises(ConfigError, match=message):
            ReinforcedManifest.read(_write(tmp_path / str(i), content))


def test_the_reader_and_verify_fail_loudly_on_a_bad_manifest(reference, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(reference[0], copy)
    (copy / "manifest.json").write_text('{"teachers": ')
    with pytest.raises(ConfigError, match=r"cannot read .*copy/manifest\.json"):
        open_dataset(f"reinforced:{copy}/00000000.tar?size=32")
    _write(copy, {"teachers": TEACHERS})
    with pytest.raises(ConfigError, match="nothing to verify against"):
        verify(copy)
    shutil.rmtree(copy / "_state")
    (copy / "manifest.json").unlink()  # DataCompDR's own shards come without one: every sample has captions
    assert open_dataset(f"reinforced:{copy}/00000000.tar?size=32").synthetic


def test_aug_scale_and_ops_shape_the_stored_augmentations(tiny, reference, tmp_path):
    data = str(Path(tiny.data).parent / "00000.tar")
    manifest = reinforce(reinforce_config(tiny, tmp_path, data=data, aug_ops=0))
    assert manifest["augmentation"]["num_ops"] == 0 and manifest["settings"]["aug_ops"] == 0
    assert verify(tmp_path).ok
    default = json.loads((reference[0] / "manifest.json").read_text())
    assert default["augmentation"]["num_ops"] == 2 and default["settings"]["aug_ops"] == 2

    def ops(tar: Path) -> list:
        with tarfile.open(tar) as f:
            members = [f.extractfile(m).read() for m in f.getmembers() if m.name.endswith(".paug.json")]
        return [record[1] for m in members for record in decode_paug(m)]

    assert all(o == [] for o in ops(tmp_path / "00000000.tar"))
    assert all(o != [] for o in ops(reference[0] / "00000000.tar"))
    scaled = reinforce(reinforce_config(tiny, tmp_path / "scaled", data=data, aug_scale=(0.9, 1.0)))
    assert scaled["augmentation"]["scale"] == scaled["settings"]["aug_scale"] == [0.9, 1.0]


@pytest.mark.parametrize("kw, message", [({"aug_scale": (0.5, 0.2)}, "--aug-scale must be two numbers"),
                                         ({"aug_scale": (0.0, 1.0)}, "--aug-scale"),
                                         ({"aug_ops": -1}, "--aug-ops must be >= 0")])
def test_bad_augmentation_settings_name_the_flag(tiny, tmp_path, kw, message):
    with pytest.raises(ConfigError, match=message):
        reinforce_config(tiny, tmp_path, **kw).check()


def test_a_run_recorded_before_the_augmentation_settings_resumes_with_their_defaults(tiny, reference, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(reference[0], copy)
    state = copy / "_state" / "settings.json"
    old = {k: v for k, v in json.loads(state.read_text()).items() if k not in ("aug_scale", "aug_ops")}
    state.write_text(json.dumps(old))
    assert reinforce(reinforce_config(tiny, copy)) == reference[1]
    state.write_text(json.dumps(old))
    with pytest.raises(ConfigError, match=r"different settings \(aug_ops: "):
        reinforce(reinforce_config(tiny, copy, aug_ops=0))

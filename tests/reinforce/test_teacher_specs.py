"""Teachers named by an official tag or an `hf-hub:` spec, read offline from a hub cache in huggingface_hub's
layout: the same weights give the same shards as a plain file, and the manifest names the resolved file."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from tiny_models import make_world

import edgevl
from edgevl.errors import CheckpointError, ConfigError
from edgevl.models import pretrained
from edgevl.models.factory import parse_model_spec
from edgevl.models.pretrained import PretrainedTag
from edgevl.reinforce.config import ReinforceConfig
from edgevl.reinforce.generate import reinforce
from edgevl.reinforce.teachers import OnlineTeacher
from hub_cache import add_snapshot, tensor_bytes

pytest.importorskip("huggingface_hub")

MODEL, REPO, FILE = "world-teacher-vit", "edgevl-test/teacher", "weights.safetensors"


@pytest.fixture
def cached_teacher(hub_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Random `world-teacher-vit` weights served offline as its tag `test_set` and as `hf-hub:REPO` (with its
    config); returns the cached file."""
    torch.manual_seed(0)
    model = edgevl.create_model(MODEL)
    monkeypatch.setattr(pretrained, "_TAGS", (*pretrained._TAGS, PretrainedTag(MODEL, "test_set", REPO, FILE)))
    config = json.dumps({"model_cfg": model.model_cfg, "preprocess_cfg": model.preprocess_cfg}).encode()
    files = {FILE: tensor_bytes(model.state_dict(), ".safetensors"), "open_clip_config.json": config,
             "open_clip_model.safetensors": tensor_bytes(model.state_dict(), ".safetensors")}
    return add_snapshot(hub_root, REPO, files, "c" * 40) / FILE


def _run(data: str, out: Path, teacher: str) -> dict:
    return reinforce(ReinforceConfig(data=data, out=str(out), teachers=(teacher,), num_augs=2, batch_size=4,
                                     progress=False))


def test_a_tagged_teacher_stores_what_its_file_stores(cached_teacher, tmp_path):
    data = make_world(tmp_path, 4, 4)
    plain = shutil.copyfile(cached_teacher, tmp_path / "teacher.safetensors")
    by_tag = _run(data, tmp_path / "tag", f"{MODEL}:test_set")
    by_file = _run(data, tmp_path / "file", f"{MODEL}:{plain}")
    for shard in by_file["shards"]:
        assert (tmp_path / "tag" / shard["name"]).read_bytes() == (tmp_path / "file" / shard["name"]).read_bytes()
    record = by_tag["teachers"][0]
    assert record["name"] == f"{MODEL}:test_set"
    assert Path(record["weights"]) == cached_teacher  # the snapshot path names repository and commit
    assert record["weights_sha256"] == hashlib.sha256(plain.read_bytes()).hexdigest()
    assert record["weights_sha256"] == by_file["teachers"][0]["weights_sha256"]


def test_a_hub_repository_teacher_embeds_like_its_file(cached_teacher, tmp_path):
    plain = shutil.copyfile(cached_teacher, tmp_path / "teacher.safetensors")
    from_hub = OnlineTeacher(f"hf-hub:{REPO}", torch.device("cpu"))
    from_file = OnlineTeacher(f"{MODEL}:{plain}", torch.device("cpu"))
    pixels = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    assert torch.equal(from_hub.embed_images(pixels), from_file.embed_images(pixels))
    assert from_hub.describe()["weights_sha256"] == from_file.weights_sha256


def test_teacher_specs_fail_with_one_line(hub_root):
    with pytest.raises(ConfigError, match=r"unknown pretrained tag 'laion' for model 'ViT-L-14'.*known tags: openai"):
        parse_model_spec("ViT-L-14:laion", "teacher", named_weights=True)
    with pytest.raises(ConfigError, match="not a hub spec"):
        parse_model_spec("hf-hub:no-org", "teacher", named_weights=True)
    with pytest.raises(ConfigError, match="weights 'missing.pt' not found"):
        parse_model_spec("ViT-L-14:missing.pt", "teacher", named_weights=True)
    with pytest.raises(ConfigError, match="weights 'openai' not found"):  # captioners take no tags
        parse_model_spec("ViT-L-14:openai", "captioner")
    for spec in ("ViT-L-14:openai", "hf-hub:apple/MobileCLIP-B-OpenCLIP"):  # fails before building the model
        with pytest.raises(CheckpointError, match="not in the cache.*fetch it by hand: hf download"):
            OnlineTeacher(spec, torch.device("cpu"))

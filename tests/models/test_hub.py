"""`hf-hub:` weights read offline from a hub cache built in huggingface_hub's real on-disk layout."""

from __future__ import annotations

import json
import sys

import pytest
import torch

import edgevl
from edgevl.errors import CheckpointError, ConfigError
from edgevl.models import hub
from hub_cache import add_snapshot, tensor_bytes

pytest.importorskip("huggingface_hub")

REPO = "edgevl-test/student"
COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


def _weights(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return edgevl.create_model("world-student-mci").state_dict()


def _same(model, state_dict) -> bool:
    return all(torch.equal(v, state_dict[k]) for k, v in model.state_dict().items())


def test_spec_parsing():
    assert hub.parse_hub_spec("hf-hub:org/repo") == hub.HubRef("org/repo")
    assert hub.parse_hub_spec("hf-hub:org/repo/sub/w.pt@v2") == hub.HubRef("org/repo", "sub/w.pt", "v2")
    assert hub.parse_hub_spec("hf-hub:org/repo", revision="v3").revision == "v3"
    with pytest.raises(ConfigError, match="pins revision 'v2' but revision='v3'"):
        hub.parse_hub_spec("hf-hub:org/repo@v2", revision="v3")
    with pytest.raises(ConfigError, match="not a hub spec"):
        hub.parse_hub_spec("hf-hub:repo-without-org")


def test_cache_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub.cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    assert hub.cache_dir() == tmp_path / "elsewhere"


def test_cached_weights_load_offline_safetensors_first(hub_root):
    wanted, other = _weights(1), _weights(2)
    add_snapshot(hub_root, REPO, {"open_clip_model.safetensors": tensor_bytes(wanted, ".safetensors"),
                                  "open_clip_pytorch_model.bin": tensor_bytes(other, ".bin")}, COMMIT_A)
    model = edgevl.create_model("world-student-mci", pretrained=f"hf-hub:{REPO}")
    assert _same(model, wanted)
    # a named pickled file is read through its .safetensors twin when the repository has one
    add_snapshot(hub_root, "edgevl-test/named", {"w.bin": tensor_bytes(other, ".bin"),
                                                 "w.safetensors": tensor_bytes(wanted, ".safetensors")}, COMMIT_A)
    assert _same(edgevl.create_model("world-student-mci", pretrained="hf-hub:edgevl-test/named/w.bin"), wanted)


def test_pickled_weights_when_no_safetensors(hub_root):
    wanted = _weights(3)
    add_snapshot(hub_root, REPO, {"open_clip_pytorch_model.bin": tensor_bytes(wanted, ".bin")}, COMMIT_A)
    assert _same(edgevl.create_model("world-student-mci", pretrained=f"hf-hub:{REPO}"), wanted)


def test_hub_model_name_reads_the_repository_config(hub_root):
    wanted = _weights(4)
    cfg = edgevl.get_model_config("world-student-mci")
    pp = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "interpolation": "bilinear"}
    config = json.dumps({"model_cfg": cfg, "preprocess_cfg": pp}).encode()
    add_snapshot(hub_root, REPO, {"open_clip_config.json": config,
                                  "open_clip_model.safetensors": tensor_bytes(wanted, ".safetensors")}, COMMIT_A)
    model, _, val = edgevl.create_model_and_transforms(f"hf-hub:{REPO}")
    assert _same(model, wanted) and model.model_name == f"hf-hub:{REPO}"
    assert (val.cfg.mean, val.cfg.std, val.cfg.interpolation) == ((0.5,) * 3, (0.25,) * 3, "bilinear")
    # as `pretrained`, the repository's preprocessing applies to the named model too
    _, _, val = edgevl.create_model_and_transforms("world-student-mci", pretrained=f"hf-hub:{REPO}")
    assert val.cfg.mean == (0.5,) * 3


def test_revision_pinning(hub_root):
    main, tagged = _weights(5), _weights(6)
    add_snapshot(hub_root, REPO, {"open_clip_model.safetensors": tensor_bytes(main, ".safetensors")}, COMMIT_A)
    add_snapshot(hub_root, REPO, {"open_clip_model.safetensors": tensor_bytes(tagged, ".safetensors")}, COMMIT_B,
                 ref="v1")
    assert _same(edgevl.create_model("world-student-mci", pretrained=f"hf-hub:{REPO}"), main)
    assert _same(edgevl.create_model("world-student-mci", pretrained=f"hf-hub:{REPO}@v1"), tagged)
    assert _same(edgevl.create_model("world-student-mci", pretrained=f"hf-hub:{REPO}", revision="v1"), tagged)
    assert _same(edgevl.create_model("world-student-mci", pretrained=f"hf-hub:{REPO}@{COMMIT_B}"), tagged)


def test_missing_file_is_one_line_with_the_fetch_command(hub_root):
    with pytest.raises(CheckpointError) as info:
        edgevl.create_model("world-student-mci", pretrained=f"hf-hub:{REPO}@v9")
    message = str(info.value)
    assert "\n" not in message and REPO in message and str(hub_root) in message
    assert message.endswith(f"fetch it by hand: hf download {REPO} open_clip_model.safetensors --revision v9")


def test_an_interrupted_download_counts_as_missing(hub_root):
    blobs = hub_root / ("models--" + REPO.replace("/", "--")) / "blobs"
    blobs.mkdir(parents=True)
    (blobs / ("0" * 64 + ".incomplete")).write_bytes(tensor_bytes(_weights(7), ".safetensors")[:100])
    with pytest.raises(CheckpointError, match="not in the cache, and the hub is offline or unreachable"):
        edgevl.create_model("world-student-mci", pretrained=f"hf-hub:{REPO}")


def test_a_damaged_blob_is_refused(hub_root):
    snapshot = add_snapshot(hub_root, REPO, {"open_clip_model.safetensors": tensor_bytes(_weights(8), ".safetensors")},
                            COMMIT_A)
    blob = (snapshot / "open_clip_model.safetensors").resolve()
    blob.write_bytes(blob.read_bytes()[:-1] + b" ")
    with pytest.raises(CheckpointError, match=r"cached open_clip_model.safetensors of edgevl-test/student is damaged"):
        edgevl.create_model("world-student-mci", pretrained=f"hf-hub:{REPO}")


def test_weights_of_another_architecture_name_the_mismatching_keys(hub_root):
    torch.manual_seed(0)
    vit = edgevl.create_model("world-teacher-vit").state_dict()
    add_snapshot(hub_root, REPO, {"open_clip_model.safetensors": tensor_bytes(vit, ".safetensors")}, COMMIT_A)
    with pytest.raises(CheckpointError, match=r"does not match the model: \d+ missing \(visual\.trunk\..*; "
                                              r"\d+ unexpected \("):
        edgevl.create_model("world-student-mci", pretrained=f"hf-hub:{REPO}")


def test_without_huggingface_hub_the_error_names_the_extra(hub_root, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ConfigError, match=r"needs huggingface_hub: pip install 'edgevl\[hub\]'"):
        edgevl.create_model("world-student-mci", pretrained=f"hf-hub:{REPO}")


def test_commands_resolve_tags_and_hub_specs_without_touching_the_cache(hub_root):
    from edgevl.models.factory import resolve_model_name

    assert resolve_model_name("MobileCLIP-S2", "datacompdr") == "MobileCLIP-S2"
    assert resolve_model_name(None, f"hf-hub:{REPO}") == f"hf-hub:{REPO}"
    assert resolve_model_name(None, "dfndr2b", default="MobileCLIP2-S0") == "MobileCLIP2-S0"
    with pytest.raises(ConfigError, match="is a tag: name its model with --model"):
        resolve_model_name(None, "datacompdr")


def test_hub_model_name_with_the_same_spec_as_pretrained(hub_root):
    wanted = _weights(9)
    config = json.dumps({"model_cfg": edgevl.get_model_config("world-student-mci")}).encode()
    add_snapshot(hub_root, REPO, {"open_clip_config.json": config,
                                  "open_clip_model.safetensors": tensor_bytes(wanted, ".safetensors")}, COMMIT_A)
    assert _same(edgevl.create_model(f"hf-hub:{REPO}", pretrained=f"hf-hub:{REPO}"), wanted)
    with pytest.raises(ConfigError, match="brings its weights"):
        edgevl.create_model(f"hf-hub:{REPO}", pretrained="hf-hub:other/repo")


def test_revision_needs_a_hub_source(tmp_path):
    folder = edgevl.save_pretrained(edgevl.create_model("world-student-mci"), tmp_path / "m")
    with pytest.raises(ConfigError, match="revision='v1' applies only to official tags and hf-hub: specs"):
        edgevl.create_model("world-student-mci", pretrained=folder, revision="v1")

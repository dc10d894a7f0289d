"""Checkpoint reading, layout detection/conversion, load-error messages and save/load round trips."""

from __future__ import annotations

import collections
import json

import pytest
import torch
from clip_fixture_models import fixture_path, io_tensors, register
from safetensors.torch import load_file

import edgevl
from edgevl.errors import CheckpointError
from edgevl.models.checkpoint import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    detect_layout,
    is_reparameterized,
    load_state_dict,
    to_open_clip_layout,
)


@pytest.fixture(scope="module")
def student():
    return edgevl.create_model("world-student-mci")


def test_detect_layouts():
    v1 = load_file(str(fixture_path("mobileclip_s0_tiny", "train")))
    oc = load_file(str(fixture_path("oc_clip_vit_tiny", "train")))
    custom = load_file(str(fixture_path("oc_mobileclip2_s0_tiny", "reparam")))
    assert (detect_layout(v1), detect_layout(oc), detect_layout(custom)) == ("v1", "open_clip", "edgevl")
    assert is_reparameterized(custom) and not is_reparameterized(v1)


def test_mismatch_error_names_missing_unexpected_and_shapes(student):
    sd = dict(student.state_dict())
    sd.pop("text.ln_final.weight")
    sd["text.extra_thing"] = torch.zeros(1)
    sd["text.text_projection"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError) as info:
        edgevl.load_checkpoint(student, sd)
    msg = str(info.value)
    assert "1 missing (text.ln_final.weight)" in msg
    assert "1 unexpected (text.extra_thing)" in msg
    assert "text.text_projection: checkpoint (3, 3) vs model (32, 64)" in msg


def test_non_strict_loads_matching_entries(student):
    model = edgevl.create_model("world-student-mci")
    sd = {
        k: v + 1 for k, v in student.state_dict().items() if k.startswith("text.") and v.is_floating_point()
    }
    report = edgevl.load_checkpoint(model, sd, strict=False)
    assert report["missing"] and not report["unexpected"]
    assert torch.equal(model.text.text_projection, student.text.text_projection + 1)


def test_reparameterized_weights_into_train_model_hint(tmp_path):
    name = register("oc_mobileclip2_s0_tiny", tmp_path)
    model = edgevl.create_model(name)
    with pytest.raises(CheckpointError, match="re-parameterized"):
        edgevl.load_checkpoint(model, fixture_path("oc_mobileclip2_s0_tiny", "reparam"))


class NotATensor:
    pass


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "payload": NotATensor()}, path)
    with pytest.raises(CheckpointError, match="refusing to load .*evil.pt"):
        load_state_dict(path)


def test_non_tensor_entries_are_refused(tmp_path):
    path = tmp_path / "odd.pt"
    torch.save({"w": torch.zeros(2), "epoch": 3}, path)
    with pytest.raises(CheckpointError, match="'epoch' is a int"):
        load_state_dict(path)


def test_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_state_dict(bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_state_dict(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="no weights file"):
        load_state_dict(tmp_path)


def test_pt_with_wrapper_and_module_prefix_in_open_clip_layout(tmp_path):
    # the OpenAI-ViT teacher in open_clip's plain CLIP layout (text tower at top level), DataParallel-saved
    name = register("oc_clip_vit_tiny", tmp_path)
    sd = load_file(str(fixture_path("oc_clip_vit_tiny", "train")))
    path = tmp_path / "teacher.pt"
    torch.save({"state_dict": collections.OrderedDict((f"module.{k}", v) for k, v in sd.items())}, path)
    model = edgevl.create_model(name, pretrained=path)
    io = io_tensors("oc_clip_vit_tiny")
    with torch.no_grad():
        emb = model.encode_text(io["input.text_tokens"])
    assert (emb - io["train.text_emb"]).abs().max() <= 1e-5


def test_save_pretrained_round_trip_and_local_dir(tmp_path):
    name = register("mobileclip_s0_tiny", tmp_path)  # v1 file -> edgevl folder
    model = edgevl.create_model(name, pretrained=fixture_path("mobileclip_s0_tiny", "train"))
    folder = edgevl.save_pretrained(model, tmp_path / "saved")
    assert sorted(p.name for p in folder.iterdir()) == sorted([CONFIG_NAME, WEIGHTS_NAME])
    meta = json.loads((folder / CONFIG_NAME).read_text())
    assert meta["model_cfg"]["text_cfg"]["model_type"] == "mct"
    again = edgevl.create_model(f"local-dir:{folder}")
    by_path = edgevl.create_model(name, pretrained=folder)
    io = io_tensors("mobileclip_s0_tiny")
    with torch.no_grad():
        for m in (again, by_path):
            assert (m.encode_image(io["input.image_a"]) - io["train.image_emb_a"]).abs().max() <= 1e-5
            assert (m.encode_text(io["input.text_tokens"]) - io["train.text_emb"]).abs().max() <= 1e-5
    assert not list(folder.glob("*.tmp"))


def test_save_folded_model_reloads_folded(tmp_path):
    name = register("oc_mobileclip2_s3_tiny", tmp_path)
    folded = edgevl.create_model(
        name, pretrained=fixture_path("oc_mobileclip2_s3_tiny", "train"), reparameterize=True
    )
    folder = edgevl.save_pretrained(folded, tmp_path / "folded")
    again = edgevl.create_model(f"local-dir:{folder}")
    assert again.state_dict().keys() == folded.state_dict().keys()


def test_open_clip_export_of_plain_clip_puts_text_at_top_level():
    sd = {
        "visual.proj": torch.zeros(1),
        "text.token_embedding.weight": torch.zeros(1),
        "logit_scale": torch.zeros(()),
    }
    assert set(to_open_clip_layout(sd, custom_text=False)) == {
        "visual.proj",
        "token_embedding.weight",
        "logit_scale",
    }
    assert set(to_open_clip_layout(sd, custom_text=True)) == set(sd)


def test_cli_convert_v1_to_folder_and_open_clip(tmp_path, capsys):
    from edgevl.cli import main

    name = register("mobileclip_b_tiny", tmp_path)
    src = fixture_path("mobileclip_b_tiny", "train")
    assert main(["convert", str(src), str(tmp_path / "out"), "--model", name]) == 0
    assert (
        main(["convert", str(src), str(tmp_path / "oc.safetensors"), "--model", name, "--to", "open_clip"])
        == 0
    )
    assert "wrote" in capsys.readouterr().out
    io = io_tensors("mobileclip_b_tiny")
    for pretrained in (tmp_path / "out", tmp_path / "oc.safetensors"):
        model = edgevl.create_model(name, pretrained=pretrained)
        with torch.no_grad():
            assert (model.encode_image(io["input.image_b"]) - io["train.image_emb_b"]).abs().max() <= 1e-5
    assert main(["convert", str(tmp_path / "nope.pt"), str(tmp_path / "x"), "--model", name]) == 2
    assert "nope.pt" in capsys.readouterr().err


@pytest.mark.parametrize("fixture", ["mobileclip_s0_tiny", "mobileclip_b_tiny"])
@pytest.mark.parametrize("kind", ["train", "reparam"])
def test_cli_convert_to_v1_gives_back_the_official_state_dict(tmp_path, fixture, kind):
    # v1 -> edgevl -> v1 must reproduce every official key and tensor exactly, and the .pt loads again
    from edgevl.cli import main

    name = register(fixture, tmp_path)
    src = fixture_path(fixture, kind)
    args = ["--reparameterize"] if kind == "reparam" else []
    assert main(["convert", str(src), str(tmp_path / "v1.pt"), "--model", name, "--to", "v1", *args]) == 0
    original, converted = load_file(str(src)), torch.load(tmp_path / "v1.pt", weights_only=True)
    assert sorted(converted) == sorted(original)
    assert [k for k in original if not torch.equal(converted[k], original[k])] == []
    io = io_tensors(fixture)
    model = edgevl.create_model(name, pretrained=tmp_path / "v1.pt")
    with torch.no_grad():
        assert (model.encode_image(io["input.image_b"]) - io[f"{kind}.image_emb_b"]).abs().max() <= 1e-5


def test_convert_to_v1_rejects_non_mobileclip_models_and_bad_suffixes(tmp_path):
    from edgevl.errors import ConfigError
    from edgevl.models.checkpoint import to_v1_layout
    from edgevl.models.factory import convert_checkpoint

    with pytest.raises(ConfigError, match="v1 layout"):
        to_v1_layout(edgevl.create_model("ViT-B-32", device="meta"))
    name = register("mobileclip_s0_tiny", tmp_path)
    with pytest.raises(ConfigError, match=r"\.pt file"):
        convert_checkpoint(fixture_path("mobileclip_s0_tiny", "train"), tmp_path / "v1.bin", name, to="v1")

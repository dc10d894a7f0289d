"""Official pretrained tags: the table, tag lookup, honest failures and loading a tag from the hub cache."""

from __future__ import annotations

import pytest
import torch

import edgevl
from edgevl.errors import ConfigError, EdgevlError
from edgevl.models import pretrained
from edgevl.models.pretrained import MOBILECLIP_MEAN, OPENAI_MEAN, PretrainedTag, get_pretrained_tag
from hub_cache import add_snapshot, tensor_bytes

EXPECTED = {  # (model, tag) -> repository, from the issue and open_clip's table
    ("MobileCLIP-S0", "datacompdr"): "apple/MobileCLIP-S0",
    ("MobileCLIP-S1", "datacompdr"): "apple/MobileCLIP-S1-OpenCLIP",
    ("MobileCLIP-S2", "datacompdr"): "apple/MobileCLIP-S2-OpenCLIP",
    ("MobileCLIP-B", "datacompdr"): "apple/MobileCLIP-B-OpenCLIP",
    ("MobileCLIP-B", "datacompdr_lt"): "apple/MobileCLIP-B-LT-OpenCLIP",
    ("MobileCLIP-S3", "datacompdr"): "apple/MobileCLIP-S3",
    ("MobileCLIP-S4", "datacompdr"): "apple/MobileCLIP-S4",
    ("MobileCLIP-L-14", "datacompdr"): "apple/MobileCLIP-L-14",
    **{(f"MobileCLIP2-{s}", "dfndr2b"): f"timm/MobileCLIP2-{s}-OpenCLIP"
       for s in ("S0", "S2", "B", "S3", "S4", "L-14")},
    ("ViT-L-14", "openai"): "timm/vit_large_patch14_clip_224.openai",
    ("ViT-L-14", "datacomp_xl_s13b_b90k"): "laion/CLIP-ViT-L-14-DataComp.XL-s13B-b90K",
    ("coca_ViT-L-14", "mscoco_finetuned_laion2b_s13b_b90k"): "laion/mscoco_finetuned_CoCa-ViT-L-14-laion2B-s13B-b90k",
}


def test_every_official_weight_set_is_listed():
    listed = {(t.model, t.tag): t.hf_hub for t in edgevl.list_pretrained()}
    assert EXPECTED.items() <= listed.items()
    assert len(listed) == len(edgevl.list_pretrained())  # no tag twice
    buildable = set(edgevl.list_models())
    assert {m for m, _ in listed} <= buildable
    assert edgevl.list_pretrained_tags_by_model("MobileCLIP-B") == ["datacompdr", "datacompdr_lt"]
    assert edgevl.list_pretrained_tags_by_model("ViT-L/14")[:2] == ["openai", "datacomp_xl_s13b_b90k"]


def test_tags_carry_their_preprocessing():
    s2 = get_pretrained_tag("MobileCLIP-S2", "datacompdr").preprocess_cfg
    assert (tuple(s2["mean"]), s2["std"], s2["interpolation"]) == (MOBILECLIP_MEAN, [1.0] * 3, "bilinear")
    l14 = get_pretrained_tag("MobileCLIP2-L-14", "dfndr2b")
    assert (l14.mean, l14.interpolation) == (OPENAI_MEAN, "bicubic")
    assert get_pretrained_tag("ViT-L-14", "openai").quick_gelu
    assert get_pretrained_tag("ViT-L-14", "DataComp-XL-S13B-B90K").tag == "datacomp_xl_s13b_b90k"


def test_unknown_tags_list_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown pretrained tag 'laion' for model 'MobileCLIP-B'.*known tags: "
                                          r"datacompdr, datacompdr_lt$"):
        edgevl.create_model("MobileCLIP-B", pretrained="laion")
    with pytest.raises(ConfigError, match="'world-student-mci' .* it has no official weights"):
        edgevl.create_model("world-student-mci", pretrained="datacompdr")


def test_a_coca_tag_missing_from_the_cache_names_its_repository(hub_root):
    assert "laion2b_s13b_b90k" in edgevl.list_pretrained_tags_by_model("coca_ViT-B-32")
    with pytest.raises(EdgevlError, match="laion/mscoco_finetuned_CoCa-ViT-L-14-laion2B-s13B-b90k"):
        edgevl.create_model_and_transforms("coca_ViT-L-14", pretrained="mscoco_finetuned_laion2b_s13b_b90k")


def test_a_tag_without_a_known_file_says_how_to_load_it():
    with pytest.raises(ConfigError, match="file name unknown: pass hf-hub:apple/MobileCLIP-L-14/FILE"):
        edgevl.create_model("MobileCLIP-L-14", pretrained="datacompdr")


def test_a_tag_loads_from_the_cache_with_its_preprocessing(hub_root, monkeypatch):
    torch.manual_seed(0)
    wanted = edgevl.create_model("world-teacher-vit").state_dict()
    tag = PretrainedTag("world-teacher-vit", "test_set", "edgevl-test/teacher", "weights.pt", (0.1, 0.2, 0.3),
                        (0.4, 0.5, 0.6), "bilinear", quick_gelu=True)
    monkeypatch.setattr(pretrained, "_TAGS", (*pretrained._TAGS, tag))  # table data, not a function
    add_snapshot(hub_root, "edgevl-test/teacher", {"weights.pt": tensor_bytes(wanted, ".pt")}, "c" * 40)
    model, train, val = edgevl.create_model_and_transforms("world-teacher-vit", pretrained="Test-Set")
    assert all(torch.equal(v, wanted[k]) for k, v in model.state_dict().items())
    assert (val.cfg.mean, val.cfg.std, val.cfg.interpolation) == ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6), "bilinear")
    assert model.model_cfg["quick_gelu"] is True
    assert model.preprocess_cfg["size"] == edgevl.get_model_config("world-teacher-vit")["vision_cfg"]["image_size"]

"""`train-captioner --backbone`: a trained CLIP image tower (run folder, model folder or MODEL:WEIGHTS) becomes
LightCap's frozen backbone; an untrained backbone is warned about; validation reports class/colour/shape accuracy
of the captions beside CIDEr-D."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from test_captioner import MICRO as CAPTIONER_MICRO

import edgevl
from edgevl.cli import main
from edgevl.data.readers.base import Sample
from edgevl.data.world import make
from edgevl.errors import CheckpointError, ConfigError
from edgevl.models.lightcap.backbones import is_untrained
from edgevl.models.lightcap.config import get_lightcap_config
from edgevl.models.lightcap.model import create_lightcap
from edgevl.models.registry import add_model_config
from edgevl.tokenizer import get_tokenizer
from edgevl.train.captioner import CaptionerTrainConfig, CaptionerTrainer
from edgevl.train.captioner_data import CaptionData, class_phrase, load_caption_data, sample_labels
from edgevl.train.captioner_eval import caption_scores, label_accuracy, names

MCI_KWARGS = {"layers": [1, 1, 1, 1], "embed_dims": [8, 8, 16, 32]}
CLIP_MCI = {
    "embed_dim": 8,
    "vision_cfg": {"timm_model_name": "fastvit_mci0", "image_size": 64, "timm_model_kwargs": MCI_KWARGS},
    "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
    "custom_text": True,
    "preprocess_cfg": {"size": 64, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "interpolation": "bilinear"},
}
CLIP_VIT = {**CLIP_MCI, "vision_cfg": {"image_size": 64, "layers": 1, "width": 16, "patch_size": 16, "head_width": 8}}
MICRO = {**CAPTIONER_MICRO, "layers": 1, "num_heads": 1}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """World data (wds with clean captions, and an image folder), a micro LightCap config, and a tiny MCi CLIP
    trained two steps by `edgevl train` (so its BatchNorm statistics saw images)."""
    root = tmp_path_factory.mktemp("backbone")
    make(root / "train", 12, split="train", seed=0, size=64, caption="clean", shard_size=12)
    make(root / "folder", 6, split="val", seed=0, size=64, fmt="folder")
    for name, cfg in (("tiny-clip-mci-backbone", CLIP_MCI), ("tiny-clip-vit-backbone", CLIP_VIT)):
        (root / f"{name}.json").write_text(json.dumps(cfg))
        add_model_config(root / f"{name}.json")
    student = root / "student.json"
    student.write_text(json.dumps({**get_lightcap_config("lightcap-tiny").to_dict(), **MICRO}))
    torch.set_num_threads(1)
    assert main(["train", "--model", "tiny-clip-mci-backbone", "--train-data", f"wds:{root}/train/00000.tar",
                 "--batch-size", "4", "--steps", "2", "--warmup", "1", "--logs", str(root / "runs"),
                 "--name", "clip"]) == 0
    return {"root": root, "spec": f"wds:{root / 'train'}/00000.tar", "student": str(student),
            "run": str(root / "runs" / "clip"), "folder": f"folder:{root / 'folder'}"}


def captioner_config(setup, out, **changes) -> CaptionerTrainConfig:
    values = {"config": setup["student"], "train_data": setup["spec"], "out": str(out), "steps": 2,
              "batch_size": 4, "warmup": 1, "progress": False}
    return CaptionerTrainConfig(**{**values, **changes})


def clip_of_run(setup):
    """The CLIP the run folder stands for, loaded independently of the captioner code."""
    from edgevl.train.checkpoint import list_checkpoints

    weights = list_checkpoints(setup["run"])[-1] / "model.safetensors"
    return edgevl.create_model("tiny-clip-mci-backbone", weights), weights


# ------------------------------------------------------------------------------------------------ backbone
def test_run_folder_tower_becomes_the_frozen_backbone(setup, tmp_path, capsys):
    trainer = CaptionerTrainer(captioner_config(setup, tmp_path, backbone=setup["run"]))
    config = trainer.model.config
    assert config.backbone == {"type": "mci", "preset": "fastvit_mci0", "overrides": MCI_KWARGS}
    assert (config.image_size, config.mean, config.std) == (64, (0.5,) * 3, (0.25,) * 3)
    clip, _ = clip_of_run(setup)
    trunk = {k[len("visual.trunk."):]: v for k, v in clip.state_dict().items()
             if k.startswith("visual.trunk.") and not k.startswith("visual.trunk.head.")}
    mine = trainer.model.backbone.trunk.state_dict()
    assert set(trunk) == set(mine) and all(torch.equal(trunk[k], mine[k]) for k in trunk)
    assert not is_untrained(trainer.model.backbone)
    with torch.no_grad():
        words = get_tokenizer(context_length=clip.context_length)(trainer.model.concept_names)
        expected = F.normalize(clip.encode_text(words).float(), dim=-1)
    torch.testing.assert_close(trainer.model.concepts.text_embeddings, expected)
    pixels = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(trainer.model.grid_features(pixels), clip.visual.trunk.forward_features(pixels))
    err = capsys.readouterr().err
    assert "frozen backbone from" in err and "UNTRAINED" not in err
    assert trainer.train_step()["loss"] > 0


def test_model_folder_and_model_weights_give_the_same_backbone(setup, tmp_path):
    clip, weights = clip_of_run(setup)
    edgevl.save_pretrained(clip, tmp_path / "clip-folder")
    states = []
    for spec in (str(tmp_path / "clip-folder"), f"tiny-clip-mci-backbone:{weights}"):
        trainer = CaptionerTrainer(captioner_config(setup, tmp_path / "run", backbone=spec, steps=1))
        states.append(trainer.model.backbone.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_unusable_backbones_are_clear_errors(setup, tmp_path):
    vit = edgevl.create_model("tiny-clip-vit-backbone")
    edgevl.save_pretrained(vit, tmp_path / "vit")
    with pytest.raises(ConfigError, match=r"--backbone .*vit.* has a ViT as image tower.*MCi image tower"):
        CaptionerTrainer(captioner_config(setup, tmp_path / "a", backbone=str(tmp_path / "vit")))
    with pytest.raises(ConfigError, match="needs weights"):
        CaptionerTrainer(captioner_config(setup, tmp_path / "b", backbone="tiny-clip-mci-backbone"))
    clip, _ = clip_of_run(setup)
    edgevl.save_pretrained(edgevl.reparameterize(clip), tmp_path / "folded")
    with pytest.raises(CheckpointError, match="re-parameterized"):
        CaptionerTrainer(captioner_config(setup, tmp_path / "c", backbone=str(tmp_path / "folded")))


def test_fine_tuning_a_trained_lightcap_needs_a_matching_backbone(setup, tmp_path):
    CaptionerTrainer(captioner_config(setup, tmp_path / "first", steps=1)).fit()
    folder = str(tmp_path / "first" / "model")
    with pytest.raises(ConfigError, match=r"--config 'lightcap-micro' is a trained LightCap with backbone "
                                          r"\{'type': 'clip_resnet'.*--backbone .* is \{'type': 'mci'"):
        CaptionerTrainer(captioner_config(setup, tmp_path / "second", config=folder, backbone=setup["run"]))
    CaptionerTrainer(captioner_config(setup, tmp_path / "mci", backbone=setup["run"], steps=1)).fit()
    again = CaptionerTrainer(captioner_config(setup, tmp_path / "again", config=str(tmp_path / "mci" / "model"),
                                              backbone=setup["run"], steps=1))
    assert again.model.config.backbone["type"] == "mci"


def test_untrained_backbone_is_warned_about(setup, tmp_path, capsys):
    CaptionerTrainer(captioner_config(setup, tmp_path))
    assert "has an UNTRAINED frozen backbone" in capsys.readouterr().err
    assert is_untrained(create_lightcap("lightcap-tiny").backbone)
    from edgevl.world_models import pretrained_dir

    assert not is_untrained(create_lightcap(pretrained_dir("captioner")).backbone)  # the shipped world captioner


# ------------------------------------------------------------------------------------------ label accuracy
def test_names_matches_whole_words_only():
    assert names("A red star.", "red star") and names("a large RED star, left", "star")
    assert not names("a red stars", "red star") and not names("a star", "tar") and not names("red and star", "red star")
    assert class_phrase("003_red_triangle") == "red triangle" and class_phrase("Golden-Retriever") == "golden retriever"


def test_label_accuracy_counts_each_kind_over_the_images_that_have_it():
    texts = ["a red star", "a blue circle", "a red circle", "a shape"]
    labels = [{"class": "red star", "color": "red", "shape": "star"},
              {"class": "green circle", "color": "green", "shape": "circle"},
              {"class": "red square"}, {}]
    assert label_accuracy(texts, labels) == {"class_accuracy": 1 / 3, "color_accuracy": 1 / 2,
                                             "shape_accuracy": 2 / 2}


def test_world_and_folder_samples_carry_labels():
    world = Sample(key="k", meta={"labels": {"objects": [{"color": "red", "shape": "star"},
                                                         {"color": "blue", "shape": "circle"}]}})
    assert sample_labels(world) == {"class": "red star", "color": "red", "shape": "star"}
    folder = Sample(key="k", label=1, meta={"class": "001_blue_circle"})
    assert sample_labels(folder) == {"class": "blue circle"}
    assert sample_labels(folder, ["red star", "a blue circle"]) == {"class": "a blue circle"}
    assert sample_labels(Sample(key="k", caption="x")) == {}


def test_caption_scores_report_accuracy_beside_cider(setup, tmp_path):
    trainer = CaptionerTrainer(captioner_config(setup, tmp_path, backbone=setup["run"], steps=1))
    val = load_caption_data(setup["spec"], trainer.model, limit=6)
    assert val.labels is not None and all(set(lab) == {"class", "color", "shape"} for lab in val.labels)
    scores = caption_scores(trainer.model, val)
    assert set(scores) == {"CIDEr", "Bleu_4", "class_accuracy", "color_accuracy", "shape_accuracy"}
    from edgevl.train.captioner_eval import decode_cached

    texts = decode_cached(trainer.model, val.grids)
    assert scores["color_accuracy"] == sum(lab["color"] in t.split() for t, lab in zip(texts, val.labels)) / 6
    folder = load_caption_data(setup["folder"], trainer.model, require_captions=False)
    assert len(folder) == 6 and folder.references == [[]] * 6 and all("class" in lab for lab in folder.labels)
    assert set(caption_scores(trainer.model, folder)) == {"class_accuracy"}
    no_labels = CaptionData(val.keys, val.grids, val.references)
    assert set(caption_scores(trainer.model, no_labels)) == {"CIDEr", "Bleu_4"}


def test_cli_backbone_and_folder_validation(setup, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train-captioner", "--config", setup["student"], "--backbone", setup["run"], "--train-data",
                 setup["spec"], "--val-data", setup["folder"], "--steps", "2", "--batch-size", "4", "--out", str(out),
                 "--threads", "1"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(printed["val"]) == {"class_accuracy"} and 0.0 <= printed["val"]["class_accuracy"] <= 1.0
    assert json.loads((out / "result.json").read_text())["val"] == printed["val"]
    assert json.loads((out / "params.json").read_text())["backbone"] == setup["run"]
    model = create_lightcap(out / "model")
    clip, _ = clip_of_run(setup)
    pixels = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(model.grid_features(pixels), clip.visual.trunk.forward_features(pixels))


def test_world_caption_data_carries_the_labels_for_attribute_accuracy():
    """`edgevl world pretrain`'s captioner validation reports colour/shape accuracy beside CIDEr."""
    from edgevl.data.world import samples
    from edgevl.world_models import load_captioner
    from edgevl.world_models.captioner import world_caption_data

    model = load_captioner()
    data = world_caption_data(model, 4, "test", 0)
    scenes = [s.labels["objects"][0] for s in samples(4, "test", 0, model.config.image_size)]
    assert data.labels == [{"class": f"{o['color']} {o['shape']}", "color": o["color"], "shape": o["shape"]}
                           for o in scenes]
    assert {"CIDEr", "color_accuracy", "shape_accuracy", "class_accuracy"} <= set(caption_scores(model, data, 1))

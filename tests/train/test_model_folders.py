"""Runs leave self-describing models: every checkpoint and `<run>/model` are model folders, and a run folder
works as `pretrained` without naming the model; a wrong name is one error naming the right one."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from test_cli_train import write_reinforced
from train_helpers import TEXT_CFG, ToyPairs, tiny_clip

from edgevl.cli import main
from edgevl.errors import CheckpointError, ConfigError
from edgevl.models.checkpoint import describe_pretrained, load_checkpoint
from edgevl.models.factory import create_model, resolve_model_name
from edgevl.models.registry import add_model_config
from edgevl.train.trainer import Trainer
from tiny_configs import TINY_MCI

NAME = "tiny-vit-model-folders"
TINY_VIT = {
    "embed_dim": 8,
    "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 16, "layers": 1, "head_width": 8},
    "text_cfg": TEXT_CFG,
    "preprocess_cfg": {"size": 16, "mean": [0, 0, 0], "std": [1, 1, 1], "interpolation": "bilinear"},
}


@pytest.fixture
def fit(tmp_path, make_config):
    path = tmp_path / f"{NAME}.json"
    path.write_text(json.dumps(TINY_VIT))
    add_model_config(path)

    def run(**overrides) -> Trainer:
        torch.manual_seed(0)
        trainer = Trainer(make_config(model=NAME, **overrides), create_model(NAME), ToyPairs(40))
        trainer.fit()
        return trainer

    return run


def _config(folder) -> dict:
    return json.loads((folder / "open_clip_config.json").read_text())


def _equal(model, state) -> bool:
    return all(torch.equal(v, state[k].to(v.dtype)) for k, v in model.state_dict().items())


def test_checkpoints_and_the_end_of_a_run_are_model_folders(fit, capsys):
    trainer = fit(steps=4, save_every=2, ema=0.9)
    run = trainer.run_dir
    for step in (2, 4):
        meta = _config(run / "checkpoints" / f"step_{step}")
        assert meta["model_cfg"] == TINY_VIT and meta["preprocess_cfg"] == TINY_VIT["preprocess_cfg"]
        assert meta["edgevl"] == {"model": NAME, "step": step, "ema": False}
    assert _config(run / "model")["edgevl"] == {"model": NAME, "step": 4, "ema": True}

    last = create_model(None, pretrained=run / "checkpoints" / "step_4")  # no model name needed
    assert _equal(last, trainer.model.state_dict())
    final = create_model(None, pretrained=run)
    assert final.model_name == NAME and _equal(final, trainer.ema.state_dict())
    assert not _equal(final, trainer.model.state_dict())  # model/ holds the EMA, not the raw weights
    ema = create_model(None, pretrained=run / "checkpoints" / "step_4" / "ema.safetensors")
    assert _equal(ema, trainer.ema.state_dict())
    err = capsys.readouterr().err
    assert f"train: model folder {run / 'model'} (EMA weights)" in err
    assert "train: finished step 4/4" in err


def test_a_run_folder_stands_for_its_newest_model(fit):
    run = fit(steps=4, save_every=2).run_dir
    assert describe_pretrained(run).weights == run / "model"
    meta = _config(run / "model")
    meta["edgevl"]["step"] = 2  # as if the run was resumed and stopped after checkpoint step_4
    (run / "model" / "open_clip_config.json").write_text(json.dumps(meta))
    assert describe_pretrained(run).weights == run / "checkpoints" / "step_4"
    shutil.rmtree(run / "model")
    assert describe_pretrained(run).weights == run / "checkpoints" / "step_4"
    shutil.rmtree(run / "checkpoints")
    with pytest.raises(CheckpointError, match="has no model/ folder and no checkpoint in checkpoints/ yet"):
        create_model(None, pretrained=run)


def test_a_model_name_other_than_the_recorded_one_is_refused_naming_both(fit):
    run = fit(steps=2).run_dir
    assert create_model(NAME, pretrained=run).model_name == NAME
    assert resolve_model_name(None, run) == f"local-dir:{run}"
    assert resolve_model_name(NAME, run) == NAME
    message = (f"checkpoint '{run / 'model'}' was made for model '{NAME}' ({run / 'model' / 'open_clip_config.json'})"
               f", not for --model world-student-mci; use --model {NAME} or pass the folder without --model")
    for call in (lambda: create_model("world-student-mci", pretrained=run),
                 lambda: resolve_model_name("world-student-mci", run)):
        with pytest.raises(ConfigError) as info:
            call()
        assert message in str(info.value)


def test_an_older_run_without_configs_takes_its_model_from_params_json(fit, capsys):
    run = fit(steps=2).run_dir
    shutil.rmtree(run / "model")
    (run / "checkpoints" / "step_2" / "open_clip_config.json").unlink()
    capsys.readouterr()
    assert resolve_model_name(None, run) == NAME
    assert f"has no open_clip_config.json; using --model {NAME} from {run / 'params.json'}" in capsys.readouterr().err
    model = create_model(None, pretrained=run)
    assert model.model_name == NAME
    assert f"building model '{NAME}' as named in {run / 'params.json'}" in capsys.readouterr().err

    with pytest.raises(CheckpointError) as info:  # the 1,400-missing-keys case: the wrong model for the weights
        load_checkpoint(create_model("world-student-mci"), run)
    message = str(info.value)
    assert message.startswith(f"checkpoint '{run / 'checkpoints' / 'step_2'}' was made for model '{NAME}' "
                              f"({run / 'params.json'}); use --model {NAME} or pass the folder without --model (")
    assert "\n" not in message and len(message) < 1200 and ", ...)" in message
    with pytest.raises(ConfigError, match=f"made for model '{NAME}'"):
        create_model("world-student-mci", pretrained=run / "checkpoints" / "step_2" / "model.safetensors")


def test_models_the_factory_did_not_build_keep_weights_only_checkpoints(make_config):
    trainer = Trainer(make_config(steps=2), tiny_clip(), ToyPairs(40))
    trainer.fit()
    assert sorted(p.name for p in (trainer.run_dir / "checkpoints" / "step_2").iterdir()) == [
        "model.safetensors", "state.pt"]
    assert not (trainer.run_dir / "model").exists()
    with pytest.raises(ConfigError, match="unknown model 'tiny'"):  # the name params.json records
        create_model(None, pretrained=trainer.run_dir / "checkpoints" / "step_2")
    (trainer.run_dir / "params.json").unlink()
    with pytest.raises(CheckpointError, match="step_2' has no open_clip_config.json; name its model"):
        create_model(None, pretrained=trainer.run_dir / "checkpoints" / "step_2")


def test_cli_commands_take_a_run_folder_without_model(tmp_path, capsys):
    config = tmp_path / "tiny-mci-model-folders.json"
    # two text layers: inference's pooled-tail pruning needs at least two (a one-layer tower fails there)
    config.write_text(json.dumps({**TINY_MCI, "text_cfg": {**TINY_MCI["text_cfg"], "layers": 2}}))
    add_model_config(config)
    spec = write_reinforced(tmp_path / "data")
    common = ["--train-data", spec, "--mode", "reinforced", "--batch-size", "4", "--warmup", "1",
              "--logs", str(tmp_path / "runs")]
    assert main(["train", "--model", "tiny-mci-model-folders", "--steps", "2", "--name", "a", *common]) == 0
    run = tmp_path / "runs" / "a"
    assert "train: finished step 2/2" in capsys.readouterr().err

    out = tmp_path / "e.npy"
    assert main(["embed", "--texts", "a photo", "--pretrained", str(run), "--out", str(out)]) == 0
    assert np.load(out).shape == (1, 8)
    capsys.readouterr()
    assert main(["embed", "--texts", "a", "--model", "world-student-mci", "--pretrained", str(run),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "was made for model 'tiny-mci-model-folders'" in err and "use --model tiny-mci-model-folders" in err

    assert main(["convert", str(run), str(tmp_path / "converted")]) == 0
    assert _config(tmp_path / "converted")["edgevl"]["model"] == "tiny-mci-model-folders"

    assert main(["train", "--pretrained", str(run), "--steps", "1", "--name", "b", *common]) == 0
    assert json.loads((tmp_path / "runs" / "b" / "params.json").read_text())["model"] == f"local-dir:{run}"
    assert _config(tmp_path / "runs" / "b" / "model")["edgevl"] == {
        "model": "tiny-mci-model-folders", "step": 1, "ema": False}


def test_captioner_checkpoints_and_runs_are_lightcap_model_folders(tmp_path):
    from edgevl.data.world import make
    from edgevl.models.lightcap.model import create_lightcap

    make(tmp_path / "data", 16, size=64, caption="clean")
    run = tmp_path / "caprun"
    assert main(["train-captioner", "--config", "lightcap-tiny", "--train-data", f"wds:{tmp_path}/data/00000.tar",
                 "--out", str(run), "--steps", "2", "--batch-size", "4", "--save-every", "1"]) == 0
    final = create_lightcap(run / "model").state_dict()
    for folder in (run, run / "checkpoints" / "step_2"):  # the run stands for model/; a checkpoint is a folder too
        state = create_lightcap(folder).state_dict()
        assert state.keys() == final.keys() and all(torch.equal(state[k], final[k]) for k in final)
    first = create_lightcap(run / "checkpoints" / "step_1").state_dict()
    assert any(not torch.equal(first[k], final[k]) for k in final)

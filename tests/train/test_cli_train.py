"""`edgevl train` end to end on tiny reinforced shards: manifest checks fail at start, training runs and resumes."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from edgevl.cli import main
from edgevl.errors import ConfigError, DataError
from edgevl.models.registry import add_model_config
from edgevl.train.manifest import check_reinforced_data
from tiny_configs import TINY_MCI

DIMS = (6, 10)


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_reinforced(root, n: int = 8, dims=DIMS, members=("png", "txt", "paug.json", "syn.json", "npz")) -> str:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(root / "shard-0.tar", "w") as tar:
        for i in range(n):
            key = f"s{i:03d}"
            image = Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
            png = io.BytesIO()
            image.save(png, format="PNG")
            emb = rng.normal(size=(2, sum(dims))).astype(np.float32)
            text = rng.normal(size=(3, sum(dims))).astype(np.float32)
            npz = io.BytesIO()
            np.savez(npz, image_emb=emb, text_emb=text)
            records = [[[0, 0, 40, 40], [[0, 0.0], [5, 9.0]]], [[4, 2, 30, 36], [[1, 0.09], [0, 0.0]]]]
            data = {"png": png.getvalue(), "txt": f"a photo number {i}".encode(),
                    "paug.json": json.dumps({"param_aug": json.dumps(records)}).encode(),
                    "syn.json": json.dumps({"syn_text": [f"synthetic {i}", f"another {i}"]}).encode(),
                    "npz": npz.getvalue()}
            for suffix in members:
                _member(tar, f"{key}.{suffix}", data[suffix])
    teachers = [{"name": "a", "embed_dim": 6, "logit_scale": 100.0}, {"name": "b", "embed_dim": 10,
                                                                       "logit_scale": 60.0}]
    (root / "manifest.json").write_text(json.dumps({"teachers": teachers}))
    return f"reinforced:{root}/shard-0.tar"


def test_manifest_mismatch_and_missing_members_fail_at_start(tmp_path):
    spec = write_reinforced(tmp_path / "ok")
    teachers, scales = check_reinforced_data(spec, None)
    assert [t.embed_dim for t in teachers] == [6, 10] and scales == (100.0, 60.0)
    assert check_reinforced_data(spec, [70, 60])[1] == (70.0, 60.0)
    with pytest.raises(ConfigError, match="gives 1 values for 2 teachers"):
        check_reinforced_data(spec, [70])
    wrong = write_reinforced(tmp_path / "wrong", dims=(6, 12))
    with pytest.raises(DataError, match=r"width 18 but the manifest's teachers \[6, 10\] sum to 16"):
        check_reinforced_data(wrong, None)
    missing = write_reinforced(tmp_path / "missing", members=("png", "txt", "npz"))
    with pytest.raises(DataError, match="lacks members: paug.json, syn.json"):
        check_reinforced_data(missing, None)
    (tmp_path / "ok" / "manifest.json").unlink()
    with pytest.raises(ConfigError, match="no manifest.json"):
        check_reinforced_data(spec, None)


def test_cli_reinforced_training_runs_and_resumes(tmp_path, capsys):
    config = tmp_path / "tiny-mci-train-test.json"
    config.write_text(json.dumps(TINY_MCI))
    add_model_config(config)
    spec = write_reinforced(tmp_path / "data")
    args = ["train", "--model", "tiny-mci-train-test", "--train-data", spec, "--mode", "reinforced",
            "--batch-size", "4", "--steps", "3", "--warmup", "1", "--save-every", "2", "--log-every", "1",
            "--logs", str(tmp_path / "runs"), "--name", "r", "--distill-lambda", "0.5"]
    assert main(args) == 0
    run = tmp_path / "runs" / "r"
    params = json.loads((run / "params.json").read_text())
    assert params["mode"] == "reinforced" and params["channels_last"] is True
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_2", "step_3"]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    assert main([*args[:-6], "--steps", "4", "--resume", "latest", *args[-6:]]) == 0
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    nchw = [*args[:-4], "--name", "nchw", "--distill-lambda", "0.5", "--steps", "1", "--no-channels-last"]
    assert main(nchw) == 0
    assert json.loads((tmp_path / "runs" / "nchw" / "params.json").read_text())["channels_last"] is False
    capsys.readouterr()
    bad = write_reinforced(tmp_path / "bad", dims=(6, 12))
    assert main([*args[:4], bad, *args[5:]]) == 2
    assert "sum to 16" in capsys.readouterr().err

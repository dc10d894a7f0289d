"""Training validation (`edgevl train --val-data folder:...`) and `edgevl eval` score a folder the same way:
same class names (from classnames.txt, not the folder names), same templates, same top-1/top-5."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from edgevl.cli import main
from edgevl.data.readers import open_dataset
from edgevl.data.transforms import to_tensor
from edgevl.eval.benchmark import evaluate_zeroshot
from edgevl.train.evaluate import _take, evaluate

# Fashion-MNIST-like: folder ids that cannot hold the real names ("T-shirt/top" has a slash)
FOLDERS = {"class_0": (250, 20, 20), "class_1": (20, 250, 20), "class_2": (20, 20, 250)}
NAMES = {"class_0": "T-shirt/top", "class_1": "Trouser", "class_2": "Pullover"}
CPU = torch.device("cpu")


class Oracle(nn.Module):
    """Knows the true names: an image embeds as the one-hot of its dominant channel, a prompt as the one-hot of
    the true name it contains (dimension 3, orthogonal to every image, when it contains none)."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return F.one_hot(x.mean(dim=(2, 3)).argmax(dim=1), 4).float()

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return F.one_hot(ids[:, 0], 4).float()


def oracle_tokenizer(texts: list[str]) -> torch.Tensor:
    names = list(NAMES.values())
    return torch.tensor([[next((i for i, n in enumerate(names) if n in t), 3)] for t in texts])


def make_folder(root, per_class: int = 2):
    for folder, colour in FOLDERS.items():
        (root / folder).mkdir()
        for i in range(per_class):
            Image.new("RGB", (6, 6), colour).save(root / folder / f"{i}.png")
    return root


def train_side(spec: str, model: nn.Module, tokenizer, max_samples: int = 1000) -> dict[str, float]:
    """What `edgevl train --val-data SPEC` logs: the reader opened as train/launch.py opens it, then evaluate."""
    data = open_dataset(spec, transform=to_tensor, caption="first", seed=0)
    return evaluate(model, data, tokenizer, CPU, max_samples=max_samples, batch_size=2)


@pytest.mark.parametrize("form", ["positional", "mapping"])
def test_names_file_gives_the_same_accuracy_in_training_and_eval(tmp_path, form):
    root = make_folder(tmp_path)
    if form == "positional":
        text = "".join(NAMES[f] + "\n" for f in FOLDERS)
    else:  # out of folder order on purpose
        text = "".join(f"{f}\t{NAMES[f]}\n" for f in reversed(FOLDERS))
    (root / "classnames.txt").write_text(text)
    spec = f"folder:{root}"
    val = train_side(spec, Oracle(), oracle_tokenizer)
    got = evaluate_zeroshot(Oracle(), to_tensor, oracle_tokenizer, spec, batch_size=4)
    assert val["zeroshot-val-top1"] == got["acc1"] == 1.0  # folder names ("class 0") would score 1/3
    assert val["zeroshot-val-top5"] == got["acc5"]


def test_without_names_file_both_use_the_folder_names(tmp_path):
    spec = f"folder:{make_folder(tmp_path)}"
    val = train_side(spec, Oracle(), oracle_tokenizer)
    got = evaluate_zeroshot(Oracle(), to_tensor, oracle_tokenizer, spec)
    assert val["zeroshot-val-top1"] == got["acc1"] == pytest.approx(1 / 3)


def test_real_model_same_top1_with_the_folder_templates(tmp_path, student_bundle):
    model, preprocess, tok = student_bundle
    folder = tmp_path / "world"
    assert main(["world", "make", "--out", str(folder), "--n", "30", "--split", "test", "--format", "folder"]) == 0
    spec = f"folder:{folder}"
    data = open_dataset(spec, transform=preprocess, caption="first", seed=0)
    assert data.zeroshot.templates_source.endswith("zeroshot_classification_templates.txt")
    val = evaluate(model, data, tok, CPU, max_samples=1000, batch_size=7)
    got = evaluate_zeroshot(model, preprocess, tok, spec, batch_size=5)
    assert val["num_samples"] == 30
    assert val["zeroshot-val-top1"] == pytest.approx(got["acc1"], abs=1e-9)
    assert val["zeroshot-val-top5"] == pytest.approx(got["acc5"], abs=1e-9)


def test_validation_subset_spreads_over_a_class_sorted_folder(tmp_path):
    ds = open_dataset(f"folder:{make_folder(tmp_path, per_class=4)}", transform=to_tensor)
    taken = _take(ds, 6)
    assert len(taken) == 6 and [s.label for s in taken] == [0, 0, 1, 1, 2, 2]

"""Every kind of damage to a weights file is one `CheckpointError` that names the file; payloads never run."""

from __future__ import annotations

import pickle
import struct

import pytest
import torch
from safetensors.torch import save_file

from edgevl.errors import CheckpointError
from edgevl.tensor_files import read_safetensors, read_torch


class Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def weights(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(4)}, str(path))
    return path


def _fails(read, path, *words):
    with pytest.raises(CheckpointError) as info:
        read(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message, message
    for word in words:
        assert word in message


def test_intact_files_load(weights, tmp_path):
    assert torch.equal(read_safetensors(weights)["a"], torch.arange(6.0).reshape(2, 3))
    torch.save({"x": torch.zeros(2)}, tmp_path / "s.pt")
    assert torch.equal(read_torch(tmp_path / "s.pt")["x"], torch.zeros(2))


def test_every_truncation_of_a_safetensors_file_is_one_error(weights):
    data = weights.read_bytes()
    for cut in range(0, len(data), 7):
        weights.write_bytes(data[:cut])
        _fails(read_safetensors, weights, "damaged")


def test_a_lying_header_length_is_one_error(weights):
    data = weights.read_bytes()
    weights.write_bytes(struct.pack("<Q", 2**40) + data[8:])
    _fails(read_safetensors, weights)


def test_pickles_are_refused_unexecuted_and_garbage_is_one_error(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"w": Payload(str(marker))}))
    _fails(read_torch, path, "refusing to load")
    assert not marker.exists()
    path.write_bytes(b"\x80\x04garbage")
    _fails(read_torch, path)
    torch.save({"w": torch.ones(3)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _fails(read_torch, path, "damaged")


def test_non_finite_values_are_an_error(tmp_path):
    save_file({"ok": torch.ones(2), "bad": torch.tensor([1.0, float("nan")])}, str(tmp_path / "n.safetensors"))
    _fails(read_safetensors, tmp_path / "n.safetensors", "non-finite", "bad")
    torch.save({"state": {"exp_avg": torch.tensor([float("inf")])}}, tmp_path / "n.pt")
    _fails(read_torch, tmp_path / "n.pt", "state.exp_avg")

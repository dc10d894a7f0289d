"""Two gloo processes on loopback give the same gradients as one process on the full batch.

Run in float64 (the text tower's LayerNorms still compute in float32) so that summation-order noise stays
far below the 1e-6 tolerance: measured max |Δ| 6e-8 (in pure float32 it reaches 5e-6 on gradients of size 12).
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from train_helpers import TEACHER_DIMS, ToyPairs, config, tiny_clip

from edgevl.data.readers.base import collate_samples
from edgevl.distributed import DistInfo, cleanup, init_distributed
from edgevl.train.losses import DistillConfig
from edgevl.train.trainer import Trainer

DISTILL = DistillConfig(TEACHER_DIMS, (100.0, 60.0), lam=0.6, real_weight=1.0, syn_weight=0.5)
FULL_BATCH = 8


def _batch(rows: range, reinforced: bool) -> dict:
    data = ToyPairs(16, reinforced=reinforced)
    batch = collate_samples([data[i] for i in rows])
    return {k: v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in batch.items()}


def _gradients(trainer: Trainer, batch: dict) -> dict[str, torch.Tensor]:
    trainer.accumulate_gradients(batch)
    return {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


def _worker(rank: int, port: int, tmp: str, mode: str) -> None:
    # Own log files for the worker's stdout/stderr, printed by the test: a worker's C++ abort message (gloo) would
    # otherwise be lost with pytest's capture.
    for fd, stream in ((1, "out"), (2, "err")):
        with open(os.path.join(tmp, f"worker_{rank}.{stream}"), "w") as log:
            os.dup2(log.fileno(), fd)
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2")
    info = init_distributed("cpu")
    try:
        cfg = config(tmp, mode=mode, batch_size=FULL_BATCH // 2)
        reinforced = mode == "reinforced"
        trainer = Trainer(cfg, tiny_clip().double(), ToyPairs(16, reinforced), distill=DISTILL, info=info)
        half = FULL_BATCH // 2
        grads = _gradients(trainer, _batch(range(rank * half, (rank + 1) * half), reinforced))
        torch.save(grads, os.path.join(tmp, f"grads_{mode}_{rank}.pt"))
    finally:
        cleanup()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("mode", ["clip", "reinforced"])
def test_two_process_gradients_equal_single_process_full_batch(tmp_path, mode):
    try:
        mp.spawn(_worker, args=(_free_port(), str(tmp_path), mode), nprocs=2, join=True)
    finally:
        for log in sorted(tmp_path.glob("worker_*")):
            print(f"--- {log.name}\n{log.read_text()}")
    reinforced = mode == "reinforced"
    single = Trainer(config(tmp_path, mode=mode, batch_size=FULL_BATCH), tiny_clip().double(), ToyPairs(16, reinforced),
                     distill=DISTILL, info=DistInfo())
    expected = _gradients(single, _batch(range(FULL_BATCH), reinforced))
    for rank in range(2):
        got = torch.load(tmp_path / f"grads_{mode}_{rank}.pt", weights_only=True)
        assert got.keys() == expected.keys()
        for name, grad in expected.items():
            torch.testing.assert_close(got[name], grad, atol=1e-6, rtol=0, msg=name)

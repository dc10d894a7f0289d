"""All-gathers and means over ranks for the training losses and logs (process groups: `edgevl.distributed`).

`gather_with_grad` is the autograd-aware all-gather of open_clip's `--gather-with-grad`: the backward pass
sums every rank's gradient for the gathered tensor and hands each rank the slice it produced. It accepts
different batch sizes per rank (padded for the collective, trimmed after), so skipped samples never hang a run.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from edgevl.distributed import world_info


def all_sizes(n: int, device: torch.device) -> list[int]:
    """Every rank's value of the integer `n` (e.g. its local batch size)."""
    _, world = world_info()
    if world == 1:
        return [n]
    local = torch.tensor([n], dtype=torch.long, device=device)
    out = [torch.zeros_like(local) for _ in range(world)]
    dist.all_gather(out, local)
    return [int(t.item()) for t in out]


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:  # type: ignore[override]
        rank, world = world_info()
        padded = x.new_zeros((max(sizes), *x.shape[1:]))
        padded[: x.shape[0]] = x
        buffers = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(buffers, padded.contiguous())
        ctx.sizes, ctx.rank = sizes, rank
        return torch.cat([b[:n] for b, n in zip(buffers, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # sum over ranks of d(loss_r)/d(gathered)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None


def gather_with_grad(x: torch.Tensor, sizes: list[int] | None = None) -> tuple[torch.Tensor, int]:
    """All ranks' rows of `x` concatenated in rank order, differentiable; plus this rank's first row index."""
    rank, world = world_info()
    if world == 1:
        return x, 0
    sizes = sizes if sizes is not None else all_sizes(x.shape[0], x.device)
    return _GatherWithGrad.apply(x, sizes), sum(sizes[:rank])


def gather_no_grad(x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """All ranks' rows of a constant tensor (e.g. stored teacher embeddings), concatenated in rank order."""
    if world_info()[1] == 1:
        return x
    with torch.no_grad():
        return _GatherWithGrad.apply(x.detach(), sizes)


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over ranks (identity in a single process)."""
    _, world = world_info()
    if world == 1:
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / world

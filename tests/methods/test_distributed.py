"""Two CPU ranks on gloo: LSUV, GradInit and MetaInit end with identical weights on both."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

pytestmark = pytest.mark.distributed


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from initlab import gradinit, lsuv, metainit

        torch.manual_seed(0)  # same model on every rank, as after a broadcast
        net = nn.Sequential(
            nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)
        )
        g = torch.Generator().manual_seed(100 + rank)  # each rank sees its own data shard
        data = [
            (torch.randn(16, 8, generator=g), torch.randint(0, 3, (16,), generator=g))
            for _ in range(4)
        ]
        r1 = lsuv(net, data[0][0], progress=False)
        r2 = gradinit(net, F.cross_entropy, data, lr=0.1, iters=6, scale_lr=0.1, progress=False)
        r3 = metainit(net, F.cross_entropy, data, iters=4, progress=False)
        torch.save({"state": net.state_dict(), "stds": r1.stds, "scales": r2.scales,
                    "gq": r3.history}, Path(out) / f"rank{rank}.pt")  # fmt: skip
        # Tear down together: a rank that destroys its gloo pairs while the other still holds
        # them can abort the survivor ("terminate called without an active exception").
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_end_identical(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, _port(), str(tmp_path)), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert a["stds"] == b["stds"] and a["scales"] == b["scales"]
    for k in a["state"]:
        assert torch.equal(a["state"][k], b["state"][k]), k
    assert a["gq"] != b["gq"]  # each rank measured its own shard: the all-reduce did the agreeing

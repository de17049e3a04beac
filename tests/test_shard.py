"""Sharded init on torch.distributed: two gloo processes on the CPU draw only their shards, and
the gathered parameters equal the single-process ``initlab.init`` bit for bit."""

from __future__ import annotations

import os
import socket
import time
import traceback
from pathlib import Path

import pytest
import torch
from torch import nn

from initlab import InitlabError, rng, shard
from initlab.planning import init, plan

WORLD = 2
SEED = 1234
DEADLINE_S = 120  # hard bound on the two-process run (it takes a few seconds)


class Net(nn.Module):
    """Odd row counts (11, 7, 5, 1051) so Shard(0) splits unevenly; one layer > rng.BLOCK elements."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 6)
        self.fc1 = nn.Linear(6, 7)
        self.big = nn.Linear(7 * 143, 1051)  # 1051 x 1001 = 1.05 M elements: crosses a block edge
        self.fc2 = nn.Linear(1051, 4)
        self.head = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.fc1(self.emb(x).mean(1)))
        h = torch.relu(self.big(h.repeat(1, 143)))
        return self.head(torch.relu(self.fc2(h)))


RULES = {
    "emb.weight": ("trunc_normal", {"std": 0.02}),
    "fc1.weight": "orthogonal",  # structured: drawn whole on every rank, sliced
    "fc2.bias": ("uniform", {"a": -0.5, "b": 0.5}),
}


def example() -> torch.Tensor:
    return torch.randint(0, 11, (2, 3), generator=torch.Generator().manual_seed(0))


def reference() -> dict[str, torch.Tensor]:
    net = Net()
    init(net, example=example(), rules=RULES, seed=SEED)
    return {k: v.detach().clone() for k, v in net.named_parameters()}


def _check(net: nn.Module, ref: dict[str, torch.Tensor], what: str) -> None:
    from torch.distributed.tensor import DTensor

    for name, p in net.named_parameters():
        full = p.full_tensor() if isinstance(p, DTensor) else p
        assert torch.equal(full.detach(), ref[name]), (
            f"{what}: {name} differs from the single-process init"
        )


def _distribute(net: nn.Module, mesh: object, placements_of: dict[str, object]) -> None:
    from torch.distributed.tensor import Shard, distribute_tensor

    for mod in net.modules():
        for k, p in list(mod._parameters.items()):
            full_name = next(n for n, q in net.named_parameters() if q is p)
            pl = placements_of.get(full_name, Shard(0))
            mod._parameters[k] = nn.Parameter(distribute_tensor(p.detach(), mesh, [pl]))


def _scenarios(rank: int) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    mesh = init_device_mesh("cpu", (WORLD,))
    ref = reference()

    # 1. meta model, distribute_tensor(Shard(0)), to_empty, initlab.shard.apply on every rank
    with torch.device("meta"):
        net = Net()
    p = plan(net, example=example(), rules=RULES, seed=SEED)
    _distribute(net, mesh, {})
    net.to_empty(device="cpu")
    for q in net.parameters():  # local block = torch's own (private) rule
        assert (
            tuple(q.to_local().shape),
            shard.local_region(q)[1],
        ) == compute_local_shape_and_global_offset(q.shape, q.device_mesh, q.placements)
    shard.apply(p)
    _check(net, ref, "distribute_tensor Shard(0)")

    # 2. mixed placements and a tiny block size (many blocks, edges inside shards); draw_local directly
    saved = rng.BLOCK
    rng.BLOCK = 50
    try:
        ref_small = reference()
        net = Net()
        p = plan(net, example=example(), rules=RULES, seed=SEED)
        _distribute(
            net, mesh, {"big.weight": Shard(1), "fc2.weight": Replicate(), "head.weight": Shard(1)}
        )
        with torch.no_grad():
            for entry in p:
                shard.draw_local(entry, net.get_parameter(entry.name), SEED)
        _check(net, ref_small, "mixed placements, BLOCK=50")
    finally:
        rng.BLOCK = saved

    # 3. FSDP2 fully_shard on a meta model
    from torch.distributed.fsdp import fully_shard

    with torch.device("meta"):
        net = Net()
    p = plan(net, example=example(), rules=RULES, seed=SEED)
    for m in (net.big, net.fc2, net):
        fully_shard(m, mesh=mesh)
    net.to_empty(device="cpu")
    shard.apply(p)
    _check(net, ref, "FSDP2 fully_shard")

    # 4. FSDP2 + the public path: plan.apply() draws each DTensor's local shard by itself
    with torch.device("meta"):
        net = Net()
    p = plan(net, example=example(), rules=RULES, seed=SEED)
    fully_shard(net, mesh=mesh)
    net.to_empty(device="cpu")
    p.apply(transactional=False)
    _check(net, ref, "FSDP2 + plan.apply()")
    dist.barrier()


def _worker(rank: int, port: int, errfile: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        _scenarios(rank)
    except BaseException:
        with open(f"{errfile}.{rank}", "w") as f:
            f.write(traceback.format_exc())
        raise
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.distributed
def test_two_gloo_ranks_match_single_process(tmp_path: Path) -> None:
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    errfile = str(tmp_path / "err")
    ctx = mp.spawn(_worker, args=(_free_port(), errfile), nprocs=WORLD, join=False)
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail(f"the {WORLD} gloo ranks did not finish within {DEADLINE_S} s")
    except Exception as exc:
        logs = [
            Path(f"{errfile}.{r}").read_text()
            for r in range(WORLD)
            if os.path.exists(f"{errfile}.{r}")
        ]
        pytest.fail(f"a rank failed: {exc}\n" + "\n".join(logs))
    finally:
        for proc in ctx.processes:
            if proc.is_alive():
                proc.kill()


def test_draw_local_rejects_plain_tensors() -> None:
    net = nn.Linear(3, 2)
    entry = plan(net, example=torch.randn(1, 3))["weight"]
    with pytest.raises(InitlabError, match="DTensor"):
        shard.draw_local(entry, net.weight, 0)
    assert not shard.is_dtensor(net.weight)


def test_chunk_rule_matches_torch_chunk() -> None:
    for n in range(0, 12):
        for k in (1, 2, 3, 4, 5):
            pieces = torch.arange(n).chunk(k) if n else ()
            got = [shard._chunk(n, k, i) for i in range(k)]
            want = [(int(c[0]), len(c)) for c in pieces] if n else []
            assert [g for g in got if g[1]] == want


def test_flat_range() -> None:
    assert shard._flat_range((5, 4), (2, 4), (3, 0)) == (12, 8, True)
    assert shard._flat_range((5, 4), (5, 2), (0, 2)) == (2, 18, False)
    assert shard._flat_range((1, 4, 3), (1, 2, 3), (0, 2, 0)) == (6, 6, True)

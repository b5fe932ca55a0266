"""A two-rank PyTorch DDP check: gloo on CPU, rendezvous through env://.

Each rank wraps a linear layer in DistributedDataParallel, runs one backward
pass (whose gradients DDP all-reduces), then all-reduces its rank + 1 and checks
the sum. RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT come from the pod.
"""
import os
import socket

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def main() -> None:
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    print(f"rank {rank}/{world} on {socket.gethostname()}, master "
          f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}", flush=True)
    dist.init_process_group("gloo", init_method="env://", rank=rank, world_size=world)

    torch.manual_seed(0)
    model = DistributedDataParallel(torch.nn.Linear(4, 1))
    data = torch.full((8, 4), float(rank + 1))
    model(data).sum().backward()
    grad = model.module.weight.grad.clone()
    # DDP averages gradients over ranks: every rank must hold the same values.
    gathered = [torch.zeros_like(grad) for _ in range(world)]
    dist.all_gather(gathered, grad)
    assert all(torch.equal(g, gathered[0]) for g in gathered), "DDP gradients differ"

    value = torch.tensor([float(rank + 1)])
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    expected = world * (world + 1) / 2
    assert value.item() == expected, f"all_reduce gave {value.item()}, expected {expected}"
    print(f"rank {rank}: all_reduce sum {value.item():.0f} (expected {expected:.0f}); "
          f"DDP gradients equal on all {world} ranks", flush=True)
    dist.barrier()
    dist.destroy_process_group()
    print(f"rank {rank}: done", flush=True)


if __name__ == "__main__":
    main()

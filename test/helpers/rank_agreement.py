"""A rank of a 2-process gloo group that reports a dataset fingerprint of its own (for the trainer's agreement check).

Its own module because spawned processes import their target by module name.
"""
from __future__ import annotations


def disagreeing_rank(rank: int, port: int, errors) -> None:
    """Join the group, call require_agreement with a rank-specific value, put (rank, message) on the queue."""
    import os

    import torch.distributed as dist

    from finetune_embodied.distributed import RankMismatch, Ranks, require_agreement

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        require_agreement(Ranks(rank, 2, rank), f"fingerprint-{rank}", "the training data")
    except RankMismatch as exc:
        errors.put((rank, str(exc)))
    finally:
        dist.destroy_process_group()

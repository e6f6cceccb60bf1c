"""A worker's training batches from its dataset shard: exactly the steps an epoch takes, from the
rows pipeline.py streams with their epoch number — the two must agree on what an epoch is
(pipeline.plan gives every worker the same number of rows an epoch; here they become
`steps` batches, the remainder dropped)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def epoch_batches(shard, batch_size: int, steps: int, start_epoch: int) -> Iterator[dict]:
    """Batches of `batch_size` rows, exactly `steps` per epoch from `start_epoch` on.

    The shard streams the rows of every epoch with their epoch number. Rows of one epoch are
    mixed in a bounded buffer (units are row groups of neighbouring videos, often one class),
    drawn with a seeded generator; rows of an epoch that is already done (the dropped remainder,
    or epochs before a resume point) are skipped."""
    buffer_rows = max(8 * batch_size, 64)
    epoch, done = start_epoch, 0
    pending: dict[int, list[dict]] = {}  # epoch → rows
    rng = np.random.default_rng(epoch)

    def take(rows: list[dict]) -> dict:
        idx = sorted(rng.choice(len(rows), batch_size, replace=False).tolist(), reverse=True)
        picked = [rows.pop(i) for i in idx]
        return {k: np.stack([r[k] for r in picked]) for k in picked[0]}

    def drain(stream_ended: bool) -> Iterator[dict]:
        # a batch is drawn once the buffer is full, or when no more rows of this epoch can come
        nonlocal epoch, done, rng
        while True:
            rows = pending.get(epoch, [])
            finished = stream_ended or any(e > epoch for e in pending)
            if not (len(rows) >= buffer_rows or (len(rows) >= batch_size and finished)):
                return
            yield take(rows)
            done += 1
            if done == steps:
                pending.pop(epoch, None)
                epoch, done = epoch + 1, 0
                rng = np.random.default_rng(epoch)

    for b in shard.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
        for i in range(len(b["label"])):
            e = int(b["epoch"][i])
            if e >= epoch:
                pending.setdefault(e, []).append({k: b[k][i] for k in b})
                # row by row: the mix does not depend on how many rows a block brings
                yield from drain(stream_ended=False)
    yield from drain(stream_ended=True)
    if done or epoch in pending:
        raise RuntimeError(f"the data stream ended inside epoch {epoch} after {done} steps")

"""TokenShardDataset: partition over ranks/workers, epoch order, resume, crops/padding/delay, streaming reads."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from ssmttm.errors import UserFacingError
from ssmttm.models.delay import undo_delay
from ssmttm.tokens.loader import TokenShardDataset, collate
from ssmttm.tokens.shards import TokenRow, write_shard

SPECIAL = 1024
CODEC = {"model": "dac", "weights_sha256": "ab" * 32, "n_codebooks": 3, "codebook_size": 1024, "variant": "trained"}


def make_shards(folder, sizes=(7, 5, 9), codec=CODEC):
    """Shards of synthetic codes: every 4th clip is 'valid'; lengths 3..40 frames; codes[k, t] = (i*7 + k*3 + t)."""
    rows_by_id = {}
    for s, n in enumerate(sizes):
        rows = []
        for j in range(n):
            i = sum(sizes[:s]) + j
            t = 3 + (i * 11) % 38
            codes = ((i * 7 + np.arange(3)[:, None] * 3 + np.arange(t)[None, :]) % 1024).astype(np.int16)
            row = TokenRow(
                clip_id=f"c{i:03d}",
                track_id=f"t{i // 2}",
                split="valid" if i % 4 == 3 else "train",
                caption=f"caption {i}",
                duration_s=t / 86,
                codes=codes,
                latents=np.zeros((6, t), np.float16),
            )
            rows.append(row)
            rows_by_id[row.clip_id] = row
        write_shard(
            folder / f"shard-{s:05d}.parquet",
            rows,
            {"ssmttm.codec": codec, "ssmttm.params_sha256": "x"},
            row_group_size=2,
            store_latents=True,
        )
    return rows_by_id


@pytest.fixture
def shards(tmp_path):
    rows = make_shards(tmp_path)
    return tmp_path, rows


def ids(items):
    return [it["clip_id"] for it in items]


def merged_worker_order(ds, num_workers):
    """What a DataLoader does with the workers' streams: batch i comes from worker i % num_workers."""
    streams = [iter(ds.iter_worker(w, num_workers)) for w in range(num_workers)]
    out = []
    for w in itertools.cycle(range(num_workers)):
        batch = list(itertools.islice(streams[w], ds.batch_size))
        if not batch:
            break
        out += batch
    return out


@pytest.mark.parametrize(
    "world_size,num_workers,batch_size", [(1, 1, 1), (1, 3, 2), (2, 2, 3), (3, 1, 2), (3, 2, 1), (4, 3, 2)]
)
def test_every_clip_once_over_ranks_and_workers(shards, world_size, num_workers, batch_size):
    folder, rows = shards
    train = sorted(c for c, r in rows.items() if r.split == "train")
    seen, sizes = [], []
    for rank in range(world_size):
        ds = TokenShardDataset(
            folder, seq_len=16, n_codebooks=2, seed=3, rank=rank, world_size=world_size, batch_size=batch_size
        )
        per_worker = [ids(ds.iter_worker(w, num_workers)) for w in range(num_workers)]
        rank_items = [c for items in per_worker for c in items]
        # The DataLoader's interleaving of the workers is the rank's order, whatever the number of workers.
        assert ids(merged_worker_order(ds, num_workers)) == ids(ds.iter_worker(0, 1))
        assert len(rank_items) == len(ds)
        seen += rank_items
        sizes.append(len(rank_items))
    assert sorted(seen) == train  # no duplicate, none lost
    assert max(sizes) - min(sizes) <= 1


def test_drop_uneven_gives_equal_counts(shards):
    folder, rows = shards
    n_train = sum(r.split == "train" for r in rows.values())
    counts = [
        len(list(TokenShardDataset(folder, 16, seed=1, rank=r, world_size=4, drop_uneven=True))) for r in range(4)
    ]
    assert counts == [n_train // 4] * 4


def test_real_dataloader_workers_keep_the_order(shards):
    folder, _ = shards
    ds = TokenShardDataset(folder, seq_len=16, n_codebooks=2, seed=3, batch_size=2)
    single = [c for b in DataLoader(ds, batch_size=2, num_workers=0, collate_fn=collate) for c in b["clip_id"]]
    multi = [c for b in DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate) for c in b["clip_id"]]
    assert single == multi == ids(ds.iter_worker(0, 1))


def test_epoch_order_is_seeded(shards):
    folder, rows = shards
    ds = TokenShardDataset(folder, seq_len=16, seed=3)
    first = ids(ds)
    assert ids(ds) == first == ids(TokenShardDataset(folder, seq_len=16, seed=3))
    ds.set_epoch(1)
    second = ids(ds)
    assert second != first and sorted(second) == sorted(first)
    assert ids(TokenShardDataset(folder, seq_len=16, seed=4)) != first
    ordered = ids(TokenShardDataset(folder, seq_len=16, seed=3, shuffle=False))
    assert ordered == sorted(c for c, r in rows.items() if r.split == "train")
    assert ids(TokenShardDataset(folder, seq_len=16, split="valid", shuffle=False)) == sorted(
        c for c, r in rows.items() if r.split == "valid"
    )


@pytest.mark.parametrize("world_size,rank", [(1, 0), (2, 1)])
def test_resume_yields_exactly_the_remaining_items(shards, world_size, rank):
    folder, _ = shards
    kwargs = dict(seq_len=16, n_codebooks=2, seed=5, rank=rank, world_size=world_size, batch_size=2)
    ds = TokenShardDataset(folder, **kwargs)
    ds.set_epoch(2)
    full = list(ds)
    loader = iter(DataLoader(ds, batch_size=2, num_workers=0, collate_fn=collate))
    for _ in range(2):
        next(loader)
    state = ds.state_dict()
    assert state["consumed"] == 4 and state["epoch"] == 2
    resumed = TokenShardDataset(folder, **kwargs)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # the trainer's usual call keeps the resume point
    rest = list(resumed)
    assert ids(rest) == ids(full)[4:]
    assert all(torch.equal(a["codes"], b["codes"]) for a, b in zip(rest, full[4:], strict=True))
    # With worker processes the trainer reports consumed batches: same state.
    observed = TokenShardDataset(folder, **kwargs)
    observed.set_epoch(2)
    for batch in itertools.islice(DataLoader(observed, batch_size=2, num_workers=2, collate_fn=collate), 2):
        observed.observe(batch)
    assert observed.state_dict() == state
    resumed.set_epoch(3)  # a new epoch starts from its beginning
    assert len(list(resumed)) == len(full)
    with pytest.raises(ValueError, match="seed"):
        TokenShardDataset(folder, **{**kwargs, "seed": 6}).load_state_dict(state)


def test_items_crop_pad_and_delay(shards):
    folder, rows = shards
    ds = TokenShardDataset(folder, seq_len=12, n_codebooks=2, seed=1)  # delayed: 10 frames + 2
    items = {it["clip_id"]: it for it in ds}
    again = {it["clip_id"]: it for it in ds}
    for clip_id, item in items.items():
        codes = rows[clip_id].codes[:2].astype(np.int64)
        assert item["codes"].shape == (2, 12) and item["codes"].dtype == torch.long
        assert torch.equal(item["codes"][:, 0], torch.full((2,), SPECIAL))  # BOS column of the delay pattern
        raw = undo_delay(item["codes"], SPECIAL).numpy()  # (2, 10)
        n = item["n_valid"]
        assert n == min(10, codes.shape[1])
        assert (raw[:, n:] == SPECIAL).all()
        if codes.shape[1] <= 10:
            assert np.array_equal(raw[:, :n], codes)
        else:  # a crop: some window of the clip, the same on a second pass of the same epoch
            starts = [s for s in range(codes.shape[1] - 9) if np.array_equal(codes[:, s : s + 10], raw)]
            assert starts
        assert torch.equal(item["codes"], again[clip_id]["codes"])
    long_ids = [c for c in items if rows[c].codes.shape[1] > 30]
    eval_items = {it["clip_id"]: it for it in TokenShardDataset(folder, 12, n_codebooks=2, shuffle=False)}
    for clip_id in long_ids:  # evaluation crops from the start
        assert np.array_equal(undo_delay(eval_items[clip_id]["codes"], SPECIAL).numpy(), rows[clip_id].codes[:2, :10])
    crops = [undo_delay(items[c]["codes"], SPECIAL)[0, 0].item() - rows[c].codes[0, 0] for c in long_ids]
    assert any(c != 0 for c in crops)  # training crops are random, not all at the start
    plain = next(iter(TokenShardDataset(folder, seq_len=12, n_codebooks=3, delay=False, shuffle=False)))
    assert plain["codes"].shape == (3, 12)
    assert np.array_equal(plain["codes"][:, : plain["n_valid"]].numpy(), rows[plain["clip_id"]].codes[:, :12])


def test_streams_row_groups_without_latents(shards, monkeypatch):
    folder, _ = shards
    ds = TokenShardDataset(folder, seq_len=16, seed=0)
    reads = []
    real = pq.ParquetFile.read_row_group

    def spy(self, i, columns=None, **kw):
        reads.append((i, tuple(columns or ())))
        return real(self, i, columns=columns, **kw)

    def forbidden(*a, **k):
        raise AssertionError("whole-file read")

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    monkeypatch.setattr(pq, "read_table", forbidden)
    monkeypatch.setattr(pq.ParquetFile, "read", forbidden)
    items = list(ds)
    assert items and reads
    assert all("latents" not in cols for _, cols in reads)
    assert len(reads) <= len(ds.row_groups)  # each row group read once per pass (LRU window)


def test_collate(shards):
    folder, _ = shards
    batch = next(
        iter(
            DataLoader(
                TokenShardDataset(folder, seq_len=16, n_codebooks=2, batch_size=3), batch_size=3, collate_fn=collate
            )
        )
    )
    assert batch["codes"].shape == (3, 2, 16) and batch["n_valid"].shape == (3,)
    assert len(batch["caption"]) == 3 and batch["position"].tolist() == [0, 1, 2]


def test_errors(shards, tmp_path):
    folder, _ = shards
    with pytest.raises(UserFacingError, match="shards hold 3"):
        TokenShardDataset(folder, seq_len=16, n_codebooks=4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserFacingError, match="no token shards"):
        TokenShardDataset(tmp_path / "empty", 16)
    for name, codec in (("one", CODEC), ("two", {**CODEC, "weights_sha256": "cd" * 32})):
        (tmp_path / name).mkdir()
        make_shards(tmp_path / name, sizes=(2,), codec=codec)
    with pytest.raises(UserFacingError, match="another codec"):
        TokenShardDataset([tmp_path / "one" / "shard-00000.parquet", tmp_path / "two" / "shard-00000.parquet"], 16)

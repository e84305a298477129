"""params `refiner.latent_stats`: the statistics the refiner normalises with, computed (default) or DiscoDiff's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from ssmttm.cli import main
from ssmttm.config import ParamsError, dataclass_to_dict, load_params
from ssmttm.errors import UserFacingError
from ssmttm.refine import stage
from ssmttm.refine.model import RefinerConfig, load_refiner
from ssmttm.refine.normalise import PAPER_DAC44K_STATS, LatentStats, compute_stats, select_stats
from ssmttm.tokens.shards import TokenRow, finalize_manifest, write_shard
from tests.refine._train_fixtures import (
    CODEC,
    TEXT_CFG,
    build_cache,
    make_latent_shards,
    tiny_refiner,
    tiny_train,
    write_params,
)

SEED = 11
DAC44K = {"model": "dac", "variant": "44khz", "n_codebooks": 9, "codebook_size": 16, "codebook_dim": 8}


def dac44k_shards(folder: Path, clips: int = 6) -> Path:
    """One shard of 9 x 8-dim latents (as DAC 44 kHz's) far from DiscoDiff's statistics (mean 10, std 0.5)."""
    rng = np.random.default_rng(0)
    rows = [
        TokenRow(
            clip_id=f"d{i:03d}-0000",
            track_id=f"d{i:03d}",
            split="valid" if i == clips - 1 else "train",
            caption="a calm piece",
            duration_s=0.8,
            codes=np.zeros((9, 40), np.int16),
            latents=(10 + 0.5 * rng.standard_normal((72, 40))).astype(np.float16),
        )
        for i in range(clips)
    ]
    folder.mkdir(parents=True)
    metadata = {"ssmttm.codec": DAC44K, "ssmttm.params_sha256": "r"}
    write_shard(folder / "shard-00000.parquet", rows, metadata, row_group_size=4, store_latents=True)
    finalize_manifest(folder)
    return folder


def test_computed_is_the_default_and_keeps_the_run_keys_of_earlier_runs(tmp_path):
    shards = make_latent_shards(tmp_path / "tokenize")
    assert RefinerConfig().latent_stats == "computed"
    assert select_stats("computed", shards, CODEC) == compute_stats(shards, "train")
    config = stage.run_config(tiny_refiner(), TEXT_CFG, tiny_train(), SEED)
    before = {**config, "refiner": {k: v for k, v in config["refiner"].items() if k != "latent_stats"}}
    assert stage.run_key(config, {"data": "x"}) == stage.run_key(before, {"data": "x"})  # no retraining
    paper = stage.run_config(tiny_refiner(latent_stats="discodiff"), TEXT_CFG, tiny_train(), SEED)
    assert stage.run_key(paper, {"data": "x"}) != stage.run_key(config, {"data": "x"})


def test_discodiff_trains_with_the_published_statistics_and_records_them(tmp_path, repo_root):
    shards = dac44k_shards(tmp_path / "tokenize")
    build_cache(shards, tmp_path / "text_cache")
    refiner_cfg, train_cfg = tiny_refiner(latent_stats="discodiff", primary=False), tiny_train(steps=2, val_every=2)
    params = write_params(tmp_path / "params.yaml", repo_root, refiner_cfg, train_cfg, seed=SEED)
    out = tmp_path / "run"
    argv = [
        "train-refiner",
        "--params",
        str(params),
        "--shards",
        str(shards),
        "--text-cache",
        str(tmp_path / "text_cache"),
    ]
    assert main([*argv, "--out", str(out)]) == 0
    stats = load_refiner(out / "final").stats
    assert (stats.means, stats.stds, stats.codebook_dim) == (
        PAPER_DAC44K_STATS.means,
        PAPER_DAC44K_STATS.stds,
        PAPER_DAC44K_STATS.codebook_dim,
    )
    assert stats != compute_stats(shards, "train")  # the data's own statistics are far from DiscoDiff's
    assert LatentStats.load(out / "final").source["latent_stats"] == "discodiff"
    assert json.loads((out / "metrics.json").read_text())["latent_stats"] == "discodiff"
    assert json.loads((out / "provenance.json").read_text())["params"]["refiner"]["latent_stats"] == "discodiff"


def test_computed_training_records_it(tmp_path):
    shards = make_latent_shards(tmp_path / "tokenize")
    build_cache(shards, tmp_path / "text_cache")
    metrics = stage.train_refiner(
        shards, tiny_refiner(primary=False), TEXT_CFG, tiny_train(steps=2, val_every=2), tmp_path / "run", SEED,
        text_cache_dir=tmp_path / "text_cache",
    )  # fmt: skip
    assert metrics["latent_stats"] == "computed"
    assert load_refiner(tmp_path / "run/final").stats == compute_stats(shards, "train")


def test_discodiff_with_another_codec_is_a_clear_error(tmp_path, repo_root, capsys):
    shards = make_latent_shards(tmp_path / "tokenize")  # 3 codebooks x 2 dims
    with pytest.raises(UserFacingError, match=r"refiner.latent_stats: discodiff .* 3 x 2"):
        select_stats("discodiff", shards, CODEC)
    build_cache(shards, tmp_path / "text_cache")
    params = write_params(
        tmp_path / "params.yaml", repo_root, tiny_refiner(latent_stats="discodiff"), tiny_train(), SEED
    )
    argv = [
        "train-refiner",
        "--params",
        str(params),
        "--shards",
        str(shards),
        "--text-cache",
        str(tmp_path / "text_cache"),
    ]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 1
    assert "refiner.latent_stats" in capsys.readouterr().err


def test_the_schema_and_the_config_refuse_other_values(tmp_path, repo_root):
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["refiner"] = {**dataclass_to_dict(tiny_refiner()), "latent_stats": "audiocraft"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError, match="refiner.latent_stats"):
        load_params(tmp_path / "params.yaml")
    with pytest.raises(ParamsError, match="latent_stats"):
        RefinerConfig(latent_stats="audiocraft")

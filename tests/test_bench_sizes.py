"""The benchmarks build each run's model as its train_lm run does: the `lm` and `train_lm` sections with its `runs`
entry applied (pipeline.run_sections), so configs/paper.yaml gives every backbone its paper size.
Models are counted on the meta device (no memory); nothing is trained or timed."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys

import pytest

from ssmttm.config import load_params
from ssmttm.models.lm import param_count
from ssmttm.models.registry import backbone_names
from tests.models.test_paper_sizes import EXACT, FLAN_T5_BASE_WIDTH

PAPER_DEPTHS = {"prefix_simba": 24, "prefix_mamba": 19, "prefix_transformer": 33, "cross_transformer": 24}


def load_bench(repo_root, name):
    spec = importlib.util.spec_from_file_location(name, repo_root / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def paper(repo_root):
    return load_params(repo_root / "configs" / "paper.yaml")


@pytest.fixture(scope="module")
def demo(repo_root):
    return load_params(repo_root / "params.yaml")


def test_bench_train_gives_each_backbone_its_paper_size_and_batch(repo_root):
    bench = load_bench(repo_root, "bench_train")
    cfg = bench.BenchConfig(
        gpu_run_names=tuple(backbone_names()), gpu_params=str(repo_root / "configs" / "paper.yaml"), gpu_steps=5
    )
    runs = bench.gpu_runs(cfg)
    assert [lm.backbone for lm, _ in runs] == backbone_names()
    for lm, train in runs:
        assert param_count(dataclasses.replace(lm, d_text=FLAN_T5_BASE_WIDTH)) == EXACT[lm.backbone]
        assert (train.batch_size, train.precision, train.max_steps) == (4, "bf16-mixed", 5)
    # The CPU runs read the same way: the demo's shared sizes, or a params file with per-backbone sizes.
    demo_runs = bench.cpu_runs(dataclasses.replace(cfg, params=str(repo_root / "params.yaml")))
    assert [(lm.backbone, lm.d_model, train.batch_size) for lm, train in demo_runs] == [
        ("prefix_simba", 128, 8),
        ("cross_transformer", 128, 8),
    ]
    paper_runs = bench.cpu_runs(dataclasses.replace(cfg, params=cfg.gpu_params, run_names=("prefix_mamba",)))
    assert paper_runs[0][0].n_layers == 19


def test_bench_train_step_takes_the_paper_depths_and_matches_the_rest(repo_root, paper, demo):
    bench = load_bench(repo_root, "bench_train_step")
    _, configs = bench.equal_size_configs(paper, backbone_names())
    assert {cfg.backbone: cfg.n_layers for cfg, _ in configs} == {**PAPER_DEPTHS, "cross_simba": 19}
    assert {source for _, source in configs} == {f"runs.{cfg.backbone}.lm" for cfg, _ in configs}
    # Without per-backbone depths (the demo), the depth is matched to prefix_simba's parameter count.
    target, configs = bench.equal_size_configs(demo, ["prefix_simba", "cross_transformer"])
    (simba, simba_from), (transformer, transformer_from) = configs
    assert (simba.n_layers, simba_from, transformer_from) == (4, "matched", "matched")
    gap = abs(param_count(transformer) - target)
    assert gap / target < 0.1
    for n_layers in (transformer.n_layers - 1, transformer.n_layers + 1):  # the nearest depth: both neighbours are not
        assert abs(param_count(dataclasses.replace(transformer, n_layers=n_layers)) - target) >= gap


def test_bench_generation_and_loader_read_the_run_of_a_backbone(repo_root, paper):
    generation = load_bench(repo_root, "bench_generation")
    assert generation.lm_config(paper, "prefix_mamba", FLAN_T5_BASE_WIDTH).n_layers == 19
    assert generation.lm_config(paper, None, FLAN_T5_BASE_WIDTH).backbone == "prefix_simba"  # the first run
    assert generation.lm_config(paper, "prefix_simba_small", FLAN_T5_BASE_WIDTH).n_layers == 6
    loader = load_bench(repo_root, "bench_loader")
    lm_section, batch_size = loader.run_settings(paper, "cross_transformer")
    assert (lm_section["backbone"], lm_section["n_layers"], batch_size) == ("cross_transformer", 24, 4)
    assert "runs" not in lm_section

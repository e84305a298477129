"""Synthetic inputs of the report stage, in the layout the generate, evaluate, train-lm and codec stages write.

Generated clips are short sine tones (a different pitch per system and caption); the evaluate stage's metrics.json
is written directly, with chosen values, so that each verdict of the comparison sentences is exercised:

    fd_openl3_sam  step 20000: prefix_simba 80 [78, 82] vs cross_transformer 95 [93, 97] -> the paper's ordering holds
                   step 40000: prefix_simba 70 [69, 71] vs cross_transformer 90 [88, 92] -> reversed (the paper has
                                                                                            cross_transformer better)
    kl_passt_sam   not computed (no weights)                                             -> cannot tell
    clap_score_sam flagged unreliable (N too small)                                      -> cannot tell
    fd_openl3      the audiocraft family: cross_transformer clearly lower           -> better (never the paper's)
    fd_mel         overlapping intervals                                                 -> cannot tell
    fd_chroma      prefix_simba clearly lower                                            -> better (not a paper metric)

`params()` declares both runs at the paper's size (so they are the paper's systems); `write_matrix` builds the
paper's matrix of comparisons under other names (ssmttm.report.comparisons).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import yaml

RATE = 16000
BACKBONES = ("prefix_simba", "cross_transformer")
STEPS = (20_000, 40_000)
VARIANTS = ("two_stage", "codebook1_only")
REFERENCE_VARIANTS = ("original", "codec", "codebook1_only", "reference_codebook1")
FAILED = ("cross_transformer", 40_000, "codebook1_only", "c01")  # one clip generation failed on
NO_WEIGHTS = "evaluate.models.passt.weights_path is null; to enable: pip install hear21passt"
SMALL_N = "N = 3 clips < 10: the interval is wide and the value is not comparable"


def captions(n: int) -> list[tuple[str, str]]:
    return [(f"c{i:02d}", f"A calm piece number {i} at {80 + 5 * i} BPM in C major.") for i in range(n)]


def tone(frequency: float, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.2 * np.sin(2 * np.pi * frequency * t) * np.exp(-t)).astype(np.float32)


def _write_folder(folder: Path, rows: list[dict[str, Any]], seconds: float, pitch: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k, row in enumerate(rows):
        if row.get("status") == "failed":
            out.append(row)
            continue
        name = f"{row['caption_id']}.wav"
        sf.write(str(folder / name), tone(pitch * (1 + 0.1 * k), seconds), RATE, subtype="PCM_16")
        out.append({**row, "path": name, "status": "ok", "sample_rate": RATE})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in out))


def write_generate(root: Path, n_captions: int = 3, seconds: float = 0.5) -> Path:
    """root/generate/{prefix_simba,cross_transformer,reference}/ as `ssmttm generate` writes them."""
    generate = root / "generate"
    texts = captions(n_captions)
    for b, backbone in enumerate(BACKBONES):
        run = generate / backbone
        for step in STEPS:
            for v, variant in enumerate(VARIANTS):
                rows = []
                for caption_id, caption in texts:
                    row = {"caption": caption, "caption_id": caption_id, "step": step, "variant": variant, "seed": 7}
                    if (backbone, step, variant, caption_id) == FAILED:
                        row.update(status="failed", reason="not_finite: NaN or infinite samples")
                    rows.append(row)
                _write_folder(run / f"step-{step:07d}" / variant, rows, seconds, 300 + 40 * b + 10 * v)
        summary = {
            "format": "ssmttm.generate/1",
            "mode": "lm_run",
            "checkpoints": [{"folder": f"step-{s:07d}", "step": s} for s in STEPS],
            "variants": list(VARIANTS),
            "skipped": {"single_stage": "the LM models 1 codebook(s), the codec 2"},
        }
        (run / "summary.json").write_text(json.dumps(summary))
    reference = generate / "reference"
    for v, variant in enumerate(REFERENCE_VARIANTS):
        rows = [{"caption": c, "caption_id": i, "step": None, "variant": variant} for i, c in texts]
        _write_folder(reference / variant, rows, seconds, 220 + 15 * v)
    (reference / "summary.json").write_text(
        json.dumps({"format": "ssmttm.generate/1", "mode": "reference", "variants": list(REFERENCE_VARIANTS)})
    )
    return generate


def _ok(value: float, half_width: float, n: int = 12, better: str | None = "lower") -> dict[str, Any]:
    return {"status": "ok", "value": value, "ci": [value - half_width, value + half_width], "n": n, "better": better}


def _unreliable(value: float, half_width: float, better: str | None) -> dict[str, Any]:
    return {**_ok(value, half_width, 3, better), "status": "unreliable", "warning": SMALL_N}


def _set_metrics(backbone: str, step: int, variant: str) -> dict[str, Any]:
    b = BACKBONES.index(backbone)
    fd_openl3 = {(0, 20_000): 80.0, (1, 20_000): 95.0, (0, 40_000): 70.0, (1, 40_000): 90.0}[(b, step)]
    shift = 0.0 if variant == "two_stage" else 5.0
    return {
        "fd_openl3_sam": _ok(fd_openl3 + shift, 2.0 if step == 20_000 else 1.0),
        "kl_passt_sam": {"status": "not computed", "reason": NO_WEIGHTS},
        "clap_score_sam": _unreliable(0.2 + 0.01 * b, 0.05, "higher"),
        "fd_openl3": _ok(200.0 - 50.0 * b, 1.0),
        "kl_passt": {"status": "not computed", "reason": NO_WEIGHTS},
        "fd_mel": _ok(100.0 + b, 10.0),
        "fd_chroma": _ok(1.0 + b, 0.1),
        "loudness_lufs": _ok(-23.0, 0.5, better=None),
    }


def write_evaluate(root: Path) -> Path:
    """root/evaluate/metrics.json and cards/ in the layout of ssmttm.evaluate.stage."""
    folder = root / "evaluate"
    (folder / "cards").mkdir(parents=True, exist_ok=True)
    sets: dict[str, Any] = {}
    for backbone in BACKBONES:
        for step in STEPS:
            for variant in VARIANTS:
                name = f"{backbone}/step-{step:07d}/{variant}"
                card = f"cards/{name.replace('/', '__')}.json"
                sets[name] = {
                    "role": "generated", "run": backbone, "step": step, "variant": variant, "n_clips": 3,
                    "card": card, "metrics": _set_metrics(backbone, step, variant),
                }  # fmt: skip
    for variant in REFERENCE_VARIANTS[1:]:
        metrics = {"fd_mel": _ok(40.0, 5.0), "dyncorr": _unreliable(0.8, 0.1, "higher")}
        sets[f"reference/{variant}"] = {
            "role": "reconstruction", "run": "reference", "step": None, "variant": variant, "n_clips": 3,
            "card": f"cards/reference__{variant}.json", "metrics": metrics,
        }  # fmt: skip
    reference = {
        "role": "reference", "run": "reference", "step": None, "variant": "original", "n_clips": 3,
        "card": "cards/reference.json",
        "metrics": {"fd_mel_split_half": _unreliable(30.0, 8.0, "lower"), "loudness_lufs": _ok(-20.0, 1.0)},
    }  # fmt: skip
    for entry in [reference, *sets.values()]:
        (folder / entry["card"]).write_text("{}")
        (folder / entry["card"].replace(".json", ".md")).write_text("# card\n")
    data = {
        "format": "ssmttm.evaluate/1",
        "seed": 1234,
        "bootstrap": {
            "method": "percentile bootstrap over clips",
            "resamples": 50,
            "confidence": 0.95,
            "min_clips": 10,
        },
        "models": {"passt": f"not computed: {NO_WEIGHTS}"},
        "reference": reference,
        "sets": sets,
    }
    (folder / "metrics.json").write_text(json.dumps(data))
    return folder


def write_training(root: Path) -> tuple[list[Path], Path, Path]:
    """(train-lm run folders, the lm-plot folder, the codec folder)."""
    runs = []
    for b, backbone in enumerate(BACKBONES):
        run = root / "train_lm" / backbone
        run.mkdir(parents=True)
        rows = []
        for step in range(1, 11):
            rows.append({"step": step, "flops": 1e9 * step, "loss": 5.0 - 0.1 * step - 0.05 * b})
            if step % 5 == 0:
                rows.append({"step": step, "flops": 1e9 * step, "val_loss": 5.1 - 0.1 * step})
        (run / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (run / "metrics.json").write_text(json.dumps({"backbone": backbone, "params": 1000 + b, "steps": 10}))
        runs.append(run)
    lm_plot = root / "lm_plot"
    lm_plot.mkdir()
    summary = {
        b: {"params": 1000, "steps": 10, "flops": 1e10, "last_loss": 4.0, "best_val_loss": 4.1} for b in BACKBONES
    }
    (lm_plot / "metrics.json").write_text(json.dumps(summary))
    codec = root / "codec"
    codec.mkdir()
    heldout = {"clips": ["a", "b"], "mel_distance_trained": 3.4, "mel_distance_untrained": 4.4, "metric": "mel"}
    (codec / "metrics.json").write_text(json.dumps({"heldout": heldout, "sample_rate": RATE, "steps": 4}))
    return runs, lm_plot, codec


def write_all(root: Path, n_captions: int = 3, seconds: float = 0.5) -> dict[str, Any]:
    generate = write_generate(root, n_captions, seconds)
    evaluate = write_evaluate(root)
    runs, lm_plot, codec = write_training(root)
    return {"generated": [generate], "evaluate": evaluate, "runs": runs, "lm_plot": lm_plot, "codec": codec}


# ----------------------------------------------------------------------------------------------- named runs


PAPER_SIZE = {"d_model": 1024, "n_layers": 24, "n_codebooks": 1}
TRAIN_LM = {"lr": 1e-4, "warmup_steps": 500, "min_lr_ratio": 0.005, "lr_schedule": "as_written", "max_steps": 100_000}


def params(**runs: dict[str, Any]) -> dict[str, Any]:
    """The params sections the report reads: prefix_simba and cross_transformer at the paper's size (or `runs`)."""
    runs = runs or {
        "prefix_simba": {"backbone": "prefix_simba"},
        "cross_transformer": {"backbone": "cross_transformer"},
    }
    return {"seed": 1234, "lm": dict(PAPER_SIZE), "train_lm": dict(TRAIN_LM), "runs": runs}


# The paper's matrix under names that are not the paper's: the run *named* prefix_simba is the 6-block one, the
# paper's prefix_simba is `ssm_full`; prefix_mamba is declared but never ran; `ghost` is declared nowhere.
MATRIX_RUNS = {
    "ssm_full": {"backbone": "prefix_simba"},
    "prefix_simba": {"backbone": "prefix_simba", "lm": {"n_layers": 6}},
    "cross_transformer": {"backbone": "cross_transformer", "train_lm": {"max_steps": 400_000}},
    "single_stage_simba": {"backbone": "prefix_simba", "lm": {"n_codebooks": 9}},
    "prefix_mamba": {"backbone": "prefix_mamba", "lm": {"n_layers": 19}},
}
MATRIX_BASELINES = {
    "musicgen_small": {"kind": "musicgen", "name_or_path": "facebook/musicgen-small"},
    "musicgen_medium": {"kind": "musicgen", "name_or_path": "facebook/musicgen-medium"},  # its weights are absent
}
NO_MUSICGEN = "facebook/musicgen-medium is not in the Hugging Face cache"
# run -> variant -> fd_openl3_sam at 20k and 40k steps (half-width 1: every difference is sure)
MATRIX_FD = {
    "ssm_full": {"two_stage": (80.0, 70.0)},
    "prefix_simba": {"two_stage": (85.0, 75.0)},
    "cross_transformer": {"two_stage": (95.0, 90.0)},
    "single_stage_simba": {"single_stage": (100.0, 99.0)},
}
MATRIX_BASELINE_FD = 60.0  # musicgen_small/pretrained: better than every run
MATRIX_COMPARISONS = [
    {"title": "SSM against Transformer", "systems": ["ssm_full", "prefix_mamba", "prefix_simba", "cross_transformer"],
     "claim": "SSM backbones beat the Transformer at the same steps"},
    {"title": "Small against full size", "systems": ["prefix_simba", "ssm_full"]},
    {"title": "Single stage against two stage", "systems": ["single_stage_simba:single_stage", "ssm_full:two_stage"]},
    {"title": "Ours against MusicGen",
     "systems": ["ssm_full", "cross_transformer", "musicgen_small", "musicgen_medium"]},
    {"title": "A typo", "systems": ["ssm_full", "ghost"]},
]  # fmt: skip


def _matrix_metrics(fd: float) -> dict[str, Any]:
    return {
        "fd_openl3_sam": _ok(fd, 1.0),
        "kl_passt_sam": {"status": "not computed", "reason": NO_WEIGHTS},
        "fd_mel": _ok(100.0, 10.0),
    }


def write_matrix(root: Path, repo_params: Path, n_captions: int = 2, seconds: float = 0.3) -> dict[str, Any]:
    """Generate folders, the evaluate metrics.json and a params file of the paper's matrix (MATRIX_*)."""
    generate = root / "generate"
    texts = captions(n_captions)
    sets: dict[str, Any] = {}
    for r, (run, by_variant) in enumerate(MATRIX_FD.items()):
        for variant, values in by_variant.items():
            for i, step in enumerate(STEPS):
                rows = [
                    {"caption": c, "caption_id": cid, "step": step, "variant": variant, "seed": 7} for cid, c in texts
                ]
                _write_folder(generate / run / f"step-{step:07d}" / variant, rows, seconds, 300 + 30 * r)
                sets[f"{run}/step-{step:07d}/{variant}"] = {
                    "role": "generated", "run": run, "step": step, "variant": variant, "n_clips": n_captions,
                    "metrics": _matrix_metrics(values[i]),
                }  # fmt: skip
        summary = {"format": "ssmttm.generate/1", "mode": "lm_run", "variants": list(by_variant)}
        (generate / run / "summary.json").write_text(json.dumps(summary))
    rows = [{"caption": c, "caption_id": cid, "step": None, "variant": "pretrained", "seed": 7} for cid, c in texts]
    _write_folder(generate / "musicgen_small" / "pretrained", rows, seconds, 900)
    (generate / "musicgen_small" / "summary.json").write_text(json.dumps({"format": "ssmttm.generate/1",
                                                                          "mode": "baseline"}))  # fmt: skip
    sets["musicgen_small/pretrained"] = {
        "role": "generated", "run": "musicgen_small", "step": None, "variant": "pretrained", "n_clips": n_captions,
        "metrics": _matrix_metrics(MATRIX_BASELINE_FD),
    }  # fmt: skip
    medium = {"format": "ssmttm.generate/1", "mode": "baseline", "status": "not computed", "reason": NO_MUSICGEN,
              "fetch": "hf download facebook/musicgen-medium", "variants": []}  # fmt: skip
    (generate / "musicgen_medium").mkdir()
    (generate / "musicgen_medium" / "summary.json").write_text(json.dumps(medium))
    rows = [{"caption": c, "caption_id": cid, "step": None, "variant": "original"} for cid, c in texts]
    _write_folder(generate / "reference" / "original", rows, seconds, 220)
    (generate / "reference" / "summary.json").write_text(json.dumps({"mode": "reference", "variants": ["original"]}))
    evaluate = root / "evaluate"
    evaluate.mkdir()
    reference = {"role": "reference", "run": "reference", "step": None, "variant": "original", "n_clips": n_captions,
                 "metrics": {"loudness_lufs": _ok(-20.0, 1.0)}}  # fmt: skip
    data = {"format": "ssmttm.evaluate/1", "bootstrap": {"confidence": 0.95, "min_clips": 1, "resamples": 50},
            "reference": reference, "sets": sets}  # fmt: skip
    (evaluate / "metrics.json").write_text(json.dumps(data))
    params_file = root / "params.yaml"
    full = copy.deepcopy(yaml.safe_load(repo_params.read_text()))
    full["lm"].update(PAPER_SIZE)
    full["train_lm"].update(max_steps=100_000, warmup_steps=500, schedule_steps=None)
    full["runs"] = MATRIX_RUNS
    full["baselines"] = MATRIX_BASELINES
    demo_report = {k: v for k, v in full.get("report", {}).items() if k not in ("comparisons", "paper_stand_ins")}
    full["report"] = {**demo_report, "comparisons": MATRIX_COMPARISONS, "listening_max_captions": 1}
    params_file.write_text(yaml.safe_dump(full, sort_keys=False))
    return {"generated": [generate], "evaluate": evaluate, "params": params_file}

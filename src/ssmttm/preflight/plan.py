"""Check 6: the plan. One row per stage of ssmttm.pipeline.STAGES: its jobs (per shard, per run or one), the device
it asks for, the bytes it writes and its GPU hours, measured where a benchmark measured them on a GPU, otherwise a
FLOP estimate labelled as one.
"""

from __future__ import annotations

from dataclasses import dataclass

from ssmttm.pipeline import SHARDED_RULES, STAGES, run_names, runs
from ssmttm.preflight import compute, volume
from ssmttm.preflight.compute import NOT_MEASURED, Assumptions
from ssmttm.preflight.context import Context, tolerant_dataclass
from ssmttm.preflight.report import StagePlan

SMALL = "small (metadata, JSON, figures)"


def job_count(ctx: Context, stage: str) -> tuple[int, str]:
    own_runs = runs(stage, ctx.params)
    if own_runs is not None:
        return len(own_runs), f"one per run ({', '.join(own_runs)})"
    n_shards = int(ctx.get("corpus.n_shards", 1))
    rules = STAGES[stage].job_rules
    jobs = sum(n_shards if rule in SHARDED_RULES else 1 for rule in rules)
    per_shard = [r for r in rules if r in SHARDED_RULES]
    if not per_shard:
        return jobs, "one job"
    extra = jobs - n_shards * len(per_shard)
    return jobs, f"one per shard (corpus.n_shards = {n_shards})" + (f" + {extra} to gather them" if extra else "")


def stage_device(ctx: Context, stage: str) -> str:
    devices = {
        "segment": ctx.get("segment.vocal_removal.device", "auto")
        if ctx.get("segment.vocal_removal.enabled")
        else "cpu",
        "caption": ctx.get("caption.model.device", "auto") if ctx.get("caption.mode") == "model" else "cpu",
        "codec": ctx.get("codec.device", "cpu") if ctx.get("codec.mode") == "train" else "cpu",
        "tokenize": ctx.get("tokenize.device", "auto"),
        "text_cache": ctx.get("text.device", "auto"),
        "train_lm": ctx.get("train_lm.accelerator", "auto"),
        "train_refiner": ctx.get("train_refiner.device", "auto"),
        "generate": ctx.get("generate.device", "auto"),
        "evaluate": ctx.get("evaluate.models.device", "cpu"),
    }
    return str(devices.get(stage, "-"))


@dataclass
class Volumes:
    """The sizes every stage's storage and compute figures are computed from."""

    corpus: volume.Corpus
    clips: float
    layout: volume.CodecLayout
    captions: float
    captions_basis: str
    refiner_unets: dict[str, int]  # role -> parameters

    @classmethod
    def of(cls, ctx: Context) -> Volumes:
        data = volume.corpus(ctx)
        clips = volume.clip_count(ctx, data)
        captions, basis = volume.caption_count(ctx, clips)
        layout = volume.codec_layout(ctx)
        unets = compute.refiner_sizes(ctx, layout.n_codebooks, layout.codebook_dim)
        return cls(data, clips, layout, captions, basis, unets)


def build_plan(ctx: Context, assumptions: Assumptions) -> list[StagePlan]:
    vols = Volumes.of(ctx)
    plan = []
    for stage in STAGES:
        jobs, jobs_basis = job_count(ctx, stage)
        row = StagePlan(stage, jobs, jobs_basis, stage_device(ctx, stage), None, SMALL)
        fill_storage(ctx, row, vols)
        if row.device != "cpu" and row.device != "-":
            fill_gpu_hours(ctx, row, vols, assumptions)
        plan.append(row)
    return plan


# ----------------------------------------------------------------------------------------------- storage


def fill_storage(ctx: Context, row: StagePlan, vols: Volumes) -> None:
    stage = row.stage
    if stage == "fetch":
        row.storage_bytes, row.storage_basis = fetch_bytes(ctx, vols.corpus)
    elif stage == "segment":
        row.storage_bytes, row.storage_basis = volume.segment_bytes(ctx, vols.clips)
    elif stage == "tokenize":
        row.storage_bytes, row.storage_basis = volume.token_bytes(ctx, vols.clips, vols.layout)
    elif stage == "text_cache":
        encoders = {ctx.get("text.encoder"), ctx.get("refiner_text.encoder") or ctx.get("text.encoder")}
        widths = {name: compute.text_width(ctx, name) for name in encoders}
        row.storage_bytes, row.storage_basis = volume.text_cache_bytes(ctx, vols.clips, widths)
    elif stage == "train_lm":
        row.storage_bytes, row.storage_basis = lm_checkpoint_bytes(ctx)
    elif stage == "train_refiner":
        row.storage_bytes, row.storage_basis = refiner_checkpoint_bytes(ctx, vols.refiner_unets)
    elif stage == "generate":
        row.storage_bytes, row.storage_basis = generate_bytes(ctx, vols)
    elif stage == "codec":
        row.storage_bytes, row.storage_basis = codec_bytes(ctx)


def codec_bytes(ctx: Context) -> tuple[float | None, str]:
    """The pretrained weights' own size when they are here (the stage rewrites them as safetensors)."""
    if ctx.get("codec.mode") != "pretrained":
        return None, "a small codec trained on the clips"
    from ssmttm.codec.pretrained import PretrainedConfig, cache_path

    cfg = tolerant_dataclass(PretrainedConfig, ctx.get("codec.pretrained", {}))
    path = ctx.path(cfg.path) if cfg.path else cache_path(cfg)
    if path.is_file():
        return float(path.stat().st_size), f"about the size of {path.name}"
    return None, "the DAC weights (size unknown until they are fetched)"


def fetch_bytes(ctx: Context, data: volume.Corpus) -> tuple[float, str]:
    basis = f"source audio of {data.basis}"
    if ctx.get("corpus.source") != "mtg_jamendo":
        return data.source_bytes, basis
    if ctx.get("fetch.keep_archives", False):
        return 2 * data.source_bytes, basis + "; the TARs are kept too (fetch.keep_archives)"
    return data.source_bytes + volume.MTG_TAR_BYTES, basis + "; plus one 5 GB TAR in flight per running fetch job"


def lm_runs(ctx: Context) -> list[tuple[str, int, int, dict]]:
    """(run, parameters, FLOP parameters, train_lm section) of every named LM run the workflow trains."""
    result = []
    for run in run_names(ctx.params):
        params, flops_params = compute.lm_sizes(ctx, run)
        result.append((run, params, flops_params, compute.run_section(ctx, "train_lm", run)))
    return result


def lm_checkpoint_bytes(ctx: Context) -> tuple[float, str]:
    total, notes = 0.0, []
    for run, params, _, train in lm_runs(ctx):
        kept = compute.kept_checkpoints(train, "train_lm", int(train.get("max_steps", 100_000)))
        total += kept.bytes(params)
        notes.append(f"{run} {params / 1e6:.2f} M params, {kept.basis}")
    per = f"{compute.ADAM_BYTES_PER_PARAM} B/param a full checkpoint (fp32 weights + AdamW moments), "
    return total, per + f"{compute.WEIGHT_BYTES_PER_PARAM} weights only; " + "; ".join(notes)


def refiner_checkpoint_bytes(ctx: Context, sizes: dict[str, int]) -> tuple[float, str]:
    train = ctx.section("train_refiner")
    kept = compute.kept_checkpoints(train, "train_refiner", int(train.get("steps", 100_000)))
    unets = ", ".join(f"{role} {n / 1e6:.2f} M" for role, n in sizes.items())
    return kept.bytes(sum(sizes.values())), f"U-Nets {unets}; weights + Adam moments; {kept.basis}"


def lm_variants(ctx: Context, run: str) -> list[str]:
    variants = list(ctx.get("generate.variants", ["two_stage", "codebook1_only", "single_stage"]))
    if int(compute.run_section(ctx, "lm", run).get("n_codebooks", 1)) == 1 and "single_stage" in variants:
        variants.remove("single_stage")  # a 1-codebook LM skips it (generate/config.py)
    return variants


def generate_bytes(ctx: Context, vols: Volumes) -> tuple[float, str]:
    seconds = float(ctx.get("generate.seconds", 10))
    clip = seconds * vols.layout.sample_rate * volume.PCM16_BYTES
    clips_per_caption = 0
    for run, *_, train in lm_runs(ctx):
        kept = compute.kept_checkpoints(train, "train_lm", int(train.get("max_steps", 100_000))).checkpoints
        clips_per_caption += kept * len(lm_variants(ctx, run))
    total = clips_per_caption * vols.captions * clip
    basis = (
        f"{vols.captions:,.0f} captions ({vols.captions_basis}) x {clips_per_caption} clips per caption (every kept "
        f"checkpoint of every run x its variants) x {seconds:g} s 16-bit WAV at {vols.layout.sample_rate} Hz"
    )
    if ctx.get("generate.captions", "test_split") == "test_split":
        total += 4 * vols.captions * clip  # the reference run: original, codec, codebook1_only, reference_codebook1
        basis += " + 4 reference variants"
    return total, basis


# ----------------------------------------------------------------------------------------------- GPU hours


def fill_gpu_hours(ctx: Context, row: StagePlan, vols: Volumes, assumptions: Assumptions) -> None:
    row.measured_basis = NOT_MEASURED
    if row.stage == "train_lm":
        lm_training_hours(ctx, row, assumptions)
    elif row.stage == "train_refiner":
        flops, basis = refiner_training_flops(ctx, vols)
        row.gpu_hours_estimate, row.estimate_basis = assumptions.hours(flops), f"{basis} at {assumptions.describe()}"
    elif row.stage == "generate":
        flops, basis = generation_flops(ctx, vols)
        row.gpu_hours_estimate = assumptions.hours(flops)
        row.estimate_basis = (
            f"{basis} at {assumptions.describe()}; the LM part is likely low (token-by-token sampling is "
            "memory-bound and reaches far less MFU), the U-Net part high (its deeper levels run on fewer frames)"
        )
    else:
        row.estimate_basis = ""
        row.measured_basis += " (no FLOP model for this stage in the project)"


def lm_training_hours(ctx: Context, row: StagePlan, assumptions: Assumptions) -> None:
    measured, unmeasured, flops, notes = 0.0, [], 0.0, []
    for run, params, flops_params, train in lm_runs(ctx):
        backbone = compute.run_section(ctx, "lm", run)["backbone"]
        per_device = int(train.get("batch_size", 4)) * int(train.get("accumulate_grad_batches", 32))
        devices = train.get("devices", 1) if isinstance(train.get("devices", 1), int) else 1
        clips = int(train.get("max_steps", 100_000)) * per_device * devices * int(train.get("num_nodes", 1))
        tokens = clips * int(compute.run_section(ctx, "lm", run).get("seq_len", 2588))
        flops += 6 * flops_params * tokens
        notes.append(f"{run}: 6 x {flops_params / 1e6:.1f} M x {tokens:.3g} tokens")
        rate = compute.measured_train_rate(ctx.root, backbone)
        if rate is None:
            unmeasured.append(run)
        else:
            measured += tokens / rate[0] / 3600
            row.measured_basis = f"{run} ({backbone}): {rate[1]}; profile's model {params / 1e6:.1f} M params"
    if not unmeasured:
        row.gpu_hours_measured = measured
    elif len(unmeasured) < len(notes):
        row.measured_basis += f"; {', '.join(unmeasured)} {NOT_MEASURED} (total left blank)"
    else:
        row.measured_basis = NOT_MEASURED
    row.gpu_hours_estimate = assumptions.hours(flops)
    row.estimate_basis = "; ".join(notes) + f" (max_steps x batch x accumulation x seq_len) at {assumptions.describe()}"


def refiner_training_flops(ctx: Context, vols: Volumes) -> tuple[float, str]:
    sizes = vols.refiner_unets
    p_primary = float(ctx.get("refiner.p_primary", 0.5)) if "primary" in sizes else 0.0
    params = p_primary * sizes.get("primary", 0) + (1 - p_primary) * sizes["secondary"]
    train = ctx.section("train_refiner")
    positions = (
        int(train.get("steps", 100_000))
        * int(train.get("batch_size", 32))
        * int(train.get("accumulate_grad_batches", 8))
        * int(train.get("crop_frames", 2320))
    )
    basis = (
        f"6 x {params / 1e6:.1f} M (U-Net picked per step) x {positions:.3g} frames (steps x batch x accumulation x "
        "crop); an upper bound: the U-Net's deeper levels run on fewer frames"
    )
    return 6 * params * positions, basis


def generation_flops(ctx: Context, vols: Volumes) -> tuple[float, str]:
    """2 N per sampled position, twice with classifier-free guidance; the refiner's steps on two_stage clips."""
    frames = float(ctx.get("generate.seconds", 10)) * vols.layout.sample_rate / vols.layout.hop
    lm_guided = 2 if float(ctx.get("generate.guidance_scale", 3.0)) != 1.0 else 1
    refine_guided = 2 if float(ctx.get("generate.refine_guidance_scale", 3.0)) != 1.0 else 1
    refine_steps = int(ctx.get("generate.refine_steps", 100))
    secondary = vols.refiner_unets["secondary"]
    flops, checkpoints, refines = 0.0, 0, False
    for run, _, flops_params, train in lm_runs(ctx):
        kept = compute.kept_checkpoints(train, "train_lm", int(train.get("max_steps", 100_000))).checkpoints
        checkpoints += kept
        per_caption = 2 * flops_params * frames * lm_guided
        if "two_stage" in lm_variants(ctx, run):
            refines = True
            per_caption += refine_steps * refine_guided * 2 * secondary * frames
        flops += kept * vols.captions * per_caption
    basis = (
        f"{vols.captions:,.0f} captions x {checkpoints} checkpoints x {frames:.0f} frames: 2 N per position"
        f"{' (x2 guidance)' if lm_guided == 2 else ''}"
        + (f", plus {refine_steps} refiner steps of 2 x {secondary / 1e6:.1f} M per frame" if refines else "")
    )
    return flops, basis

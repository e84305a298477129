"""`ssmttm evaluate`: every metric of every generated set against the reference clips, each with its interval and card.

    ssmttm evaluate --params params.yaml --reference results/generate/reference \\
        --generated results/generate/prefix_simba results/generate/cross_transformer --out results/evaluate

Reads the `evaluate` section and the global seed. Each folder is read with its manifests (ssmttm.evaluate.clipsets):
one set per manifest below it and per (checkpoint step, variant) group in a manifest, named after the folder and the
manifest's subfolder, e.g. `prefix_simba/step-0000150/two_stage` (`NAME=DIR` names a folder explicitly). In the
reference folder, the variant `evaluate.reference_variant` (default `original`) is the reference; its other variants
(the codec reconstruction, codebook 1 only, the refiner on the reference's codebook 1) are evaluated as
reconstructions: the same metrics, plus dyncorr / log-mel L1 / mel distance against the reference clip of the same
caption id (the codec floor). With `crop_to_reference`, a clip longer than its caption's reference clip is cut to
that length first. Set-level numbers (Fréchet distances, diversity) ignore the pairing; adherence, KL and CLAP use
each clip's own caption.

Embedding metrics come in two families (ssmttm.evaluate.families, `evaluate.families`): the audiocraft family
(fd_vggish, fd_openl3, kl_passt, clap_score, fad_clap; generated clips loudness-normalised to
`evaluate.audiocraft.loudness_target_lufs`) and the stable-audio-metrics family (fd_openl3_sam, kl_passt_sam,
clap_score_sam; every clip peak-normalised to -1 dBFS, `evaluate.sam.channels`). Weight-free metrics are the same
whichever families run.

Output (one atomic folder):

    metrics.json            the numbers: {"reference": {...}, "sets": {name: {...}}, "models": {...}, ...}; each
                            metric {"status", "value", "ci", "n", "better"} or {"status": "not computed", "reason"}
    cards/<set>.json, .md   the metric card of every number of the set (and cards/reference.*)
    per_clip/<set>.jsonl    per-clip values (health, tempo and key estimates and targets, repetition, paired measures)
    provenance.json
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ssmttm import stand_ins
from ssmttm.artifacts import atomic_dir, library_versions, write_json, write_jsonl, write_provenance
from ssmttm.config import load_params, section_to_dataclass
from ssmttm.errors import UserFacingError
from ssmttm.evaluate import cards, families, metrics
from ssmttm.evaluate.clipsets import RESAMPLER, ClipSet, read_clip_sets
from ssmttm.evaluate.embeddings import FAMILIES, LOADED_MODELS, ModelsConfig, Unavailable, load_models
from ssmttm.evaluate.families import AudiocraftConfig, ReferenceCache
from ssmttm.evaluate.features import FeatureConfig, clip_features, clip_health, feature_card, key_name
from ssmttm.evaluate.sam import SamConfig, check_channels
from ssmttm.progress import progress

log = logging.getLogger(__name__)

FORMAT = "ssmttm.evaluate/1"
METRICS_FILE = "metrics.json"
GENERATED, RECONSTRUCTION, REFERENCE = "generated", "reconstruction", "reference"


@dataclass
class EvaluateConfig:
    reference_variant: str = "original"  # the reference folder's group that is the reference itself
    crop_to_reference: bool = True  # cut clips longer than their reference clip to its length
    min_clips: int = 10  # fewer clips (or pairs) than this: every set-level number is flagged unreliable
    bootstrap_resamples: int = 200
    confidence: float = 0.95
    num_threads: int | None = 1  # BLAS/torch threads; more threads only contend on a shared CPU (null: library default)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    families: tuple[str, ...] = FAMILIES  # embedding-metric families: audiocraft, stable_audio
    audiocraft: AudiocraftConfig = field(default_factory=AudiocraftConfig)
    sam: SamConfig = field(default_factory=SamConfig)


@dataclass
class EvaluatedSet:
    """A clip set with its role, its reference pairing and its per-clip measures."""

    clips: ClipSet
    role: str
    reference_index: list[int | None]  # per clip: index of the reference clip with its caption id
    health: list[dict[str, Any]] = field(default_factory=list)
    features: list[Any] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------- reading


def read_reference(folder: str | Path, variant: str) -> tuple[ClipSet, list[ClipSet]]:
    """(the reference set, the reconstruction sets) of the reference folder."""
    groups = read_clip_sets(folder, REFERENCE)
    if len(groups) == 1 and groups[0].variant in (None, variant):
        reference = groups[0]
    else:
        matching = [g for g in groups if g.variant == variant]
        if not matching:
            found = sorted({str(g.variant) for g in groups})
            raise UserFacingError(
                f"{folder}: no clips of variant {variant!r} (found {found}); set evaluate.reference_variant to the "
                "variant holding the original clips"
            )
        if len(matching) > 1:
            raise UserFacingError(f"{folder}: variant {variant!r} appears at several checkpoint steps")
        reference = matching[0]
    reference.name = REFERENCE
    if not reference.clips:
        raise UserFacingError(f"{folder}: the reference variant {variant!r} has no usable clip")
    return reference, [g for g in groups if g is not reference]


def _pair_with_reference(clip_set: ClipSet, reference: ClipSet) -> list[int | None]:
    index: dict[str, int] = {}
    for i, clip in enumerate(reference.clips):
        index.setdefault(clip.caption_id, i)
    return [index.get(clip.caption_id) for clip in clip_set.clips]


def _crop_to_reference(evaluated: EvaluatedSet, reference: ClipSet) -> int:
    """Cut clips longer than their reference clip to its duration; returns how many were cut."""
    cropped, audio = 0, []
    for clip, ref_index in zip(evaluated.clips.clips, evaluated.reference_index, strict=True):
        samples = clip.audio
        if ref_index is not None:
            limit = round(reference.clips[ref_index].duration_s * clip.sample_rate)
            if samples.shape[0] > limit:
                samples, cropped = samples[:limit], cropped + 1
        audio.append(samples)
    evaluated.clips.replace_audio(audio)
    return cropped


def parse_named_folders(values: list[str]) -> dict[str, str]:
    """['DIR', 'NAME=DIR', ...] -> {name: folder}; a bare DIR is named after its last path component."""
    named: dict[str, str] = {}
    for value in values:
        name, _, folder = value.rpartition("=") if "=" in value else (Path(value).name, "", value)
        if name in named:
            raise UserFacingError(f"two generated folders are both named {name!r}; name them with NAME=DIR")
        named[name] = folder
    return named


# ----------------------------------------------------------------------------------------------- per-clip work


def _measure(evaluated: EvaluatedSet, cfg: FeatureConfig) -> None:
    clip_set = evaluated.clips
    evaluated.health = [clip_health(c.audio, c.sample_rate, cfg) for c in clip_set.clips]
    audio = clip_set.audio_at(cfg.sample_rate)
    clips = progress(range(len(audio)), f"evaluate {clip_set.name}: features", unit="clip")
    evaluated.features = [clip_features(audio[i], cfg, evaluated.health[i]["loudness_lufs"]) for i in clips]


def _per_clip_rows(evaluated: EvaluatedSet, *extra: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for i, clip in enumerate(evaluated.clips.clips):
        row: dict[str, Any] = {
            "clip": clip.clip_id,
            "caption_id": clip.caption_id,
            "seed": clip.seed,
            **evaluated.health[i],
            "repetition": evaluated.features[i].repetition,
            "feature_gain_db": evaluated.features[i].gain_db,
        }
        for part in extra:
            row.update(part[i] if i < len(part) else {})
        rows.append({k: _jsonable(v) for k, v in row.items()})
    return rows


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], int):
        return key_name(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.floating | np.integer):
        return value.item()
    return value


# ----------------------------------------------------------------------------------------------- the stage


def evaluate(
    sets: dict[str, str | Path],
    reference: str | Path,
    cfg: EvaluateConfig,
    out: str | Path,
    seed: int,
    section: dict[str, Any] | None = None,
    models: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate every set of `sets` ({name: folder}) and the reconstructions of `reference`; write `out`; return
    metrics.json's content.

    `models` replaces `load_models(cfg.models)` (tests pass tiny stand-ins here; params cannot).
    """
    with _thread_limit(cfg.num_threads):
        return _evaluate(sets, reference, cfg, out, seed, section, models)


@contextlib.contextmanager
def _thread_limit(threads: int | None) -> Iterator[None]:
    """BLAS (through threadpoolctl) and torch limited to `threads` while the stage runs: many small eigh and FFT
    calls are 10-20x slower when OpenBLAS threads spin against other processes."""
    if threads is None:
        yield
        return
    import torch
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(previous)


def _evaluate(
    sets: dict[str, str | Path],
    reference: str | Path,
    cfg: EvaluateConfig,
    out: str | Path,
    seed: int,
    section: dict[str, Any] | None,
    models: dict[str, Any] | None,
) -> dict[str, Any]:
    boot = metrics.Bootstrap(cfg.bootstrap_resamples, cfg.confidence, seed, cfg.min_clips)
    unknown = sorted(set(cfg.families) - set(FAMILIES))
    if unknown:
        raise UserFacingError(f"evaluate.families: unknown {unknown}; allowed: {list(FAMILIES)}")
    check_channels(cfg.sam.channels)
    reference_set, reconstructions = read_reference(reference, cfg.reference_variant)
    evaluated: list[EvaluatedSet] = [
        EvaluatedSet(s, RECONSTRUCTION, _pair_with_reference(s, reference_set)) for s in reconstructions
    ]
    for name, folder in sets.items():
        evaluated += [
            EvaluatedSet(s, GENERATED, _pair_with_reference(s, reference_set)) for s in read_clip_sets(folder, name)
        ]
    names = [e.clips.name for e in evaluated]
    duplicates = sorted({n for n in names if names.count(n) > 1} | ({REFERENCE} & set(names)))
    if duplicates:
        raise UserFacingError(f"set names {duplicates} are used twice; name the generated folders with NAME=DIR")
    cropped = {e.clips.name: _crop_to_reference(e, reference_set) if cfg.crop_to_reference else 0 for e in evaluated}

    # a wrong weights hash fails here; stand-ins (tests) of a family left out of evaluate.families are not used
    if models is None:
        loaded = load_models(cfg.models, seed, tuple(cfg.families))
    else:
        selected = {name for family in cfg.families for name in LOADED_MODELS[family]}
        loaded = {name: model for name, model in models.items() if name in selected}
    cache = ReferenceCache()
    reference_eval = EvaluatedSet(reference_set, REFERENCE, list(range(len(reference_set.clips))))
    for item in [reference_eval, *evaluated]:
        _measure(item, cfg.features)

    common = {
        "evaluation_seed": seed,
        "bootstrap": metrics.bootstrap_card(boot),
        "resampler": RESAMPLER,
        "libraries": library_versions(("scipy", "librosa", "pyloudnorm", "threadpoolctl")),
        "crop_to_reference": cfg.crop_to_reference,
        "weight_free_features": feature_card(cfg.features),
        "models": {name: _model_status(model) for name, model in loaded.items()},
        "families": list(cfg.families),
        **_network_stand_ins(loaded),
    }
    with atomic_dir(out) as tmp:
        reference_entry = _evaluate_reference(reference_eval, loaded, cfg, boot, common, tmp)
        set_entries = {
            item.clips.name: _evaluate_set(item, reference_eval, loaded, cfg, boot, common, cropped, tmp, cache)
            for item in progress(evaluated, "evaluate: sets", unit="set")
        }
        result = {
            "format": FORMAT,
            "seed": seed,
            "bootstrap": metrics.bootstrap_card(boot),
            "models": common["models"],
            "families": list(cfg.families),
            "reference": reference_entry,
            "sets": set_entries,
        }
        inherited = stand_ins.inherited([reference, *sets.values()])
        result.update(stand_ins.card_fields(common.get(stand_ins.KEY, {}), inherited))
        write_json(tmp / METRICS_FILE, result)
        write_provenance(
            tmp,
            "evaluate",
            section if section is not None else _section_of(cfg),
            seed,
            reference=str(reference),
            generated={name: str(folder) for name, folder in sets.items()},
            manifests={e.clips.name: e.clips.manifest_sha256 for e in [reference_eval, *evaluated]},
            **stand_ins.provenance_fields(common.get(stand_ins.KEY, {}), inherited),
        )
    return result


def _section_of(cfg: EvaluateConfig) -> dict[str, Any]:
    return asdict(cfg)


def _network_stand_ins(loaded: dict[str, Any]) -> dict[str, Any]:
    """{"stand_ins": {network: STANDIN.txt text}} for the loaded evaluation networks whose weights are stand-ins."""
    labels = {
        f"evaluate network {name}": stand_ins.label_beside(model.card().get("weights"))
        for name, model in loaded.items()
        if not isinstance(model, Unavailable) and hasattr(model, "card")
    }
    labels = {name: label for name, label in labels.items() if label}
    return {stand_ins.KEY: labels} if labels else {}


def _stand_in_card(card: dict[str, Any], *folders: Path) -> dict[str, Any]:
    """`card` headed by stand_in/stand_ins/note when its networks or the clips of `folders` came from stand-ins."""
    parts = [card["common"].get(stand_ins.KEY, {}), *(stand_ins.of_artifact(f) for f in folders)]
    return {**stand_ins.card_fields(*parts), **card}


def _model_status(model: Any) -> str:
    return f"not computed: {model.reason}" if isinstance(model, Unavailable) else "loaded"


def _entries(results: metrics.Results) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metric -> entry for metrics.json, metric -> card details including the entry)."""
    return (
        {name: entry for name, (entry, _) in results.items()},
        {name: {"result": entry, **details} for name, (entry, details) in results.items()},
    )


def _weight_free_details(cfg: EvaluateConfig) -> dict[str, Any]:
    return {"implementation": "ssmttm.evaluate.features", "sample_rate": cfg.features.sample_rate, "mono": True}


def _evaluate_reference(
    item: EvaluatedSet, loaded: dict[str, Any], cfg: EvaluateConfig, boot: metrics.Bootstrap, common: dict, out: Path
) -> dict[str, Any]:
    """The reference's own numbers: health, adherence (the ceiling), repetition, diversity, split-half FDs and the
    CLAP score of the real audio (the upper bound)."""
    clip_set, details = item.clips, _weight_free_details(cfg)
    results: metrics.Results = metrics.health_metrics(item.health, clip_set, boot, {"audio": "each file at its rate"})
    adherence, adherence_rows = metrics.adherence_metrics(
        item.features,
        [c.caption for c in clip_set.clips],
        [c.caption_id for c in clip_set.clips],
        cfg.features.tempo_tolerance,
        boot,
        REFERENCE,
    )
    results.update(adherence)
    results.update(
        metrics.repetition_diversity_metrics(
            item.features, [c.caption_id for c in clip_set.clips], boot, "reference", details
        )
    )
    results.update(metrics.split_half_frechet(item.features, boot))
    clap_results, clap_rows = families.reference_metrics(clip_set, loaded, tuple(cfg.families), boot)
    results.update(clap_results)
    entries, card_metrics = _entries(results)
    reference_note = {"name": REFERENCE, "role": "this set is the reference"}
    card = {"set": clip_set.describe(), "reference": reference_note, "common": common, "metrics": card_metrics}
    card = _stand_in_card(card, clip_set.folder)
    card_path = cards.write_card(out, REFERENCE, card)
    write_jsonl(out / f"per_clip/{cards.slug(REFERENCE)}.jsonl", _per_clip_rows(item, adherence_rows, *clap_rows))
    return {**_set_summary(item), "card": card_path, "metrics": entries}


def _set_summary(item: EvaluatedSet) -> dict[str, Any]:
    clip_set = item.clips
    return {
        "role": item.role,
        "run": clip_set.name.split("/")[0],  # the --generated folder's name (a backbone), or "reference"
        "folder": str(clip_set.folder),
        "step": clip_set.step,
        "variant": clip_set.variant,
        "n_clips": len(clip_set.clips),
        "n_failed": len(clip_set.failed),
        "n_paired": sum(i is not None for i in item.reference_index),
        "total_duration_s": round(sum(c.duration_s for c in clip_set.clips), 3),
    }


def _evaluate_set(
    item: EvaluatedSet,
    reference: EvaluatedSet,
    loaded: dict[str, Any],
    cfg: EvaluateConfig,
    boot: metrics.Bootstrap,
    common: dict,
    cropped: dict[str, int],
    out: Path,
    cache: ReferenceCache,
) -> dict[str, Any]:
    clip_set, name, details = item.clips, item.clips.name, _weight_free_details(cfg)
    if not clip_set.clips:
        reason = clip_set.not_computed or f"the set has no usable clip ({len(clip_set.failed)} failed in generation)"
        entry = {**_set_summary(item), "metrics": {"all": cards.not_computed(reason)}}
        card = {"set": clip_set.describe(), "reference": reference.clips.describe(), "common": common, "metrics": {}}
        card = _stand_in_card(card, clip_set.folder, reference.clips.folder)
        entry["card"] = cards.write_card(out, name, card)
        return entry
    captions = [c.caption for c in clip_set.clips]
    caption_ids = [c.caption_id for c in clip_set.clips]
    paired = [(i, r) for i, r in enumerate(item.reference_index) if r is not None]

    results: metrics.Results = metrics.health_metrics(item.health, clip_set, boot, {"audio": "each file at its rate"})
    results.update(metrics.feature_frechet_metrics(item.features, reference.features, boot, name, details))
    adherence, adherence_rows = metrics.adherence_metrics(
        item.features, captions, caption_ids, cfg.features.tempo_tolerance, boot, name
    )
    results.update(adherence)
    results.update(metrics.repetition_diversity_metrics(item.features, caption_ids, boot, name, details))
    extra_rows: list[list[dict[str, Any]]] = [adherence_rows]

    if item.role == RECONSTRUCTION:
        rate = reference.clips.clips[0].sample_rate
        own, ref_audio = clip_set.audio_at(rate), reference.clips.audio_at(rate)
        if paired:
            signal_results, signal_rows = metrics.paired_signal_metrics(
                [(ref_audio[r], own[i]) for i, r in paired], rate, boot, name
            )
            results.update(signal_results)
            extra_rows.append(families.spread_rows(signal_rows, paired, len(clip_set.clips)))
        else:
            for metric in ("dyncorr", "log_mel_l1_db", "mel_distance"):
                results[metric] = (cards.not_computed("no clip shares a caption id with the reference"), {})

    results.update(families.not_selected(tuple(cfg.families)))
    if families.AUDIOCRAFT in cfg.families:
        family_results, family_rows = families.audiocraft_metrics(
            clip_set, reference.clips, paired, loaded, cfg.audiocraft, item.role == GENERATED, boot, cache
        )
        results.update(family_results)
        extra_rows += family_rows
    if families.STABLE_AUDIO in cfg.families:
        family_results, family_rows = families.sam_metrics(
            clip_set, reference.clips, paired, loaded, cfg.sam, boot, cache
        )
        results.update(family_results)
        extra_rows += family_rows

    entries, card_metrics = _entries(results)
    set_description = {**clip_set.describe(), "role": item.role, "clips_cropped_to_reference": cropped[name]}
    card = {"set": set_description, "reference": reference.clips.describe(), "common": common, "metrics": card_metrics}
    card = _stand_in_card(card, clip_set.folder, reference.clips.folder)
    card_path = cards.write_card(out, name, card)
    write_jsonl(out / f"per_clip/{cards.slug(name)}.jsonl", _per_clip_rows(item, *extra_rows))
    return {**_set_summary(item), "card": card_path, "metrics": entries}


# --------------------------------------------------------------------------------------------------- CLI


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reference",
        required=True,
        help="folder of reference clips with its manifest (the original clips; its other variants, such as the codec "
        "reconstruction, are evaluated as reconstructions)",
    )
    parser.add_argument(
        "--generated",
        nargs="*",
        default=[],
        metavar="[NAME=]DIR",
        help="folders of generated clips with their manifests (one set per checkpoint step and variant)",
    )
    parser.add_argument("--out", default="results/evaluate", help="output folder (default: results/evaluate)")


def run_from_args(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    section = params.get("evaluate") or {}
    cfg = section_to_dataclass(EvaluateConfig, section)
    result = evaluate(parse_named_folders(args.generated), args.reference, cfg, args.out, int(params["seed"]), section)
    print(f"{args.out}/{METRICS_FILE}: reference + {len(result['sets'])} set(s)")
    return 0

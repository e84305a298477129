"""The two embedding-metric families of the evaluate stage, each computed the way its reference implementation does.

    audiocraft    fd_vggish, fd_openl3, kl_passt, clap_score, fad_clap: MusicGen's protocol (audiocraft); generated
                  clips are loudness-normalised first (`evaluate.audiocraft.loudness_target_lufs`, -14 LUFS as
                  audiocraft), references and codec reconstructions are used as read (ssmttm.evaluate.levels)
    stable_audio  fd_openl3_sam, kl_passt_sam, clap_score_sam: stable-audio-metrics (ssmttm.evaluate.sam); every clip
                  peak-normalised to -1 dBFS, OpenL3 at 44.1 kHz with `evaluate.sam.channels`, the 10 s PaSST, the
                  fusion CLAP. The paper's FD / KL / CLAP columns compare with this family.

`evaluate.families` selects which run (default both); a family left out has its metrics `not computed` with that
reason, and its models are not loaded. Each metric's card names its family, its implementation, the checkpoint,
rate, channels and level normalisation. Reference-side embeddings are computed once per stage run (`ReferenceCache`)
and shared by every set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ssmttm.evaluate import cards, metrics, sam
from ssmttm.evaluate.clipsets import RESAMPLER, ClipSet
from ssmttm.evaluate.embeddings import (
    AUDIOCRAFT,
    FAMILIES,
    KL_EPS,
    LOADED_MODELS,
    STABLE_AUDIO,
    Unavailable,
    kl_divergence,
)
from ssmttm.evaluate.levels import (
    AUDIOCRAFT_ENERGY_FLOOR,
    audiocraft_loudness,
    levelled_then_resampled,
    peak_normalise,
    resampled_then_levelled,
)

Rows = list[dict[str, Any]]


@dataclass
class AudiocraftConfig:
    # generated clips gain-normalised to this integrated loudness (BS.1770) before the audiocraft family's networks,
    # as audiocraft's evaluation (generate.audio.loudness_headroom_db 14); null: used as read
    loudness_target_lufs: float | None = -14.0


class ReferenceCache:
    """Values computed on the reference once per stage run (its embeddings and class probabilities per model)."""

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self._values:
            self._values[key] = compute()
        return self._values[key]


def family_metrics(family: str) -> list[str]:
    return [metric for _, names in LOADED_MODELS[family].values() for metric in names]


def not_selected(families: tuple[str, ...]) -> metrics.Results:
    """Every metric of a family left out of `evaluate.families`, as `not computed`."""
    results: metrics.Results = {}
    for family in FAMILIES:
        if family not in families:
            reason = f"evaluate.families does not list {family}; add it there to compute this metric"
            results.update({metric: (cards.not_computed(reason), {}) for metric in family_metrics(family)})
    return results


def spread_rows(rows: Rows, paired: list[tuple[int, int]], n: int) -> Rows:
    """Rows computed on the paired clips only, placed at their clips' positions (empty rows elsewhere)."""
    out: Rows = [{} for _ in range(n)]
    for (i, _), row in zip(paired, rows, strict=True):
        out[i] = row
    return out


def _usable(loaded: dict[str, Any], name: str, results: metrics.Results) -> Any:
    """The loaded model `name`, or None after recording its metrics as `not computed` (absent: nothing recorded)."""
    model = loaded.get(name)
    if isinstance(model, Unavailable):
        for family_models in LOADED_MODELS.values():
            for metric in family_models.get(name, (None, ()))[1]:
                results[metric] = (cards.not_computed(model.reason), {})
        return None
    return model


# ----------------------------------------------------------------------------------------------- audiocraft


def audiocraft_level(cfg: AudiocraftConfig, normalise: bool) -> tuple[Callable[..., np.ndarray] | None, str]:
    """(the level function for a set's clips, or None for as read; the card's sentence)."""
    if not normalise:
        return None, (
            "none: this set (the reference, or a codec reconstruction, as audiocraft's use_gt path) is used as "
            "read; audiocraft normalises generated clips only"
        )
    target = cfg.loudness_target_lufs
    if target is None:
        return None, "none: evaluate.audiocraft.loudness_target_lufs is null (audiocraft uses -14 LUFS)"
    sentence = (
        f"generated clips: gain to {target:g} LUFS integrated loudness (ITU-R BS.1770, pyloudnorm) at the file's "
        f"rate, clips with RMS below {AUDIOCRAFT_ENERGY_FLOOR:g} left as they are, then clamped to [-1, 1], as "
        "audiocraft's normalize_audio(strategy='loudness'); then resampled. The reference is used as read"
    )
    return (lambda audio, rate: audiocraft_loudness(audio, rate, target)), sentence


AUDIOCRAFT_NOTES = {
    "vggish": "; then VGGish's own clip peak normalisation (gain at most +20 dB)",
    "clap": "; then the int16 round trip (laion_clap's recommended input)",
}
AUDIOCRAFT_FAMILY = f"{AUDIOCRAFT} (MusicGen's evaluation protocol, as audiocraft)"
OPENL3_NOTE = (
    f"{AUDIOCRAFT} family conventions (48 kHz mono, loudness-normalised generated clips); OpenL3 is not an "
    "audiocraft metric. The stable-audio-metrics FD that the paper's FD matches is fd_openl3_sam"
)


def audiocraft_metrics(
    clip_set: ClipSet,
    reference: ClipSet,
    paired: list[tuple[int, int]],
    loaded: dict[str, Any],
    cfg: AudiocraftConfig,
    normalise: bool,
    boot: metrics.Bootstrap,
    cache: ReferenceCache,
) -> tuple[metrics.Results, list[Rows]]:
    """fd_vggish, fd_openl3, kl_passt, clap_score and fad_clap of one set (`normalise`: it holds generated clips)."""
    results: metrics.Results = {}
    rows: list[Rows] = []
    name, n = clip_set.name, len(clip_set.clips)
    level, level_sentence = audiocraft_level(cfg, normalise)

    def own_audio(rate: int) -> list[np.ndarray]:
        return levelled_then_resampled(clip_set, rate, level) if level else clip_set.audio_at(rate)

    def family(model_name: str) -> dict[str, Any]:
        return {
            "family": AUDIOCRAFT_FAMILY if model_name != "openl3" else OPENL3_NOTE,
            "level_normalisation": level_sentence + AUDIOCRAFT_NOTES.get(model_name, ""),
        }

    for model_name in ("vggish", "openl3"):
        model = _usable(loaded, model_name, results)
        if model is not None:
            rate = model.sample_rate
            reference_frames = cache.get(
                f"{model_name}/frames", lambda m=model: [m.embed(a) for a in reference.audio_at(m.sample_rate)]
            )
            metric = LOADED_MODELS[AUDIOCRAFT][model_name][1][0]
            entry, details = metrics.embedding_frechet(model, own_audio(rate), reference_frames, boot, name, metric)
            results[metric] = (entry, {**details, **family(model_name)})

    model = _usable(loaded, "passt", results)
    if model is not None:
        rate = model.sample_rate
        reference_probs = cache.get(
            "passt/probabilities", lambda: [model.probabilities(a) for a in reference.audio_at(rate)]
        )
        own = own_audio(rate)
        pairs = [(reference_probs[r], model.probabilities(own[i])) for i, r in paired]
        entry, values = metrics.paired_divergence_metric(pairs, kl_divergence, boot, name, "kl_passt")
        details = {**model.card(), "resampler": RESAMPLER, "pairing": "by caption id", "eps": KL_EPS}
        results["kl_passt"] = (entry, {**details, "divergence": "KL(reference || generated)", **family("passt")})
        rows.append(spread_rows([{"kl_passt": v} for v in values], paired, n))

    model = _usable(loaded, "clap", results)
    if model is not None:
        rate = model.sample_rate
        reference_embeddings = cache.get("clap/audio", lambda: [model.embed_audio(a) for a in reference.audio_at(rate)])
        captions = [c.caption for c in clip_set.clips]
        clap_results, scores = metrics.clap_metrics(model, own_audio(rate), captions, reference_embeddings, boot, name)
        results.update({m: (entry, {**details, **family("clap")}) for m, (entry, details) in clap_results.items()})
        rows.append([{"clap_cosine": s} for s in scores])
    return results, rows


# ----------------------------------------------------------------------------------------------- stable_audio


def sam_metrics(
    clip_set: ClipSet,
    reference: ClipSet,
    paired: list[tuple[int, int]],
    loaded: dict[str, Any],
    cfg: sam.SamConfig,
    boot: metrics.Bootstrap,
    cache: ReferenceCache,
) -> tuple[metrics.Results, list[Rows]]:
    """fd_openl3_sam, kl_passt_sam and clap_score_sam of one set (every clip peak-normalised to -1 dBFS)."""
    sam.check_channels(cfg.channels)
    results: metrics.Results = {}
    rows: list[Rows] = []
    name, n = clip_set.name, len(clip_set.clips)

    model = _usable(loaded, "openl3_sam", results)
    if model is not None:
        rate = model.sample_rate

        def reference_frames() -> list[np.ndarray]:
            return [model.embed(a) for a in levelled_then_resampled(reference, rate, peak_normalise)]

        own = levelled_then_resampled(clip_set, rate, peak_normalise)
        # each mono clip fed as `channels` identical channels: FD of [e, e] = channels x FD of e (sam.channel_frames)
        entry, details = metrics.embedding_frechet(
            model, own, cache.get("openl3_sam/frames", reference_frames), boot, name, "fd_openl3_sam", cfg.channels
        )
        card = sam.fd_card(cfg.channels, rate, details.get("dim"))
        results["fd_openl3_sam"] = (entry, {**details, "network": details.get("implementation"), **card})

    model = _usable(loaded, "passt_10s", results)
    if model is not None:
        rate = model.sample_rate

        def reference_probs() -> list[np.ndarray]:
            audio = resampled_then_levelled(reference, rate, peak_normalise)
            return [sam.passt_probabilities(model, a) for a in audio]

        probs = cache.get("passt_10s/probabilities", reference_probs)
        own = resampled_then_levelled(clip_set, rate, peak_normalise)
        pairs = [(probs[r], sam.passt_probabilities(model, own[i])) for i, r in paired]
        entry, values = metrics.paired_divergence_metric(pairs, sam.kl_generated_reference, boot, name, "kl_passt_sam")
        details = {**model.card(), "resampler": RESAMPLER}
        results["kl_passt_sam"] = (entry, {**details, "network": details.get("implementation"), **sam.kl_card(rate)})
        rows.append(spread_rows([{"kl_passt_sam": v} for v in values], paired, n))

    clap_results, clap_rows = sam_clap(clip_set, loaded, boot)
    results.update(clap_results)
    rows += clap_rows
    return results, rows


def sam_clap(clip_set: ClipSet, loaded: dict[str, Any], boot: metrics.Bootstrap) -> tuple[metrics.Results, list[Rows]]:
    """clap_score_sam of a set (the reference's is the upper bound)."""
    results: metrics.Results = {}
    model = _usable(loaded, "clap_fusion", results)
    if model is None:
        return results, []
    rate = model.sample_rate
    own = resampled_then_levelled(clip_set, rate, peak_normalise)
    captions = [c.caption for c in clip_set.clips]
    entry, scores = metrics.clap_score_metric(model, own, captions, boot, clip_set.name, "clap_score_sam")
    details = {**model.card(), "resampler": RESAMPLER}
    results["clap_score_sam"] = (entry, {**details, "network": details.get("implementation"), **sam.clap_card(rate)})
    return results, [[{"clap_cosine_sam": s} for s in scores]]


def reference_metrics(
    reference: ClipSet, loaded: dict[str, Any], families: tuple[str, ...], boot: metrics.Bootstrap
) -> tuple[metrics.Results, list[Rows]]:
    """The reference's own CLAP scores (the upper bound a generated set can reach), in each selected family."""
    results: metrics.Results = {}
    rows: list[Rows] = []
    if AUDIOCRAFT in families:
        model = _usable(loaded, "clap", results)
        results.pop("fad_clap", None)  # the reference has no FAD against itself
        if model is not None:
            audio = reference.audio_at(model.sample_rate)
            clap_results, scores = metrics.clap_metrics(
                model, audio, [c.caption for c in reference.clips], None, boot, reference.name
            )
            as_read = audiocraft_level(AudiocraftConfig(), normalise=False)[1]
            family = {"family": AUDIOCRAFT_FAMILY, "level_normalisation": as_read}
            results.update({m: (entry, {**details, **family}) for m, (entry, details) in clap_results.items()})
            rows.append([{"clap_cosine": s} for s in scores])
    else:
        results.update({m: e for m, e in not_selected(families).items() if m == "clap_score"})
    if STABLE_AUDIO in families:
        clap_results, clap_rows = sam_clap(reference, loaded, boot)
        results.update(clap_results)
        rows += clap_rows
    else:
        results.update({m: e for m, e in not_selected(families).items() if m == "clap_score_sam"})
    return results, rows

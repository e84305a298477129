"""The stable-audio-metrics family: fd_openl3_sam, kl_passt_sam, clap_score_sam, computed as stable-audio-metrics does.

stable-audio-metrics (Stability-AI/stable-audio-metrics, `src/openl3_fd.py`, `src/passt_kld.py`, `src/clap_score.py`,
run as in `examples/musiccaps_nosinging.py`) is the family the paper's FD / KL / CLAP columns match (EVALUATION.md).
Its conventions, each different from the audiocraft family's numbers of the same name:

    fd_openl3_sam   OpenL3 mel256 / music / 512-d, 1 s windows every 0.5 s, input at 44.1 kHz (openl3 resamples
                    it to 48 kHz itself), each clip peak-normalised to -1 dBFS at its file's rate first; with
                    `channels` 2 (the MusicCaps example) a mono clip is "faked" to stereo: the same embedding as L
                    and R, concatenated to 1024-d. That alone makes the FD exactly twice the mono FD (means and
                    covariances are duplicated blocks), so an FD is comparable only with FDs of the same `channels`.
    kl_passt_sam    PaSST with the 10 s model on 32 kHz mono, peak-normalised to -1 dBFS; logits of 10 s windows
                    every 5 s (5 s overlap) averaged, then one softmax; KL(generated || reference), computed by
                    stable-audio-metrics as F.kl_div(log(p_ref + 1e-6), p_gen, reduction='sum') (F.kl_div(x, y)
                    is KL(y || x)), paired by caption id and averaged over pairs.
    clap_score_sam  LAION-CLAP 630k-audioset-fusion-best.pt (fusion, HTSAT-tiny), 48 kHz mono peak-normalised to
                    -1 dBFS, int16 round trip; mean cosine between each clip's audio and its caption's text.

PaSST windows (`passt_windows`, as `return_probabilities`): starts 0, 5, 10 ... s while the start is before the
clip's duration minus 5 s (always at least the window at 0); so a 25 s clip gives windows at 0, 5, 10 and 15 s and
its last 10 s are covered by the window at 15 s. A window shorter than 10 s (the tail of a clip whose length is not
5 s + a multiple of 5 s, or a clip under 10 s) is zero-padded to 10 s when it holds more than 1.5 s of audio, and
fed as it is otherwise (stable-audio-metrics' comment says "discard", its code feeds it unpadded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ssmttm.errors import UserFacingError
from ssmttm.evaluate.embeddings import KL_EPS
from ssmttm.evaluate.levels import SAM_PEAK_DBFS

FAMILY = "stable_audio"
SOURCE = (
    "stable-audio-metrics (github.com/Stability-AI/stable-audio-metrics @ fd55536: src/openl3_fd.py, "
    "src/passt_kld.py, src/clap_score.py, examples/musiccaps_nosinging.py), re-implemented in ssmttm.evaluate.sam"
)
OPENL3_RATE = 44100  # the MusicCaps example's samplingrate
OPENL3_WINDOW_S, OPENL3_HOP_S = 1.0, 0.5
PASST_RATE = 32000
PASST_WINDOW_S, PASST_OVERLAP_S = 10.0, 5.0
PASST_PAD_FRACTION = 0.15  # a short window is zero-padded only when longer than this fraction of 10 s
CLAP_RATE = 48000
CLAP_CHECKPOINT = "630k-audioset-fusion-best.pt"


@dataclass
class SamConfig:
    channels: int = 2  # 2: mono clips duplicated to L and R (the MusicCaps example); 1: mono embeddings


class WindowLogits(Protocol):
    sample_rate: int

    def logits(self, window: np.ndarray) -> np.ndarray:
        """(N,) mono at sample_rate -> (n_classes,) logits, before any softmax."""

    def card(self) -> dict[str, Any]: ...


# ----------------------------------------------------------------------------------------------- FD_openl3


def check_channels(channels: int) -> None:
    if channels not in (1, 2):
        raise UserFacingError(f"evaluate.sam.channels must be 1 or 2 (stable-audio-metrics' choices), not {channels}")


def channel_frames(frames: np.ndarray, channels: int) -> np.ndarray:
    """(windows, d) embeddings of a mono clip -> (windows, channels * d): the mono clip fed as `channels` identical
    channels, whose embeddings are concatenated L, R (openl3 is deterministic, so embedding each copy gives the same
    rows as repeating the one embedding; stable-audio-metrics' unbatched path does exactly this).

    The stage does not build these: the FD of such repeated blocks is exactly `channels` times the FD of `frames`
    (|dmu|^2 and both traces repeat; S' = J (x) S with J the all-ones matrix, whose eigenvalues are `channels` and 0,
    so tr sqrt(S1' S2') = channels tr sqrt(S1 S2)), and per-clip (2d, 2d) moments would take 4x the memory. Tests
    check the stage's number against the FD of these concatenated frames."""
    check_channels(channels)
    return np.concatenate([frames] * channels, axis=1) if channels > 1 else frames


# ----------------------------------------------------------------------------------------------- KL_passt


def passt_window_starts(n_samples: int, sample_rate: int) -> list[int]:
    """Start samples of the analysis windows: `range(0, max(step, n - step), step)` with step = 5 s."""
    step = int((PASST_WINDOW_S - PASST_OVERLAP_S) * sample_rate)
    return list(range(0, max(step, n_samples - step), step))


def passt_windows(audio: np.ndarray, sample_rate: int) -> list[np.ndarray]:
    """(N,) -> the 10 s windows stable-audio-metrics feeds PaSST, each (10 s,) or (shorter,) when not padded."""
    length = int(PASST_WINDOW_S * sample_rate)
    x = np.asarray(audio, np.float64)
    windows = []
    for start in passt_window_starts(x.shape[0], sample_rate):
        window = x[start : start + length]
        if window.shape[0] < length and window.shape[0] > PASST_PAD_FRACTION * length:
            window = np.pad(window, (0, length - window.shape[0]))
        windows.append(window)
    return windows


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


def passt_probabilities(model: WindowLogits, audio: np.ndarray) -> np.ndarray:
    """(N,) peak-normalised audio at the model's rate -> (n_classes,): softmax of the mean window logits."""
    if np.asarray(audio).shape[0] == 0:
        raise UserFacingError("an empty clip has no PaSST probabilities")
    logits = np.stack([np.asarray(model.logits(w), np.float64) for w in passt_windows(audio, model.sample_rate)])
    return softmax(logits.mean(axis=0))  # (n_classes,)


def kl_generated_reference(reference: np.ndarray, generated: np.ndarray, eps: float = KL_EPS) -> float:
    """KL(generated || reference) = sum p_gen (log p_gen - log(p_ref + eps)), with 0 log 0 = 0: what
    F.kl_div((ref + eps).log(), gen, reduction='sum') returns. Note the direction: the audiocraft family's
    `kl_divergence` is KL(reference || generated) with eps on the generated side."""
    p_ref, p_gen = np.asarray(reference, np.float64), np.asarray(generated, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p_gen > 0, p_gen * (np.log(np.where(p_gen > 0, p_gen, 1.0)) - np.log(p_ref + eps)), 0.0)
    return float(terms.sum())


# ----------------------------------------------------------------------------------------------- cards

LEVEL_AT_FILE_RATE = (
    f"each clip (reference included) peak-normalised to {SAM_PEAK_DBFS:g} dBFS at its file's rate "
    "(pyloudnorm.normalize.peak semantics), then resampled; digital silence left as is"
)


def level_after_loading(rate: int) -> str:
    return (
        f"each clip (reference included) resampled to {rate} Hz, then peak-normalised to {SAM_PEAK_DBFS:g} dBFS "
        "(pyloudnorm.normalize.peak semantics); digital silence left as is"
    )


def fd_card(channels: int, rate: int, dim: int | None) -> dict[str, Any]:
    return {
        "family": f"{FAMILY} (stable-audio-metrics compatible)",
        "implementation": f"{SOURCE}: openl3_fd, unbatched path",
        "computed_as": f"{channels} x the Fréchet distance of the {dim}-d mono embeddings, which equals the distance "
        f"of the {channels}-channel concatenated embeddings exactly (ssmttm.evaluate.sam.channel_frames)",
        "sample_rate": rate,
        "sample_rate_note": "input at 44.1 kHz (soxr HQ), resampled to 48 kHz inside openl3 (resampy)",
        "mono": channels == 1,
        "channels": channels,
        "channels_note": "clips are read as mono (mean of the file's channels); with channels 2 each mono clip is "
        "fed as two identical channels and the L and R embeddings are concatenated: the channel setting alone "
        "moves FD by 2x (a duplicated mono clip gives exactly twice the mono FD), so compare only FDs computed "
        "with the same channels. stable-audio-metrics' batched path embeds a stereo reference's real L and R; "
        "here every file is downmixed first",
        "embedding_dim": None if dim is None else dim * channels,
        "level_normalisation": LEVEL_AT_FILE_RATE,
        "window_s": OPENL3_WINDOW_S,
        "hop_s": OPENL3_HOP_S,
        "reference_statistics": "mean and n-1 covariance of the reference clips' windows, as np.cov",
        "not_comparable_with": "fd_openl3 (the audiocraft family: 48 kHz mono, loudness-normalised generated clips)",
    }


def kl_card(rate: int) -> dict[str, Any]:
    return {
        "family": f"{FAMILY} (stable-audio-metrics compatible)",
        "implementation": f"{SOURCE}: passt_kld with collect='mean'",
        "model_note": "the 10 s PaSST (passt_s_swa_p16_128_ap476, hear21passt's get_basic_model)",
        "sample_rate": rate,
        "mono": True,
        "level_normalisation": level_after_loading(rate),
        "window_s": PASST_WINDOW_S,
        "hop_s": PASST_WINDOW_S - PASST_OVERLAP_S,
        "windows": "10 s windows every 5 s (5 s overlap), starting at 0, 5, 10 ... s while the start is before the "
        "duration minus 5 s (a 25 s clip: 0, 5, 10, 15 s); a window shorter than 10 s (the tail) is zero-padded "
        "to 10 s when it holds more than 1.5 s, fed unpadded otherwise",
        "layer": "527 AudioSet logits averaged over the windows, then one softmax",
        "divergence": f"KL(generated || reference) = sum p_gen (log p_gen - log(p_ref + {KL_EPS:g})), as "
        "F.kl_div(log(p_ref + 1e-6), p_gen, reduction='sum')",
        "pairing": "each clip with the reference clip of its caption id; mean over pairs",
        "eps": KL_EPS,
        "not_comparable_with": "kl_passt (audiocraft: 20 s PaSST, mean of per-segment softmaxes, "
        "KL(reference || generated))",
    }


def clap_card(rate: int) -> dict[str, Any]:
    return {
        "family": f"{FAMILY} (stable-audio-metrics compatible)",
        "implementation": f"{SOURCE}: clap_score with clap_model='{CLAP_CHECKPOINT}'",
        "checkpoint_note": f"{CLAP_CHECKPOINT}: LAION-CLAP HTSAT-tiny with fusion (evaluate.models.clap_fusion)",
        "sample_rate": rate,
        "mono": True,
        "level_normalisation": level_after_loading(rate) + "; then the int16 round trip",
        "statistic": "mean cosine(audio, caption text)",
        "not_comparable_with": "clap_score (audiocraft: music_audioset_epoch_15_esc_90.14.pt, HTSAT-base, "
        "no fusion, loudness-normalised generated clips)",
    }

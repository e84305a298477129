"""The evaluate stage end to end on synthetic clips, with tiny random stand-ins for the embedding networks.

The stand-ins exercise the embedding plumbing only (framing, pairing, intervals, cards); they are passed to
`evaluate(models=...)` directly, which params cannot do.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from ssmttm.artifacts import stable_int
from ssmttm.cli import main
from ssmttm.errors import UserFacingError
from ssmttm.evaluate import cards
from ssmttm.evaluate.families import AudiocraftConfig
from ssmttm.evaluate.sam import SamConfig
from ssmttm.evaluate.stage import EvaluateConfig, evaluate
from tests.evaluate._fixtures import CAPTIONS, caption_text, music, write_folder

SECONDS = 3.0
STAND_IN_CARD = {"implementation": "test stand-in (random weights)", "model": "none", "sample_rate": 8000}


def _log_spectrum(audio: np.ndarray) -> np.ndarray:
    """(windows, 64) log magnitude of 0.5 s windows every 0.25 s, pooled into 64 bands."""
    frames = np.lib.stride_tricks.sliding_window_view(np.asarray(audio, np.float64), 4000)[::2000]
    magnitude = np.abs(np.fft.rfft(frames, axis=1))[:, :1984].reshape(len(frames), 64, 31).mean(axis=2)
    return np.log(magnitude + 1e-6)


class TinyFrames:
    sample_rate = 8000

    def __init__(self, seed: int) -> None:
        self.weights = np.random.default_rng(seed).standard_normal((64, 6)) / 8

    def embed(self, audio: np.ndarray) -> np.ndarray:
        return _log_spectrum(audio) @ self.weights

    def card(self) -> dict:
        return STAND_IN_CARD


class TinyTagger:
    sample_rate = 8000

    def __init__(self) -> None:
        self.weights = np.random.default_rng(5).standard_normal((64, 5)) / 8

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        logits = _log_spectrum(audio).mean(axis=0) @ self.weights
        return np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()

    def card(self) -> dict:
        return STAND_IN_CARD


class TinyClap:
    sample_rate = 8000

    def __init__(self) -> None:
        self.weights = np.random.default_rng(6).standard_normal((64, 8)) / 8

    def embed_audio(self, audio: np.ndarray) -> np.ndarray:
        return _log_spectrum(audio).mean(axis=0) @ self.weights

    def embed_text(self, captions: list[str]) -> np.ndarray:
        return np.stack(
            [sum(np.random.default_rng(stable_int(w)).standard_normal(8) for w in c.split()) for c in captions]
        )

    def card(self) -> dict:
        return STAND_IN_CARD


class RecordingFrames(TinyFrames):
    """OpenL3 stand-in of the stable-audio-metrics family: at the files' rate (so no resampling), recording the
    peak of every clip it is handed."""

    sample_rate = 16000

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.peaks: list[float] = []

    def embed(self, audio: np.ndarray) -> np.ndarray:
        self.peaks.append(float(np.max(np.abs(audio))))
        return super().embed(audio)

    def card(self) -> dict:
        return {**STAND_IN_CARD, "weights": "openl3_audio_mel256_music.h5 (stand-in)"}


class TinyLogits:
    """10 s PaSST stand-in: logits of one analysis window, recording each window's length and peak."""

    sample_rate = 8000

    def __init__(self) -> None:
        self.weights = np.random.default_rng(7).standard_normal((64, 5)) / 8
        self.windows: list[tuple[int, float]] = []

    def logits(self, window: np.ndarray) -> np.ndarray:
        self.windows.append((len(window), float(np.max(np.abs(window)))))
        return _log_spectrum(window).mean(axis=0) @ self.weights

    def card(self) -> dict:
        return {**STAND_IN_CARD, "weights": "passt-s-f128-p16-s10-ap.476-swa.pt (stand-in)"}


class RecordingClap(TinyClap):
    def __init__(self) -> None:
        super().__init__()
        self.peaks: list[float] = []

    def embed_audio(self, audio: np.ndarray) -> np.ndarray:
        self.peaks.append(float(np.max(np.abs(audio))))
        return super().embed_audio(audio)

    def card(self) -> dict:
        return {**STAND_IN_CARD, "weights": "630k-audioset-fusion-best.pt (stand-in)"}


def stand_ins() -> dict:
    return {
        "vggish": TinyFrames(1),
        "openl3": TinyFrames(2),
        "passt": TinyTagger(),
        "clap": TinyClap(),
        "openl3_sam": RecordingFrames(2),
        "passt_10s": TinyLogits(),
        "clap_fusion": RecordingClap(),
    }


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """reference/{original,codec} and a run with two variants at one step, laid out as `ssmttm generate` does."""
    root = tmp_path_factory.mktemp("evaluate")
    rng = np.random.default_rng(0)
    originals, codec, two_stage, small = [], [], [], []
    for k, (caption_id, bpm, tonic, mode) in enumerate(CAPTIONS):
        row = {"caption_id": caption_id, "caption": caption_text(bpm, tonic, mode)}
        audio = music(bpm, tonic, mode, SECONDS)
        originals.append(({**row, "variant": "original"}, audio))
        codec.append(({**row, "variant": "codec"}, audio + 0.01 * rng.standard_normal(audio.size).astype(np.float32)))
        _, other_bpm, other_tonic, other_mode = CAPTIONS[(k + 5) % len(CAPTIONS)]  # plays another caption's music
        generated = music(other_bpm, other_tonic, other_mode, SECONDS + 0.5)  # longer than its reference
        two_stage.append(({**row, "variant": "two_stage", "step": 10, "seed": k}, generated))
        if k < 4:
            small.append(({**row, "variant": "codebook1_only", "step": 10, "seed": k}, generated * 0.5))
    two_stage.append(({"caption_id": "c99", "caption": "x", "variant": "two_stage", "step": 10}, None))
    write_folder(root / "reference/original", originals)
    write_folder(root / "reference/codec", codec)
    write_folder(root / "runs/prefix_simba/step-0000010/two_stage", two_stage)
    write_folder(root / "runs/prefix_simba/step-0000010/codebook1_only", small)
    return {"root": root, "reference": root / "reference", "run": root / "runs/prefix_simba"}


def _cfg(**overrides) -> EvaluateConfig:
    return EvaluateConfig(bootstrap_resamples=50, **overrides)


@pytest.fixture(scope="module")
def evaluated(folders) -> dict:
    out, models = folders["root"] / "out", stand_ins()
    result = evaluate({"prefix_simba": folders["run"]}, folders["reference"], _cfg(), out, 7, models=models)
    return {"result": result, "out": out, "models": models}


@pytest.fixture(scope="module")
def evaluated_plain(folders) -> dict:
    """The same sets with the audiocraft family's loudness normalisation off and mono OpenL3 for the SAM FD."""
    out = folders["root"] / "out_plain"
    cfg = _cfg(audiocraft=AudiocraftConfig(loudness_target_lufs=None), sam=SamConfig(channels=1))
    result = evaluate({"prefix_simba": folders["run"]}, folders["reference"], cfg, out, 7, models=stand_ins())
    return {"result": result, "out": out}


TWO_STAGE, SMALL, CODEC = (
    "prefix_simba/step-0000010/two_stage",
    "prefix_simba/step-0000010/codebook1_only",
    "reference/codec",
)


def _all_entries(result: dict):
    yield "reference", result["reference"]["metrics"]
    for name, entry in result["sets"].items():
        yield name, entry["metrics"]


def test_sets_roles_and_counts(evaluated):
    result = evaluated["result"]
    assert set(result["sets"]) == {TWO_STAGE, SMALL, CODEC}
    assert result["sets"][CODEC]["role"] == "reconstruction" and result["sets"][TWO_STAGE]["role"] == "generated"
    two_stage = result["sets"][TWO_STAGE]
    assert (two_stage["n_clips"], two_stage["n_failed"], two_stage["n_paired"], two_stage["step"]) == (12, 1, 12, 10)
    assert result["reference"]["n_clips"] == 12

    def no_nan(constant: str):
        raise AssertionError(f"{constant} in metrics.json")

    assert json.loads((evaluated["out"] / "metrics.json").read_text(), parse_constant=no_nan) == result
    assert (evaluated["out"] / "provenance.json").is_file()


def test_every_number_has_an_interval_a_status_and_a_card(evaluated):
    result, out = evaluated["result"], evaluated["out"]
    for name, entries in _all_entries(result):
        card = json.loads((out / f"cards/{cards.slug(name)}.json").read_text())
        assert (out / f"cards/{cards.slug(name)}.md").is_file()
        assert set(card) == {"set", "reference", "common", "metrics"}
        assert card["common"]["bootstrap"]["resamples"] == 50
        for metric, entry in entries.items():
            assert card["metrics"][metric]["result"] == entry
            if entry["status"] == cards.NOT_COMPUTED:
                assert entry["reason"]
            else:
                assert entry["status"] in (cards.OK, cards.UNRELIABLE) and entry["n"] >= 1
                assert entry["ci"] is None or entry["ci"][0] <= entry["ci"][1]
    assert {"fd_mel", "fd_mfcc", "fd_chroma", "tempo_acc1", "tempo_acc1_chance", "key_score", "key_score_chance",
            "repetition", "diversity", "fd_vggish", "fd_openl3", "kl_passt", "clap_score", "fad_clap", "loudness_lufs",
            "silent_clip_fraction", "fd_openl3_sam", "kl_passt_sam", "clap_score_sam",
            } <= set(result["sets"][TWO_STAGE]["metrics"])  # fmt: skip
    assert {"clap_score", "clap_score_sam"} <= set(result["reference"]["metrics"])
    assert {"dyncorr", "log_mel_l1_db", "mel_distance"} <= set(result["sets"][CODEC]["metrics"])
    fd_card = json.loads((out / f"cards/{cards.slug(TWO_STAGE)}.json").read_text())["metrics"]["fd_mel"]
    for key in ("covariance", "frechet_method", "n_windows", "dim", "sample_rate", "bootstrap_bias"):
        assert key in fd_card
    assert fd_card["dim"] == 64 and fd_card["n_clips"] == 12


def test_small_sets_are_flagged_not_shown_bare(evaluated):
    result, out = evaluated["result"], evaluated["out"]
    small = result["sets"][SMALL]["metrics"]
    computed = {m: e for m, e in small.items() if e["status"] != cards.NOT_COMPUTED}
    assert computed and all(e["status"] == cards.UNRELIABLE and "N = 4" in e["warning"] for e in computed.values())
    assert "UNRELIABLE" in (out / f"cards/{cards.slug(SMALL)}.md").read_text()
    # 12 clips and 6-d stand-in embeddings: fine; FAD-CLAP has one 8-d window per clip: 12 > 8, also fine
    assert result["sets"][TWO_STAGE]["metrics"]["fd_vggish"]["status"] == cards.OK


def test_adherence_ceiling_chance_and_a_mismatched_set(evaluated):
    reference = evaluated["result"]["reference"]["metrics"]
    generated = evaluated["result"]["sets"][TWO_STAGE]["metrics"]
    assert reference["tempo_acc1"]["value"] >= 0.75 and reference["key_score"]["value"] >= 0.75
    assert reference["tempo_acc1_chance"]["value"] < 0.3 and reference["key_score_chance"]["value"] < 0.3
    # the generated clips play other captions' music: no better than chance
    assert generated["tempo_acc1"]["value"] <= 0.3 and generated["key_score"]["value"] <= 0.4
    rows = [json.loads(line) for line in (evaluated["out"] / f"per_clip/{cards.slug(TWO_STAGE)}.jsonl").open()]
    assert len(rows) == 12 and all(r["duration_s"] == SECONDS for r in rows)  # cropped to the reference
    assert all(r["tempo_target_bpm"] and r["key_target"] for r in rows)


def test_set_distances_ignore_pairing_and_paired_measures_do_not(evaluated, evaluated_plain):
    """The generated set plays exactly the reference's music, each clip under another caption: every set-level
    Fréchet distance is 0, while the caption-paired KLs and the adherence scores see the mismatch. The audiocraft
    family loudness-normalises generated clips only (and clamps them): its FDs are 0 only with that turned off."""
    sets, plain = evaluated["result"]["sets"], evaluated_plain["result"]["sets"]
    for metric in ("fd_mel", "fd_mfcc", "fd_chroma", "fd_openl3_sam"):
        assert sets[TWO_STAGE]["metrics"][metric]["value"] < 1e-3
        assert sets[CODEC]["metrics"][metric]["value"] > 0  # the codec floor adds noise
    for metric in ("fd_vggish", "fd_openl3"):
        assert plain[TWO_STAGE]["metrics"][metric]["value"] < 1e-3 and plain[CODEC]["metrics"][metric]["value"] > 0
        assert sets[TWO_STAGE]["metrics"][metric]["value"] > 1e-2  # generated clips normalised, the reference not
        assert sets[CODEC]["metrics"][metric] == plain[CODEC]["metrics"][metric]  # reconstructions as read
    for metric in ("fd_mel", "fd_mfcc", "fd_chroma", "tempo_acc1", "key_score", "loudness_lufs", "diversity"):
        assert sets[TWO_STAGE]["metrics"][metric] == plain[TWO_STAGE]["metrics"][metric]  # weight-free: unchanged
    assert sets[TWO_STAGE]["metrics"]["kl_passt"]["value"] > 0
    assert sets[TWO_STAGE]["metrics"]["kl_passt_sam"]["value"] > 0
    assert sets[CODEC]["metrics"]["dyncorr"]["value"] > 0.5
    assert sets[CODEC]["metrics"]["log_mel_l1_db"]["value"] > 0
    split_half = evaluated["result"]["reference"]["metrics"]["fd_mel_split_half"]
    assert split_half["status"] in (cards.OK, cards.UNRELIABLE) and split_half["n"] == 6


def _reference_and_generated(folders):
    from ssmttm.evaluate.clipsets import read_clip_sets

    (reference,) = read_clip_sets(folders["reference"] / "original")
    generated = next(s for s in read_clip_sets(folders["run"]) if s.variant == "two_stage")
    return {c.caption_id: c for c in reference.clips}, generated


def test_kl_pairs_each_clip_with_the_reference_of_its_caption(evaluated, folders):
    """Recompute the stand-in tagger's mean KL(reference || generated) by hand from the files: the generated clip
    cropped to its reference and loudness-normalised to -14 LUFS (audiocraft), the reference as read."""
    from ssmttm.audio import resample
    from ssmttm.evaluate.embeddings import kl_divergence
    from ssmttm.evaluate.levels import audiocraft_loudness

    tagger, (by_caption, generated) = TinyTagger(), _reference_and_generated(folders)

    def probs(clip, samples):
        return tagger.probabilities(resample(samples[None], clip.sample_rate, tagger.sample_rate)[0])

    values, unnormalised = [], []
    for clip in generated.clips:
        ref = by_caption[clip.caption_id]
        cropped = clip.audio[: ref.audio.size]
        levelled = audiocraft_loudness(cropped, clip.sample_rate, -14.0).astype(np.float32)
        values.append(kl_divergence(probs(ref, ref.audio), probs(clip, levelled)))
        unnormalised.append(kl_divergence(probs(ref, ref.audio), probs(clip, cropped)))
    entry = evaluated["result"]["sets"][TWO_STAGE]["metrics"]["kl_passt"]
    assert entry["value"] == pytest.approx(float(np.mean(values)), rel=1e-5) and entry["n"] == 12
    assert abs(entry["value"] - float(np.mean(unnormalised))) > 1e-3  # the normalisation happened before PaSST


def test_kl_passt_sam_is_generated_given_reference_on_peak_normalised_windows(evaluated, folders):
    """Recompute kl_passt_sam by hand: 32 kHz (here the stand-in's rate), each clip peak-normalised to -1 dBFS,
    10 s windows (a 3 s clip: one window zero-padded to 10 s), softmax of the mean logits, KL(generated ||
    reference) per caption pair; the other direction gives another number."""
    from ssmttm.audio import resample
    from ssmttm.evaluate import sam
    from ssmttm.evaluate.embeddings import kl_divergence
    from ssmttm.evaluate.levels import peak_normalise

    model, (by_caption, generated) = TinyLogits(), _reference_and_generated(folders)

    def probs(clip, samples):
        audio = peak_normalise(resample(samples[None], clip.sample_rate, model.sample_rate)[0])
        return sam.passt_probabilities(model, audio.astype(np.float32))

    forward, backward = [], []
    for clip in generated.clips:
        ref = by_caption[clip.caption_id]
        p_ref, p_gen = probs(ref, ref.audio), probs(clip, clip.audio[: ref.audio.size])
        forward.append(sam.kl_generated_reference(p_ref, p_gen))
        backward.append(kl_divergence(p_ref, p_gen))
    entry = evaluated["result"]["sets"][TWO_STAGE]["metrics"]["kl_passt_sam"]
    assert entry["value"] == pytest.approx(float(np.mean(forward)), rel=1e-5) and entry["n"] == 12
    # close distributions make the two directions agree to first order: they still differ far beyond rounding
    assert entry["value"] != pytest.approx(float(np.mean(backward)), rel=5e-3)
    # every window the stand-in saw was 10 s long and peaked at -1 dBFS (3 s clips: the window holds the peak)
    windows = evaluated["models"]["passt_10s"].windows
    assert {length for length, _ in windows} == {10 * model.sample_rate}
    assert all(peak == pytest.approx(10 ** (-1 / 20), rel=1e-6) for _, peak in windows)
    rows = [json.loads(line) for line in (evaluated["out"] / f"per_clip/{cards.slug(TWO_STAGE)}.jsonl").open()]
    assert [r["kl_passt_sam"] for r in rows] == pytest.approx(forward, rel=1e-6)


def test_sam_networks_see_every_clip_peak_normalised_and_the_reference_once(evaluated):
    """OpenL3 (at the files' rate here: no resampling after the gain) and CLAP are handed clips whose peak is
    exactly -1 dBFS, reference included; the reference is embedded once for all sets."""
    models = evaluated["models"]
    n_reference, n_sets = 12, 12 + 4 + 12  # reference; two_stage, codebook1_only, codec
    openl3, clap = models["openl3_sam"].peaks, models["clap_fusion"].peaks
    assert len(openl3) == n_reference + n_sets
    assert len(clap) == n_reference + n_sets  # the reference's clap_score_sam (the upper bound), then each set
    for peak in openl3 + clap:
        assert peak == pytest.approx(10 ** (-1 / 20), rel=1e-6)


def test_two_channels_double_the_openl3_fd_exactly(evaluated, evaluated_plain, folders):
    """channels 2 (each mono clip as two identical channels, L and R embeddings concatenated) gives exactly twice
    the channels-1 FD, and equals the FD computed by hand on the concatenated embeddings."""
    from ssmttm.evaluate import sam
    from ssmttm.evaluate.clipsets import read_clip_sets
    from ssmttm.evaluate.frechet import frechet_between
    from ssmttm.evaluate.levels import peak_normalise

    stereo, mono = evaluated["result"]["sets"], evaluated_plain["result"]["sets"]
    for name in (CODEC, SMALL):
        two, one = stereo[name]["metrics"]["fd_openl3_sam"], mono[name]["metrics"]["fd_openl3_sam"]
        assert one["value"] > 0 and two["value"] == pytest.approx(2 * one["value"], rel=1e-5)
        assert two["ci"] == pytest.approx([2 * c for c in one["ci"]], rel=1e-5)
    embedder = RecordingFrames(2)

    def frames(clip_set) -> np.ndarray:
        return np.concatenate([sam.channel_frames(embedder.embed(peak_normalise(c.audio)), 2) for c in clip_set.clips])

    (reference,) = read_clip_sets(folders["reference"] / "original")
    (codec,) = read_clip_sets(folders["reference"] / "codec")
    by_hand = frechet_between(frames(codec), frames(reference))
    assert stereo[CODEC]["metrics"]["fd_openl3_sam"]["value"] == pytest.approx(by_hand, rel=1e-5)


def test_sam_cards_name_family_checkpoint_rate_channels_and_normalisation(evaluated):
    card = json.loads((evaluated["out"] / f"cards/{cards.slug(TWO_STAGE)}.json").read_text())["metrics"]
    fd, kl, clap = card["fd_openl3_sam"], card["kl_passt_sam"], card["clap_score_sam"]
    for details in (fd, kl, clap):
        assert details["family"].startswith("stable_audio") and "stable-audio-metrics" in details["implementation"]
        assert "-1 dBFS" in details["level_normalisation"] and details["network"] == STAND_IN_CARD["implementation"]
    assert (fd["channels"], fd["sample_rate"], fd["embedding_dim"], fd["dim"]) == (2, 16000, 12, 6)
    assert "2x" in fd["channels_note"] and "openl3_audio_mel256_music.h5" in fd["weights"]
    assert "10 s windows every 5 s" in kl["windows"] and kl["divergence"].startswith("KL(generated || reference)")
    assert "passt-s-f128-p16-s10-ap.476-swa.pt" in kl["weights"] and kl["sample_rate"] == 8000
    assert all("630k-audioset-fusion-best.pt" in clap[key] for key in ("weights", "checkpoint_note"))
    audiocraft = card["kl_passt"]
    assert audiocraft["family"].startswith("audiocraft") and audiocraft["divergence"] == "KL(reference || generated)"
    assert "-14 LUFS" in audiocraft["level_normalisation"] and "clamped" in audiocraft["level_normalisation"]
    assert "VGGish's own clip peak normalisation" in card["fd_vggish"]["level_normalisation"]
    assert "fd_openl3_sam" in card["fd_openl3"]["family"]
    codec = json.loads((evaluated["out"] / f"cards/{cards.slug(CODEC)}.json").read_text())["metrics"]
    assert codec["kl_passt"]["level_normalisation"].startswith("none")  # reconstructions as read (audiocraft use_gt)
    assert "fd_openl3_sam" in (evaluated["out"] / f"cards/{cards.slug(TWO_STAGE)}.md").read_text()


def test_families_select_which_metrics_run(evaluated, folders, tmp_path):
    models = stand_ins()
    cfg = _cfg(families=("stable_audio",))
    result = evaluate({"prefix_simba": folders["run"]}, folders["reference"], cfg, tmp_path / "o", 7, models=models)
    metrics = result["sets"][TWO_STAGE]["metrics"]
    for metric in ("fd_vggish", "fd_openl3", "kl_passt", "clap_score", "fad_clap"):
        assert metrics[metric]["status"] == cards.NOT_COMPUTED and "evaluate.families" in metrics[metric]["reason"]
    assert result["reference"]["metrics"]["clap_score"]["status"] == cards.NOT_COMPUTED
    for metric in ("fd_openl3_sam", "kl_passt_sam", "clap_score_sam", "fd_mel", "key_score"):
        assert metrics[metric] == evaluated["result"]["sets"][TWO_STAGE]["metrics"][metric]  # unchanged by the other
    assert models["vggish"].weights is not None and result["families"] == ["stable_audio"]
    with pytest.raises(UserFacingError, match="evaluate.families: unknown"):
        evaluate({}, folders["reference"], _cfg(families=("fadtk",)), tmp_path / "x", 7, models={})
    with pytest.raises(UserFacingError, match="evaluate.sam.channels must be 1 or 2"):
        evaluate({}, folders["reference"], _cfg(sam=SamConfig(channels=6)), tmp_path / "y", 7, models={})


def test_rerun_gives_identical_bytes(evaluated, folders, tmp_path):
    evaluate({"prefix_simba": folders["run"]}, folders["reference"], _cfg(), tmp_path / "again", 7, models=stand_ins())
    assert (tmp_path / "again/metrics.json").read_bytes() == (evaluated["out"] / "metrics.json").read_bytes()
    for card in (evaluated["out"] / "cards").iterdir():
        assert (tmp_path / "again/cards" / card.name).read_bytes() == card.read_bytes()


def test_cli_without_weights_records_every_embedding_metric_as_not_computed(folders, repo_root, tmp_path):
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["evaluate"]["bootstrap_resamples"] = 20
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "results"
    argv = ["evaluate", "--params", str(tmp_path / "params.yaml"), "--reference", str(folders["reference"]),
            "--generated", f"mine={folders['run']}", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert set(result["sets"]) == {CODEC, "mine/step-0000010/two_stage", "mine/step-0000010/codebook1_only"}
    for metric in ("fd_vggish", "fd_openl3", "kl_passt", "clap_score", "fad_clap", "fd_openl3_sam", "kl_passt_sam",
                   "clap_score_sam"):  # fmt: skip
        entry = result["sets"]["mine/step-0000010/two_stage"]["metrics"][metric]
        assert entry["status"] == cards.NOT_COMPUTED and "weights_path is null" in entry["reason"]
    sam_reasons = {m: result["sets"]["mine/step-0000010/two_stage"]["metrics"][m]["reason"] for m in
                   ("fd_openl3_sam", "kl_passt_sam", "clap_score_sam")}  # fmt: skip
    assert "evaluate.models.openl3.weights_path" in sam_reasons["fd_openl3_sam"]
    assert "evaluate.models.passt_10s.weights_path" in sam_reasons["kl_passt_sam"]
    assert "evaluate.models.clap_fusion.weights_path" in sam_reasons["clap_score_sam"]
    assert result["reference"]["metrics"]["clap_score_sam"]["status"] == cards.NOT_COMPUTED
    assert result["bootstrap"]["resamples"] == 20


def test_reference_without_the_original_variant_is_an_error(folders, tmp_path):
    reference = tmp_path / "reference"
    shutil.copytree(folders["reference"] / "codec", reference / "codec")
    with pytest.raises(UserFacingError, match="no clips of variant 'original'"):
        evaluate({}, reference, _cfg(), tmp_path / "out", 7, models={})


def test_profiles_name_models_by_path_and_the_schema_guards_the_section(repo_root):
    from ssmttm.config import ParamsError, load_params, section_to_dataclass, validate_params
    from ssmttm.evaluate.embeddings import Unavailable, load_models

    demo = section_to_dataclass(EvaluateConfig, load_params(repo_root / "params.yaml")["evaluate"])
    assert all(getattr(demo.models, m).weights_path is None for m in ("vggish", "passt", "clap", "openl3"))
    paper_params = load_params(repo_root / "configs/paper.yaml")
    paper = section_to_dataclass(EvaluateConfig, paper_params["evaluate"])
    assert paper.models.clap.weights_path.endswith("music_audioset_epoch_15_esc_90.14.pt")
    assert paper.models.passt.pretrained_length_s == 20 and paper.bootstrap_resamples >= 1000
    if not Path(paper.models.openl3.weights_path).exists():  # the cluster fills these in; absent here
        assert "not found" in load_models(paper.models, seed=0)["openl3"].reason
    assert isinstance(load_models(demo.models, seed=0)["vggish"], Unavailable)
    for bad in ({"sha256": "xyz"}, {"weights_path": None, "other": 1}):
        broken = json.loads(json.dumps(paper_params))
        broken["evaluate"]["models"]["vggish"].update(bad)
        with pytest.raises(ParamsError, match="evaluate.models.vggish"):
            validate_params(broken)


def test_embedding_fd_cards_carry_the_package_cross_check(evaluated):
    card = json.loads((evaluated["out"] / f"cards/{cards.slug(TWO_STAGE)}.json").read_text())["metrics"]["fd_vggish"]
    check = card["package_cross_check"]
    assert check["value"] is None and "not usable" in check["implementation"] or check["value"] is not None
    assert (
        card["implementation"] == STAND_IN_CARD["implementation"] and card["n_windows"] == 12 * 11
    )  # 3 s at 8 kHz: 11 half-second windows


def test_family_params_reach_the_config_and_the_schema_guards_them(repo_root):
    from ssmttm.config import ParamsError, load_params, section_to_dataclass, validate_params

    params = load_params(repo_root / "params.yaml")
    params["evaluate"].update(families=["stable_audio"], sam={"channels": 1}, audiocraft={"loudness_target_lufs": None})
    params["evaluate"]["models"].update(
        passt_10s={"weights_path": None, "sha256": None, "pretrained_length_s": 10},
        clap_fusion={"weights_path": None, "sha256": None, "enable_fusion": True, "audio_model": "HTSAT-tiny"},
    )
    validate_params(params)
    cfg = section_to_dataclass(EvaluateConfig, params["evaluate"])
    assert cfg.families == ("stable_audio",) and cfg.sam.channels == 1 and cfg.audiocraft.loudness_target_lufs is None
    assert cfg.models.passt_10s.pretrained_length_s == 10 and cfg.models.clap_fusion.enable_fusion is True
    defaults = EvaluateConfig()
    assert defaults.families == ("audiocraft", "stable_audio") and defaults.sam.channels == 2
    assert defaults.audiocraft.loudness_target_lufs == -14.0
    for path, bad in (
        (("families",), ["audiocraft", "fadtk"]),
        (("sam", "channels"), 3),
        (("models", "passt_10s", "pretrained_length_s"), 20),
        (("models", "clap_fusion", "enable_fusion"), False),
        (("audiocraft", "loudness_target_lufs"), "loud"),
    ):
        broken = json.loads(json.dumps(params))
        section = broken["evaluate"]
        for key in path[:-1]:
            section = section[key]
        section[path[-1]] = bad
        with pytest.raises(ParamsError, match="evaluate." + ".".join(path[:1])):
            validate_params(broken)

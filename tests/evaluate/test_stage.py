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


def stand_ins() -> dict:
    return {"vggish": TinyFrames(1), "openl3": TinyFrames(2), "passt": TinyTagger(), "clap": TinyClap()}


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
    out = folders["root"] / "out"
    result = evaluate({"prefix_simba": folders["run"]}, folders["reference"], _cfg(), out, 7, models=stand_ins())
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
            "silent_clip_fraction"} <= set(result["sets"][TWO_STAGE]["metrics"])  # fmt: skip
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


def test_set_distances_ignore_pairing_and_paired_measures_do_not(evaluated):
    """The generated set plays exactly the reference's music, each clip under another caption: every set-level
    Fréchet distance is 0, while the caption-paired KL and the adherence scores see the mismatch."""
    sets = evaluated["result"]["sets"]
    for metric in ("fd_mel", "fd_mfcc", "fd_chroma", "fd_vggish", "fd_openl3"):
        assert sets[TWO_STAGE]["metrics"][metric]["value"] < 1e-3
        assert sets[CODEC]["metrics"][metric]["value"] > 0  # the codec floor adds noise
    assert sets[TWO_STAGE]["metrics"]["kl_passt"]["value"] > 0
    assert sets[CODEC]["metrics"]["dyncorr"]["value"] > 0.5
    assert sets[CODEC]["metrics"]["log_mel_l1_db"]["value"] > 0
    split_half = evaluated["result"]["reference"]["metrics"]["fd_mel_split_half"]
    assert split_half["status"] in (cards.OK, cards.UNRELIABLE) and split_half["n"] == 6


def test_kl_pairs_each_clip_with_the_reference_of_its_caption(evaluated, folders):
    """Recompute the stand-in tagger's mean KL(reference || generated) by hand from the files."""
    from ssmttm.audio import resample
    from ssmttm.evaluate.clipsets import read_clip_sets
    from ssmttm.evaluate.embeddings import kl_divergence

    tagger = TinyTagger()
    (reference,) = read_clip_sets(folders["reference"] / "original")
    by_caption = {c.caption_id: c for c in reference.clips}
    generated = next(s for s in read_clip_sets(folders["run"]) if s.variant == "two_stage")

    def probs(clip, samples):
        return tagger.probabilities(resample(samples[None], clip.sample_rate, tagger.sample_rate)[0])

    values = []
    for clip in generated.clips:
        ref = by_caption[clip.caption_id]
        values.append(kl_divergence(probs(ref, ref.audio), probs(clip, clip.audio[: ref.audio.size])))
    entry = evaluated["result"]["sets"][TWO_STAGE]["metrics"]["kl_passt"]
    assert entry["value"] == pytest.approx(float(np.mean(values)), rel=1e-5) and entry["n"] == 12


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
    for metric in ("fd_vggish", "fd_openl3", "kl_passt", "clap_score", "fad_clap"):
        entry = result["sets"]["mine/step-0000010/two_stage"]["metrics"][metric]
        assert entry["status"] == cards.NOT_COMPUTED and "weights_path is null" in entry["reason"]
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

"""The Fréchet core against the `frechet-audio-distance` package's own formula, on the same embeddings.

The package (the cluster extra `eval`, pinned 0.3.4) cannot be imported beside this environment: it pins numpy<2
on Python 3.11 and imports laion_clap, encodec and torchvision at import time. `make setup` therefore puts its files
alone under .venv/cross-check/ (scripts/setup_env.sh), and this test runs the package's
`FrechetAudioDistance.calculate_frechet_distance`, taken from its installed source without its model imports, on
the statistics of real frame features, beside ours. Where the package imports (the cluster environment), the evaluate
stage reaches the same formula by a plain import (`package_frechet_distance`) and records it in the metric card.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import linalg

from ssmttm.evaluate.features import FeatureConfig, clip_features
from ssmttm.evaluate.frechet import fit_gaussian, frechet_distance
from tests.evaluate._fixtures import music

PACKAGE_VERSION = "0.3.4"
PACKAGE_DIR = Path(sys.prefix) / "cross-check" / "frechet-audio-distance"
# the package calls scipy.linalg.sqrtm(..., disp=False), deprecated in SciPy 1.17: its warning, not ours
pytestmark = pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning")


def package_formula():
    """The package's calculate_frechet_distance, compiled from its own source file with only numpy and scipy."""
    dist_info = PACKAGE_DIR / f"frechet_audio_distance-{PACKAGE_VERSION}.dist-info"
    source = PACKAGE_DIR / "frechet_audio_distance" / "fad.py"
    assert dist_info.is_dir() and source.is_file(), (
        f"frechet-audio-distance {PACKAGE_VERSION} is not under {PACKAGE_DIR}: run `make setup` (scripts/setup_env.sh)"
    )
    module = ast.parse(source.read_text())
    cls = next(n for n in module.body if isinstance(n, ast.ClassDef) and n.name == "FrechetAudioDistance")
    method = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "calculate_frechet_distance")
    namespace = {"np": np, "linalg": linalg}
    exec(compile(ast.Module(body=[method], type_ignores=[]), str(source), "exec"), namespace)  # noqa: S102
    function = namespace["calculate_frechet_distance"]
    return lambda mu1, sigma1, mu2, sigma2: float(function(None, mu1, sigma1, mu2, sigma2))


def _frames(kind: str, clips: list[np.ndarray]) -> np.ndarray:
    cfg = FeatureConfig()
    return np.concatenate([getattr(clip_features(clip, cfg), kind) for clip in clips])


@pytest.fixture(scope="module")
def embeddings() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Frame features (log-mel 64-d, MFCC+deltas 40-d, chroma 12-d) of a 'generated' and a 'reference' set."""
    rng = np.random.default_rng(0)
    reference = [music(bpm, tonic, "major", 3.0) for bpm, tonic in ((90, "C"), (120, "G"), (100, "D"), (140, "A"))]
    generated = [clip + 0.02 * rng.standard_normal(clip.size) for clip in reference[:2]]
    generated += [music(bpm, tonic, "minor", 3.0) for bpm, tonic in ((80, "E"), (150, "F"))]
    return {kind: (_frames(kind, generated), _frames(kind, reference)) for kind in ("logmel", "mfcc", "chroma")}


@pytest.mark.parametrize("kind", ["logmel", "mfcc", "chroma"])
def test_the_package_formula_agrees_with_the_core_on_the_same_embeddings(embeddings, kind):
    generated, reference = (fit_gaussian(frames) for frames in embeddings[kind])
    ours = float(frechet_distance(generated.mean, generated.cov, reference.mean, reference.cov))
    theirs = package_formula()(generated.mean, generated.cov, reference.mean, reference.cov)
    assert ours > 0.1
    assert theirs == pytest.approx(ours, rel=1e-6), kind


def test_both_agree_on_a_closed_form_case():
    mean = np.array([1.0, -2.0, 0.5])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = float(mean @ mean + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    assert package_formula()(np.zeros(3), np.diag(a), mean, np.diag(b)) == pytest.approx(expected, rel=1e-9)
    assert float(frechet_distance(np.zeros(3), np.diag(a), mean, np.diag(b))) == pytest.approx(expected, rel=1e-12)

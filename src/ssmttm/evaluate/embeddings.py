"""Embedding metrics from named pretrained networks, loaded only from explicit local weight files.

    fd_vggish   VGGish (Google's framing: 16 kHz mono, 1 s windows every 0.5 s, 96 x 64 log-mel example per window,
                clip peak-normalised with at most +20 dB, fc2 embedding without ReLU, no PCA); weights: the torch
                port `vggish-10086976.pth` (harritaylor/torchvggish); the network is `VGGishNetwork` below
    fd_openl3   OpenL3 mel256 / music / 512-d (package `openl3`), 48 kHz mono, 0.5 s hop, with the audiocraft
                family's conventions (OpenL3 is not an audiocraft metric; the stable-audio-metrics one is fd_openl3_sam)
    kl_passt    PaSST AudioSet tagger (package `hear21passt`, 32 kHz): softmax over the 527 classes of each clip
                (mean over non-overlapping segments of `pretrained_length_s`, segments of 0.15 s or less dropped),
                KL(reference || generated) with eps 1e-6, paired by caption id, averaged over pairs (as audiocraft)
    clap_score  LAION-CLAP (package `laion_clap`, 48 kHz): mean cosine between each clip's audio embedding and its
    fad_clap    caption's text embedding; and the Fréchet distance between the sets' clip embeddings

Those five are the audiocraft family (generated clips loudness-normalised first, ssmttm.evaluate.levels). The
stable-audio-metrics family (ssmttm.evaluate.sam) uses `openl3` again at 44.1 kHz (`openl3_sam`), the 10 s PaSST
(`passt_10s`) and the fusion CLAP (`clap_fusion`): fd_openl3_sam, kl_passt_sam, clap_score_sam.

No standard metric network ships its weights on PyPI. Each model is named in params (`evaluate.models.<name>`) by a
local weights file and its expected sha256. When the path is null or the file is absent, or the model's package
is not installed, its metrics are `not computed` with that reason: nothing is ever computed from other weights. A
file whose sha256 differs from the expected one is an error (those are not the named weights). The plumbing is
tested with tiny random stand-ins that tests pass to the stage directly; params cannot reach them.

Model objects follow three small interfaces (`FrameEmbedder`, `ClassProbabilities`, `TextAudioEmbedder`); the
metric functions below take any object with that interface.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ssmttm.artifacts import sha256_file
from ssmttm.errors import UserFacingError
from ssmttm.evaluate.features import library_version

KL_EPS = 1e-6
SAM_OPENL3_RATE = 44100  # stable-audio-metrics' MusicCaps example: samplingrate 44100
PASST_MIN_SEGMENT_S = 0.15

# How to obtain each model: the package to install and the weights to download (on a machine with internet).
HOW_TO_ENABLE = {
    "vggish": "set evaluate.models.vggish.weights_path to vggish-10086976.pth from harritaylor/torchvggish release "
    "v0.1 (no package needed)",
    "passt": "pip install hear21passt (extra `eval`) and set evaluate.models.passt.weights_path to the PaSST "
    "checkpoint of pretrained_length_s from kkoutini/PaSST releases",
    "clap": "pip install laion-clap (extra `eval`; it needs roberta-base in the Hugging Face cache) and set "
    "evaluate.models.clap.weights_path to music_audioset_epoch_15_esc_90.14.pt (LAION-CLAP on Hugging Face)",
    "openl3": "pip install openl3 (needs tensorflow) and set evaluate.models.openl3.weights_path to the package's "
    "openl3_audio_mel256_music.h5",
    "passt_10s": "pip install hear21passt (extra `eval`) and set evaluate.models.passt_10s.weights_path to "
    "passt-s-f128-p16-s10-ap.476-swa.pt (the 10 s PaSST of hear21passt's get_basic_model, kkoutini/PaSST release "
    "v0.0.1-audioset)",
    "clap_fusion": "pip install laion-clap (extra `eval`; it needs roberta-base in the Hugging Face cache) and set "
    "evaluate.models.clap_fusion.weights_path to 630k-audioset-fusion-best.pt (lukewys/laion_clap on Hugging Face)",
}
# params entries under evaluate.models -> the package each needs, and the metrics it feeds
PACKAGES = {
    "vggish": "torch",
    "passt": "hear21passt",
    "clap": "laion_clap",
    "openl3": "openl3",
    "passt_10s": "hear21passt",
    "clap_fusion": "laion_clap",
}
METRICS_OF_MODEL = {
    "vggish": ("fd_vggish",),
    "openl3": ("fd_openl3", "fd_openl3_sam"),
    "passt": ("kl_passt",),
    "clap": ("clap_score", "fad_clap"),
    "passt_10s": ("kl_passt_sam",),
    "clap_fusion": ("clap_score_sam",),
}
AUDIOCRAFT, STABLE_AUDIO = "audiocraft", "stable_audio"
FAMILIES = (AUDIOCRAFT, STABLE_AUDIO)
# loaded models (keys of load_models' result) of each family -> (params entry, metrics)
LOADED_MODELS = {
    AUDIOCRAFT: {
        "vggish": ("vggish", ("fd_vggish",)),
        "openl3": ("openl3", ("fd_openl3",)),
        "passt": ("passt", ("kl_passt",)),
        "clap": ("clap", ("clap_score", "fad_clap")),
    },
    STABLE_AUDIO: {
        "openl3_sam": ("openl3", ("fd_openl3_sam",)),
        "passt_10s": ("passt_10s", ("kl_passt_sam",)),
        "clap_fusion": ("clap_fusion", ("clap_score_sam",)),
    },
}


@dataclass
class ModelWeights:
    weights_path: str | None = None  # local file; null = metric not computed
    sha256: str | None = None  # expected sha256 of the file; null = recorded, not checked


@dataclass
class PasstWeights(ModelWeights):
    pretrained_length_s: int = 20  # 10, 20 or 30: which PaSST (audiocraft uses 20, stable-audio-metrics 10)


@dataclass
class ClapWeights(ModelWeights):
    enable_fusion: bool = False  # true for 630k-audioset-fusion-best.pt (stable-audio-metrics)
    audio_model: str = "HTSAT-base"  # HTSAT-base for the music checkpoints, HTSAT-tiny for the 630k ones


@dataclass
class ModelsConfig:
    device: str = "cpu"
    vggish: ModelWeights = field(default_factory=ModelWeights)
    passt: PasstWeights = field(default_factory=PasstWeights)
    clap: ClapWeights = field(default_factory=ClapWeights)
    openl3: ModelWeights = field(default_factory=ModelWeights)  # both families (48 kHz and 44.1 kHz input)
    passt_10s: PasstWeights = field(default_factory=lambda: PasstWeights(pretrained_length_s=10))  # stable_audio
    clap_fusion: ClapWeights = field(  # stable_audio: 630k-audioset-fusion-best.pt
        default_factory=lambda: ClapWeights(enable_fusion=True, audio_model="HTSAT-tiny")
    )


class FrameEmbedder(Protocol):
    sample_rate: int

    def embed(self, audio: np.ndarray) -> np.ndarray:
        """(N,) mono at sample_rate -> (windows, d)."""

    def card(self) -> dict[str, Any]: ...


class ClassProbabilities(Protocol):
    sample_rate: int

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """(N,) mono at sample_rate -> (n_classes,) summing to 1."""

    def card(self) -> dict[str, Any]: ...


class TextAudioEmbedder(Protocol):
    sample_rate: int

    def embed_audio(self, audio: np.ndarray) -> np.ndarray:
        """(N,) mono at sample_rate -> (d,)."""

    def embed_text(self, captions: list[str]) -> np.ndarray:
        """captions (n) -> (n, d)."""

    def card(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Unavailable:
    """A model that could not be loaded, and why: its metrics are `not computed` with this reason."""

    reason: str


# ----------------------------------------------------------------------------------------------- loading


def checked_weights(name: str, spec: ModelWeights) -> tuple[Path, str] | Unavailable:
    """(path, sha256) of a configured weights file, or why there is none. A sha256 mismatch raises."""
    if spec.weights_path is None:
        return Unavailable(f"evaluate.models.{name}.weights_path is null; to enable: {HOW_TO_ENABLE[name]}")
    path = Path(spec.weights_path)
    if not path.is_file():
        return Unavailable(f"weights file {path} not found; to enable: {HOW_TO_ENABLE[name]}")
    digest = sha256_file(path)
    if spec.sha256 is not None and digest != spec.sha256.lower():
        raise UserFacingError(
            f"{path}: sha256 {digest} differs from evaluate.models.{name}.sha256 = {spec.sha256}; these are not "
            "the named weights: point weights_path at the right file (or correct the expected sha256)"
        )
    return path, digest


def load_models(cfg: ModelsConfig, seed: int, families: tuple[str, ...] = FAMILIES) -> dict[str, Any]:
    """Loaded model name -> model, or Unavailable(reason), for the models of `families` (LOADED_MODELS): vggish,
    openl3, passt, clap (audiocraft); openl3_sam, passt_10s, clap_fusion (stable_audio). `seed`: CLAP's crops."""
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        raise UserFacingError(f"evaluate.families: unknown {unknown}; allowed: {list(FAMILIES)}")

    def clap(path: Path, digest: str, spec: ClapWeights, device: str) -> Clap:
        return Clap(path, digest, spec, device, seed=seed)

    loaders = {
        "vggish": VGGish,
        "passt": Passt,
        "clap": clap,
        "openl3": OpenL3,
        "passt_10s": Passt,
        "clap_fusion": clap,
    }
    loaded_entries: dict[str, Any] = {}  # params entry -> model or Unavailable (openl3 serves both families)

    def entry(name: str) -> Any:
        if name not in loaded_entries:
            spec = getattr(cfg, name)
            weights = checked_weights(name, spec)
            if isinstance(weights, Unavailable):
                loaded_entries[name] = weights
            elif importlib.util.find_spec(PACKAGES[name]) is None:
                loaded_entries[name] = Unavailable(f"{PACKAGES[name]} not installed; to enable: {HOW_TO_ENABLE[name]}")
            else:
                path, digest = weights
                loaded_entries[name] = loaders[name](path, digest, spec, cfg.device)
        return loaded_entries[name]

    if cfg.passt_10s.pretrained_length_s != 10:
        raise UserFacingError("evaluate.models.passt_10s.pretrained_length_s must be 10 (stable-audio-metrics' PaSST)")
    models: dict[str, Any] = {}
    for family in FAMILIES:
        if family not in families:
            continue
        for loaded_name, (params_entry, _) in LOADED_MODELS[family].items():
            model = entry(params_entry)
            if loaded_name == "openl3_sam" and not isinstance(model, Unavailable):
                model = model.at_rate(SAM_OPENL3_RATE)
            models[loaded_name] = model
    return models


def _expected_sha(spec: ModelWeights) -> str:
    return "checked against params" if spec.sha256 else "not checked: no expected sha256 in params"


# ----------------------------------------------------------------------------------------------- VGGish

VGGISH_RATE = 16000
VGGISH_WINDOW_S = 1.0
VGGISH_HOP_S = 0.5
VGGISH_FRAMES = 96  # 10 ms log-mel frames per example (0.96 s)
VGGISH_BANDS = 64
VGGISH_MAX_GAIN = 10.0  # peak normalisation raises a clip by at most +20 dB


def vggish_mel_matrix(n_fft: int = 512, rate: int = VGGISH_RATE) -> np.ndarray:
    """(n_fft // 2 + 1, 64) triangular weights between 125 and 7500 Hz on the 1127 ln(1 + f/700) mel scale, the
    triangles built in mel units and the DC bin zeroed (VGGish's `mel_features` definition)."""

    def mel(hz: np.ndarray) -> np.ndarray:
        return 1127.0 * np.log1p(np.asarray(hz, np.float64) / 700.0)

    bins_mel = mel(np.linspace(0.0, rate / 2.0, n_fft // 2 + 1))[:, None]  # (F, 1)
    edges = np.linspace(mel(125.0), mel(7500.0), VGGISH_BANDS + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]  # (64,) each
    weights = np.maximum(0.0, np.minimum((bins_mel - lower) / (centre - lower), (upper - bins_mel) / (upper - centre)))
    weights[0] = 0.0
    return weights


def vggish_examples(audio: np.ndarray) -> np.ndarray:
    """(N,) at 16 kHz -> (windows, 96, 64) log-mel examples: peak-normalised clip, 1 s windows every 0.5 s (a
    shorter clip is one zero-padded window), 25 ms periodic-Hann frames every 10 ms, |rfft 512|, log(mel + 0.01)."""
    x = np.asarray(audio, np.float64)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > 0:
        x = x * min(1.0 / peak, VGGISH_MAX_GAIN)
    window, hop = int(VGGISH_WINDOW_S * VGGISH_RATE), int(VGGISH_HOP_S * VGGISH_RATE)
    if x.shape[0] < window:
        x = np.pad(x, (0, window - x.shape[0]))
    starts = range(0, x.shape[0] - window + 1, hop)
    frame, frame_hop = 400, 160
    taper = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(frame) / frame)  # periodic Hann
    mel = vggish_mel_matrix()
    examples = []
    for start in starts:
        chunk = x[start : start + window]
        frames = np.lib.stride_tricks.sliding_window_view(chunk, frame)[::frame_hop][:VGGISH_FRAMES]  # (96, 400)
        magnitude = np.abs(np.fft.rfft(frames * taper, n=512, axis=1))  # (96, 257)
        examples.append(np.log(magnitude @ mel + 0.01))  # (96, 64)
    return np.stack(examples)


def vggish_network() -> Any:
    """VGGish: four VGG conv blocks (64, 128, 256x2, 512x2 channels, 3x3, max-pool 2) and fc1 4096, fc2 4096,
    fc3 128 without the final ReLU; module indices match the torchvggish state dict (features.*, embeddings.*)."""
    import torch
    from torch import nn

    class VGGishNetwork(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            channels = 1
            for width in (64, "pool", 128, "pool", 256, 256, "pool", 512, 512, "pool"):
                if width == "pool":
                    layers.append(nn.MaxPool2d(2, 2))
                else:
                    layers += [nn.Conv2d(channels, int(width), 3, padding=1), nn.ReLU(inplace=True)]
                    channels = int(width)
            self.features = nn.Sequential(*layers)
            self.embeddings = nn.Sequential(
                nn.Linear(512 * 4 * 6, 4096), nn.ReLU(True), nn.Linear(4096, 4096), nn.ReLU(True), nn.Linear(4096, 128)
            )

        def forward(self, examples: torch.Tensor) -> torch.Tensor:
            """(B, 1, 96, 64) -> (B, 128)."""
            maps = self.features(examples)  # (B, 512, 6, 4)
            return self.embeddings(maps.permute(0, 2, 3, 1).reshape(maps.shape[0], -1))  # flattened as TF (NHWC)

    return VGGishNetwork()


class VGGish:
    sample_rate = VGGISH_RATE

    def __init__(self, path: Path, digest: str, spec: ModelWeights, device: str) -> None:
        import torch

        self.device = device
        self.network = vggish_network()
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        missing, unexpected = self.network.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise UserFacingError(
                f"{path}: not a torchvggish VGGish state dict (missing {missing[:4]}, unexpected {unexpected[:4]})"
            )
        self.network.eval().to(device)
        self._card = {
            "implementation": "ssmttm.evaluate.embeddings.VGGish (Google framing, torch network)",
            "model": "VGGish (torch port of the AudioSet VGGish)",
            "weights": str(path),
            "weights_sha256": digest,
            "weights_sha256_check": _expected_sha(spec),
            "layer": "fc3 (128-d) without ReLU, no PCA / quantisation",
            "sample_rate": VGGISH_RATE,
            "mono": True,
            "level_normalisation": "clip peak-normalised, gain at most +20 dB",
            "window_s": VGGISH_WINDOW_S,
            "hop_s": VGGISH_HOP_S,
            "frontend": "25 ms periodic Hann / 10 ms hop, |rfft 512|, 64 mel 125-7500 Hz, log(mel + 0.01)",
            "libraries": {"torch": library_version("torch")},
        }

    def card(self) -> dict[str, Any]:
        return self._card

    def embed(self, audio: np.ndarray) -> np.ndarray:
        import torch

        examples = torch.from_numpy(vggish_examples(audio)).float()[:, None].to(self.device)  # (W, 1, 96, 64)
        with torch.no_grad():
            return self.network(examples).double().cpu().numpy()  # (W, 128)


# ----------------------------------------------------------------------------------------------- PaSST

PASST_ARCHS = {10: ("passt_s_swa_p16_128_ap476", 998), 20: ("passt_20sec", 2000), 30: ("passt_30sec", 3000)}
PASST_CLASSES = 527  # AudioSet


@contextlib.contextmanager
def _stft_returns_real() -> Iterator[None]:
    """hear21passt calls torch.stft without return_complex, which recent torch refuses (audiocraft patches it
    the same way)."""
    import functools

    import torch

    original = torch.stft
    torch.stft = functools.partial(original, return_complex=False)
    try:
        yield
    finally:
        torch.stft = original


class Passt:
    sample_rate = 32000

    def __init__(self, path: Path, digest: str, spec: PasstWeights, device: str) -> None:
        import pickle

        import torch

        from ssmttm.evaluate.passt_import import import_hear21passt
        from ssmttm.evaluate.passt_network import NotAPasst, build_network, expected_patches, infer_architecture

        AugmentMelSTFT, PasstBasicWrapper = import_hear21passt()  # noqa: N806 (hear21passt's class names)
        if spec.pretrained_length_s not in PASST_ARCHS:
            raise UserFacingError(f"evaluate.models.passt.pretrained_length_s must be one of {sorted(PASST_ARCHS)}")
        arch, input_tdim = PASST_ARCHS[spec.pretrained_length_s]
        try:  # the file first: a wrong one is refused before the network is built
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:  # what torch.load raises for a
            # file that is not a torch checkpoint (garbage: UnpicklingError; a broken zip: RuntimeError)
            raise UserFacingError(
                f"{path}: not a PaSST checkpoint (torch.load cannot read it as a state dict: {type(exc).__name__}); "
                "point weights_path at the kkoutini/PaSST release file"
            ) from exc
        if not isinstance(state, dict):
            raise UserFacingError(f"{path}: not a PaSST checkpoint (a {type(state).__name__}, not a state dict)")
        try:  # sizes from the tensors: the releases are 768 wide, 12 blocks, 12 heads
            architecture = infer_architecture(state)
        except NotAPasst as exc:
            raise UserFacingError(
                f"{path}: not a PaSST checkpoint (its tensors do not form a PaSST: {exc}); point weights_path at the "
                "kkoutini/PaSST release file"
            ) from exc
        patches = (architecture.freq_patches, architecture.time_patches)
        if patches != expected_patches(input_tdim):  # e.g. the 20 s release given as the 10 s one
            raise UserFacingError(
                f"{path}: does not match PaSST {arch} (positional embeddings for {patches[0]} x {patches[1]} "
                f"patches, {arch} has {expected_patches(input_tdim)}): another pretrained_length_s?"
            )
        if architecture.n_classes != PASST_CLASSES:
            raise UserFacingError(
                f"{path}: a PaSST with {architecture.n_classes} classes, not the {PASST_CLASSES} AudioSet classes of "
                "kl_passt; point weights_path at the AudioSet release file"
            )
        net = build_network(architecture, arch, input_tdim)
        try:
            missing, unexpected = net.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # same names, other shapes (e.g. another MLP width)
            raise UserFacingError(f"{path}: does not match PaSST {arch} (tensor shapes differ)") from exc
        if missing or unexpected:
            raise UserFacingError(
                f"{path}: does not match PaSST {arch} (missing {missing[:4]}, unexpected {unexpected[:4]})"
            )
        mel = AugmentMelSTFT(
            n_mels=128, sr=32000, win_length=800, hopsize=320, n_fft=1024, freqm=48, timem=192, htk=False,
            fmin=0.0, fmax=None, norm=1, fmin_aug_range=10, fmax_aug_range=2000,
        )  # fmt: skip
        window_ms = spec.pretrained_length_s * 1000
        self.model = PasstBasicWrapper(mel=mel, net=net, max_model_window=window_ms, mode="logits").eval().to(device)
        self.device = device
        self.segment = int(spec.pretrained_length_s * self.sample_rate)
        self._card = {
            "implementation": "ssmttm.evaluate.embeddings.Passt (audiocraft's PaSST KL protocol)",
            "model": f"PaSST {arch} ({spec.pretrained_length_s} s), hear21passt {library_version('hear21passt')}",
            "network": f"{architecture.embed_dim} wide, {architecture.depth} blocks, {architecture.num_heads} heads "
            "(from the checkpoint's tensors)",
            "weights": str(path),
            "weights_sha256": digest,
            "weights_sha256_check": _expected_sha(spec),
            "layer": "softmax of the 527 AudioSet logits, averaged over segments",
            "sample_rate": self.sample_rate,
            "mono": True,
            "level_normalisation": "none",
            "window_s": spec.pretrained_length_s,
            "hop_s": spec.pretrained_length_s,
            "libraries": {"torch": library_version("torch"), "hear21passt": library_version("hear21passt")},
        }

    def card(self) -> dict[str, Any]:
        return self._card

    def logits(self, window: np.ndarray) -> np.ndarray:
        """(N,) one analysis window at 32 kHz -> (527,) logits (stable-audio-metrics' per-window model call)."""
        import torch

        wave = torch.from_numpy(np.asarray(window, np.float32))[None].to(self.device)  # (1, N)
        with torch.no_grad(), _stft_returns_real(), contextlib.redirect_stdout(io.StringIO()):
            return self.model(wave)[0].double().cpu().numpy()

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        import torch

        wave = torch.from_numpy(np.asarray(audio, np.float32))
        segments = [s for s in torch.split(wave, self.segment) if s.shape[0] > PASST_MIN_SEGMENT_S * self.sample_rate]
        if not segments:
            raise UserFacingError(f"a clip of {wave.shape[0] / self.sample_rate:.2f} s is too short for PaSST")
        with torch.no_grad(), _stft_returns_real(), contextlib.redirect_stdout(io.StringIO()):
            probs = [torch.softmax(self.model(s[None].to(self.device)), dim=-1)[0] for s in segments]
        return torch.stack(probs).mean(dim=0).double().cpu().numpy()


# ----------------------------------------------------------------------------------------------- LAION-CLAP


class Clap:
    sample_rate = 48000

    def __init__(self, path: Path, digest: str, spec: ClapWeights, device: str, seed: int = 0) -> None:
        import pickle

        from ssmttm.evaluate import clap_network
        from ssmttm.evaluate.clap_import import import_laion_clap

        import_laion_clap()  # outside the refusal below: a broken install is no fault of the weights file

        def refusal(exc: Exception) -> UserFacingError:
            return UserFacingError(
                f"{path}: not a LAION-CLAP checkpoint of {spec.audio_model} with fusion {spec.enable_fusion} "
                f"({type(exc).__name__}: {' '.join(str(exc).split())[:160]}); point weights_path at the release "
                "file, or correct enable_fusion and audio_model"
            )

        try:  # what torch.load raises for a file that is no torch checkpoint; NotAClap, KeyError for other files
            state, self.architecture = clap_network.read_checkpoint(str(path), spec.audio_model, spec.enable_fusion)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, KeyError, clap_network.NotAClap) as exc:
            raise refusal(exc) from exc
        # laion_clap's CLAP_Module, its HTSAT at the checkpoint's sizes (the release's for a release file)
        self.model = clap_network.build_clap_module(self.architecture, spec.audio_model, spec.enable_fusion, device)
        text_vocab = self.model.model.text_branch.config.vocab_size
        if len(self.model.tokenize) != text_vocab:  # transformers builds an empty tokenizer when the files are missing
            raise UserFacingError(
                f"roberta-base in the Hugging Face cache: its tokenizer has {len(self.model.tokenize)} tokens, its "
                f"model {text_vocab}; put the whole roberta-base snapshot (vocab.json, merges.txt) in HF_HUB_CACHE"
            )
        try:
            self.model.model.load_state_dict(state)  # CLAP_Module.load_ckpt's load (strict)
        except RuntimeError as exc:  # the text branch or projections differ from laion_clap's
            raise refusal(exc) from exc
        self.seed = seed
        self._card = {
            "implementation": "ssmttm.evaluate.embeddings.Clap (laion_clap CLAP_Module)",
            "model": f"LAION-CLAP {spec.audio_model}, fusion {spec.enable_fusion}, laion_clap "
            f"{library_version('laion-clap')}",
            "network": f"{self.architecture.describe()} (read from the checkpoint's tensors)",
            "weights": str(path),
            "weights_sha256": digest,
            "weights_sha256_check": _expected_sha(spec),
            "layer": "projected audio and text embeddings (512-d), L2-normalised",
            "sample_rate": self.sample_rate,
            "mono": True,
            "level_normalisation": "int16 round trip (laion_clap's recommended input); clips over 10 s: seeded "
            "random crop inside laion_clap",
            "window_s": 10.0,
            "hop_s": None,
            "text": "RoBERTa tokenizer, captions truncated at 77 tokens (laion_clap)",
            "libraries": {"torch": library_version("torch"), "laion-clap": library_version("laion-clap")},
        }

    def card(self) -> dict[str, Any]:
        return self._card

    def _seeded(self) -> None:
        import torch

        random.seed(self.seed)
        np.random.seed(self.seed)  # laion_clap crops with the global generators
        torch.manual_seed(self.seed)

    def embed_audio(self, audio: np.ndarray) -> np.ndarray:
        quantised = (np.clip(np.asarray(audio, np.float32), -1.0, 1.0) * 32767.0).astype(np.int16) / 32767.0
        self._seeded()
        embedding = self.model.get_audio_embedding_from_data(x=quantised[None].astype(np.float32), use_tensor=False)
        return np.asarray(embedding, np.float64)[0]

    def embed_text(self, captions: list[str]) -> np.ndarray:
        self._seeded()
        return np.asarray(self.model.get_text_embedding(list(captions), use_tensor=False), np.float64)


# ----------------------------------------------------------------------------------------------- OpenL3


class OpenL3:
    sample_rate = 48000  # the rate clips are handed over at; openl3 resamples anything else to 48 kHz itself
    hop_s = 0.5

    def __init__(self, path: Path, digest: str, spec: ModelWeights, device: str) -> None:
        import openl3

        self.openl3 = openl3
        self.model = openl3.models.load_audio_embedding_model_from_path(str(path), "mel256", 512)
        self._card = {
            "implementation": "ssmttm.evaluate.embeddings.OpenL3 (openl3.get_audio_embedding, center=True)",
            "model": f"OpenL3 mel256 / music / 512-d, openl3 {library_version('openl3')}",
            "weights": str(path),
            "weights_sha256": digest,
            "weights_sha256_check": _expected_sha(spec),
            "layer": "audio embedding (512-d)",
            "sample_rate": self.sample_rate,
            "mono": True,
            "level_normalisation": "none",
            "window_s": 1.0,
            "hop_s": self.hop_s,
            "libraries": {"openl3": library_version("openl3"), "tensorflow": library_version("tensorflow")},
        }

    def card(self) -> dict[str, Any]:
        return self._card

    def at_rate(self, sample_rate: int) -> OpenL3:
        """The same loaded network, handed clips at `sample_rate` (stable-audio-metrics: 44.1 kHz)."""
        other = copy.copy(self)
        other.sample_rate = sample_rate
        other._card = {**self._card, "sample_rate": sample_rate}
        return other

    def embed(self, audio: np.ndarray) -> np.ndarray:
        embedding, _ = self.openl3.get_audio_embedding(
            np.asarray(audio, np.float32), self.sample_rate, model=self.model, hop_size=self.hop_s, verbose=False
        )
        return np.asarray(embedding, np.float64)  # (windows, 512)


# ----------------------------------------------------------------------------------------------- metric pieces


def kl_divergence(reference: np.ndarray, generated: np.ndarray, eps: float = KL_EPS) -> np.ndarray:
    """KL(reference || generated) of class distributions (..., C) with eps added to the generated side."""
    p, q = np.asarray(reference, np.float64), np.asarray(generated, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1.0)) - np.log(q + eps)), 0.0)
    return terms.sum(axis=-1)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of (..., d) arrays."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sum(a * b, axis=-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)

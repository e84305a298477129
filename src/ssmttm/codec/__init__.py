"""The DAC codec as the pipeline uses it: a folder `data/codec/` (weights.safetensors + codec.json) and a handle.

`load_codec(folder)` checks the weights against the sha256 recorded in codec.json, rebuilds descript-audio-codec's
`dac.model.DAC` from the recorded constructor arguments and returns a `CodecHandle`:

    encode(audio (B, 1, N))                -> codes (B, K, T) long, latents (B, K*D, T) float32
    encode_windowed(audio, window_samples) -> the same, encoded in fixed windows and concatenated
    decode(codes (B, K, T))                -> audio (B, 1, T*hop)

with T = ceil(N / hop), K codebooks and D = codebook_dim. DAC's decoder returns exactly T*hop samples only when
every decoder rate is even; an odd rate (the demo's [8, 5, 4, 2]) loses samples at the end (8 there), so
`decode_to_length` decodes one frame more (the last latent frame repeated) and crops: every decode, in training
and through the handle, returns the length asked for.

Which latents: `latents` are the *pre-quantisation* latents z_e of each codebook, exactly what DAC's residual
quantizer computes (`VectorQuantize.in_proj` of the residual, codebook by codebook; the `latents` output of
`DAC.encode`). `quantizer.from_latents(latents)` (here `latents_to_codes`) recovers the codes exactly, and these are
the 9 x 8 = 72 channels DiscoDiff diffuses (PAPER.md section 6; its per-codebook means and stds describe z_e). The
codebook vectors of given codes (`quantizer.from_codes`, what an LM's codes map to) are `codes_to_vectors`.

Token data remembers its codec: `check_codec_matches(shard_metadata, handle)` refuses to decode tokens with a codec
other than the one that made them (decode paths call it).
"""

from __future__ import annotations

import inspect
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ssmttm.artifacts import sha256_file, write_json
from ssmttm.errors import MissingWeightsError, UserFacingError

WEIGHTS_FILE = "weights.safetensors"
CODEC_JSON = "codec.json"
METRICS_FILE = "metrics.json"
# Fields that must agree between a codec and the tokens it is asked to decode.
IDENTITY_KEYS = ("model", "weights_sha256", "sample_rate", "hop_length", "codebook_size", "codebook_dim")
# Key of the codec identity in a token shard's Parquet key-value metadata.
SHARD_CODEC_KEY = "ssmttm.codec"


class CodecMismatchError(UserFacingError):
    """Tokens were made by another codec than the one asked to decode them."""


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserFacingError(f"device '{name}' asked for but no CUDA GPU is visible; use device: auto or cpu")
    return torch.device(name)


# ----------------------------------------------------------------------------------------------- DAC construction


def dac_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Keep the arguments `dac.model.DAC` accepts, as plain JSON types (numpy ints from old metadata included)."""
    from dac.model import DAC

    accepted = set(inspect.signature(DAC).parameters)

    def plain(value: Any) -> Any:
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        if hasattr(value, "item") and not isinstance(value, torch.Tensor):
            return value.item()  # numpy scalar
        return value

    return {k: plain(v) for k, v in sorted(kwargs.items()) if k in accepted}


def build_dac(kwargs: Mapping[str, Any]) -> torch.nn.Module:
    """A `dac.model.DAC` from constructor arguments; the resolved latent_dim is written back by `model_identity`."""
    from dac.model import DAC

    with warnings.catch_warnings():
        # DAC uses torch.nn.utils.weight_norm (deprecated, still supported); its state dict keys depend on it.
        warnings.simplefilter("ignore", FutureWarning)
        return DAC(**dac_kwargs(kwargs))


def model_identity(model: torch.nn.Module, variant: str, **extra: Any) -> dict[str, Any]:
    """codec.json fields describing an (unsaved) DAC; `weights_sha256` is added by `save_codec`."""
    kwargs = {
        "encoder_dim": int(model.encoder_dim),
        "encoder_rates": [int(r) for r in model.encoder_rates],
        "latent_dim": int(model.latent_dim),
        "decoder_dim": int(model.decoder_dim),
        "decoder_rates": [int(r) for r in model.decoder_rates],
        "n_codebooks": int(model.n_codebooks),
        "codebook_size": int(model.codebook_size),
        "codebook_dim": model.codebook_dim if isinstance(model.codebook_dim, int) else list(model.codebook_dim),
        "quantizer_dropout": float(model.quantizer.quantizer_dropout),
        "sample_rate": int(model.sample_rate),
    }
    return {
        "model": "dac",
        "variant": variant,
        "model_kwargs": kwargs,
        "sample_rate": int(model.sample_rate),
        "hop_length": int(model.hop_length),
        "n_codebooks": int(model.n_codebooks),
        "codebook_size": int(model.codebook_size),
        "codebook_dim": kwargs["codebook_dim"],
        **extra,
    }


def save_codec(folder: str | Path, model: torch.nn.Module, identity: Mapping[str, Any]) -> dict[str, Any]:
    """Write weights.safetensors and codec.json into `folder` (an atomic_dir's temporary folder); return codec.json."""
    from safetensors.torch import save_file

    folder = Path(folder)
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": "ssmttm.codec/1"})
    (folder / WEIGHTS_FILE).chmod(0o644)  # safetensors creates it owner-only; artifacts are shared read-only
    full = {**identity, "weights_sha256": sha256_file(folder / WEIGHTS_FILE)}
    write_json(folder / CODEC_JSON, full)
    return full


def decoded_samples(decoder_rates: Sequence[int], frames: int) -> int:
    """Samples DAC's decoder returns for `frames` latent frames: each DecoderBlock's ConvTranspose1d (kernel 2s,
    stride s, padding ceil(s/2)) maps n to n*s + s - 2*ceil(s/2), which is n*s only for an even stride s."""
    n = frames
    for stride in decoder_rates:
        n = n * stride + stride - 2 * math.ceil(stride / 2)
    return n


def decode_to_length(model: torch.nn.Module, z: torch.Tensor, n_samples: int) -> torch.Tensor:
    """Quantised latents z (B, latent_dim, T) -> audio (B, 1, n_samples) with n_samples <= T*hop.

    When the decoder falls short of n_samples, z is padded at the end with copies of its last frame (as many as the
    shortfall needs, one for DAC's rates) and the output cropped; otherwise z is decoded as it is.
    """
    frames, hop = z.shape[-1], int(model.hop_length)
    if n_samples > frames * hop:
        raise ValueError(f"{n_samples} samples asked from {frames} frames of hop {hop}")
    missing = n_samples - decoded_samples(model.decoder_rates, frames)
    if missing > 0:
        z = torch.nn.functional.pad(z, (0, math.ceil(missing / hop)), mode="replicate")  # (B, latent_dim, T + p)
    return model.decode(z)[..., :n_samples]


# ----------------------------------------------------------------------------------------------- the handle


@dataclass
class CodecHandle:
    """A DAC in eval mode plus its identity (codec.json). Audio is mono float in [-1, 1] at `sample_rate`."""

    model: torch.nn.Module
    identity: dict[str, Any]
    device: torch.device

    @property
    def sample_rate(self) -> int:
        return int(self.identity["sample_rate"])

    @property
    def hop_length(self) -> int:
        return int(self.identity["hop_length"])

    @property
    def n_codebooks(self) -> int:
        return int(self.identity["n_codebooks"])

    @property
    def latent_channels(self) -> int:
        dim = self.identity["codebook_dim"]
        return sum(dim) if isinstance(dim, list) else self.n_codebooks * int(dim)

    def window_samples(self, window_s: float) -> int:
        """Samples in an encode window of `window_s` seconds, rounded up to a whole number of frames."""
        return max(1, math.ceil(window_s * self.sample_rate / self.hop_length)) * self.hop_length

    @torch.inference_mode()
    def encode(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """audio (B, 1, N) -> codes (B, K, T) int64, latents z_e (B, K*D, T) float32; T = ceil(N / hop)."""
        if audio.dim() != 3 or audio.shape[1] != 1:
            raise ValueError(f"encode expects mono audio shaped (B, 1, N), got {tuple(audio.shape)}")
        x = self.model.preprocess(audio.to(self.device, torch.float32), self.sample_rate)  # right-pad to hop multiple
        _, codes, latents, _, _ = self.model.encode(x)
        return codes, latents.float()

    @torch.inference_mode()
    def encode_windowed(self, audio: torch.Tensor, window_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode in consecutive fixed windows (the last zero-padded) and concatenate: DAC tokens depend on the window
        (DAC issue 39), so a fixed window makes them a function of the audio alone. Returns T = ceil(N / hop)."""
        if window_samples % self.hop_length:
            raise ValueError(f"window of {window_samples} samples is not a multiple of the hop {self.hop_length}")
        b, _, n = audio.shape
        n_frames = math.ceil(n / self.hop_length)
        n_windows = max(1, math.ceil(n / window_samples))
        padded = torch.nn.functional.pad(audio, (0, n_windows * window_samples - n))  # (B, 1, nW*W)
        windows = padded.reshape(b * n_windows, 1, window_samples)  # (B*nW, 1, W)
        codes, latents = self.encode(windows)  # (B*nW, K, Tw), (B*nW, C, Tw)
        tw = window_samples // self.hop_length

        def join(x: torch.Tensor) -> torch.Tensor:  # (B*nW, C, Tw) -> (B, C, T)
            x = x.reshape(b, n_windows, x.shape[1], tw).permute(0, 2, 1, 3)  # (B, C, nW, Tw)
            return x.reshape(b, x.shape[1], n_windows * tw)[:, :, :n_frames]

        return join(codes), join(latents)

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, K, T) -> audio (B, 1, T*hop) float32."""
        z = self.model.quantizer.from_codes(codes.to(self.device).long())[0]  # (B, latent_dim, T)
        return decode_to_length(self.model, z, z.shape[-1] * self.hop_length).float()

    @torch.inference_mode()
    def latents_to_codes(self, latents: torch.Tensor) -> torch.Tensor:
        """Pre-quantisation latents (B, K*D, T) -> codes (B, K, T): nearest code per codebook (from_latents)."""
        return self.model.quantizer.from_latents(latents.to(self.device, torch.float32))[2]

    @torch.inference_mode()
    def codes_to_vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, K, T) -> codebook vectors (B, K*D, T) (quantizer.from_codes), the 8-d vectors per codebook."""
        return self.model.quantizer.from_codes(codes.to(self.device).long())[1].float()


def read_identity(codec_dir: str | Path) -> dict[str, Any]:
    path = Path(codec_dir) / CODEC_JSON
    if not path.is_file():
        raise MissingWeightsError(
            f"{path}: codec.json not found; build the codec first with "
            f"`ssmttm codec --clips data/segment/shard-* --out {codec_dir}`"
        )
    return json.loads(path.read_text())


def load_codec(codec_dir: str | Path, device: str | torch.device = "cpu") -> CodecHandle:
    """Load `data/codec`-style folders into a CodecHandle (model in eval mode on `device`)."""
    from safetensors.torch import load_file

    codec_dir = Path(codec_dir)
    identity = read_identity(codec_dir)
    weights = codec_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise MissingWeightsError(
            f"{weights}: codec weights not found; rebuild them with `ssmttm codec ... --out {codec_dir}`"
        )
    actual = sha256_file(weights)
    if actual != identity.get("weights_sha256"):
        raise UserFacingError(
            f"{weights}: sha256 {actual[:12]}... does not match codec.json "
            f"({str(identity.get('weights_sha256'))[:12]}...); the folder was modified, rebuild it"
        )
    device = resolve_device(device) if isinstance(device, str) else device
    model = build_dac(identity["model_kwargs"])
    model.load_state_dict(load_file(str(weights)), strict=True)
    model.eval().to(device)
    return CodecHandle(model=model, identity=identity, device=device)


# ----------------------------------------------------------------------------------------------- identity checks


def shard_codec_identity(shard_metadata: Mapping[Any, Any]) -> dict[str, Any]:
    """The codec identity from a shard's key-value metadata (bytes or str keys), or an already parsed identity."""
    if "weights_sha256" in shard_metadata:
        return dict(shard_metadata)
    for key in (SHARD_CODEC_KEY, SHARD_CODEC_KEY.encode()):
        if key in shard_metadata:
            raw = shard_metadata[key]
            return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    raise CodecMismatchError(
        f"token metadata has no '{SHARD_CODEC_KEY}' entry: cannot tell which codec made these "
        "tokens; re-run `ssmttm tokenize`"
    )


def check_codec_matches(shard_metadata: Mapping[Any, Any], codec_handle: CodecHandle | Mapping[str, Any]) -> None:
    """Raise CodecMismatchError unless the codec that made the tokens is the one given (weights hash included)."""
    recorded = shard_codec_identity(shard_metadata)
    current = codec_handle.identity if isinstance(codec_handle, CodecHandle) else dict(codec_handle)
    differing = [k for k in IDENTITY_KEYS if recorded.get(k) != current.get(k)]
    if differing:
        details = ", ".join(f"{k}: tokens {recorded.get(k)!r} vs codec {current.get(k)!r}" for k in differing)
        raise CodecMismatchError(
            f"these tokens were made by another codec ({details}); decode them with the codec "
            "folder that tokenized them (see the shard's ssmttm.codec metadata)"
        )

"""The codec folder and handle: load, encode (whole and windowed), decode, latents, identity checks."""

from __future__ import annotations

import json

import pytest
import torch

from ssmttm.codec import (
    CODEC_JSON,
    WEIGHTS_FILE,
    CodecMismatchError,
    build_dac,
    check_codec_matches,
    decode_to_length,
    decoded_samples,
    load_codec,
)
from ssmttm.errors import MissingWeightsError, UserFacingError
from tests.codec import RATE, TINY_KWARGS, TINY_ODD_KWARGS, tiny_codec


@pytest.fixture
def handle(tmp_path):
    return load_codec(tiny_codec(tmp_path / "codec"))


def test_identity_describes_the_model(handle, tmp_path):
    ident = json.loads((tmp_path / "codec" / CODEC_JSON).read_text())
    assert ident["model"] == "dac" and ident["variant"] == "trained"
    assert ident["sample_rate"] == RATE and ident["hop_length"] == 8
    assert ident["n_codebooks"] == 2 and ident["codebook_size"] == 16 and ident["codebook_dim"] == 4
    assert ident["model_kwargs"]["encoder_rates"] == TINY_KWARGS["encoder_rates"]
    assert handle.latent_channels == 8
    assert not handle.model.training


def test_encode_shapes_latents_and_decode(handle):
    audio = 0.3 * torch.randn(3, 1, 1001, generator=torch.Generator().manual_seed(0))
    codes, latents = handle.encode(audio)
    assert codes.shape == (3, 2, 126)  # ceil(1001 / 8)
    assert latents.shape == (3, 8, 126) and latents.dtype == torch.float32
    assert int(codes.min()) >= 0 and int(codes.max()) < 16
    # The stored latents are the pre-quantisation z_e: from_latents recovers the codes exactly.
    assert torch.equal(handle.latents_to_codes(latents), codes)
    vectors = handle.codes_to_vectors(codes)
    assert vectors.shape == latents.shape and not torch.allclose(vectors, latents)
    audio_out = handle.decode(codes)
    assert audio_out.shape == (3, 1, 126 * 8) and torch.isfinite(audio_out).all()


def test_encode_windowed_is_the_concatenation_of_windows(handle):
    audio = 0.3 * torch.randn(2, 1, 200, generator=torch.Generator().manual_seed(1))
    window = handle.window_samples(0.004)  # 64 samples = 8 frames
    assert window == 64
    codes, latents = handle.encode_windowed(audio, window)
    assert codes.shape == (2, 2, 25)  # ceil(200 / 8)
    padded = torch.nn.functional.pad(audio, (0, 256 - 200))
    parts = [handle.encode(padded[..., i : i + 64]) for i in range(0, 256, 64)]
    expected_codes = torch.cat([p[0] for p in parts], dim=-1)[..., :25]
    expected_latents = torch.cat([p[1] for p in parts], dim=-1)[..., :25]
    assert torch.equal(codes, expected_codes)
    assert torch.allclose(latents, expected_latents, atol=1e-6)
    # A clip encoded alone gives the codes it has inside a batch.
    alone, _ = handle.encode_windowed(audio[1:2], window)
    assert torch.equal(alone, codes[1:2])
    with pytest.raises(ValueError, match="multiple of the hop"):
        handle.encode_windowed(audio, 60)


def test_load_codec_refuses_modified_weights(tmp_path):
    folder = tiny_codec(tmp_path / "codec")
    other = tiny_codec(tmp_path / "other", seed=1)
    (folder / WEIGHTS_FILE).write_bytes((other / WEIGHTS_FILE).read_bytes())
    with pytest.raises(UserFacingError, match="does not match codec.json"):
        load_codec(folder)


def test_load_codec_missing_folder_names_it(tmp_path):
    with pytest.raises(MissingWeightsError, match="codec.json not found"):
        load_codec(tmp_path / "nowhere")


def test_check_codec_matches(tmp_path, handle):
    other = load_codec(tiny_codec(tmp_path / "other", seed=1))
    meta = {b"ssmttm.codec": json.dumps({**handle.identity, "encode_window_s": 10.0}).encode()}
    check_codec_matches(meta, handle)  # same codec: no error
    check_codec_matches({"ssmttm.codec": meta[b"ssmttm.codec"].decode()}, handle.identity)
    with pytest.raises(CodecMismatchError, match="weights_sha256"):
        check_codec_matches(meta, other)
    with pytest.raises(CodecMismatchError, match="no 'ssmttm.codec'"):
        check_codec_matches({b"other": b"{}"}, handle)


@pytest.mark.parametrize("rates", [[4, 2], [5, 2], [8, 5, 4, 2]])
def test_decoded_samples_is_what_the_decoder_returns(rates):
    torch.manual_seed(0)
    kwargs = {**TINY_KWARGS, "encoder_rates": rates[::-1], "decoder_rates": rates}
    model = build_dac(kwargs).eval()
    hop = model.hop_length
    for frames in (1, 7):
        with torch.no_grad():
            out = model.decode(torch.randn(1, model.latent_dim, frames))
        assert out.shape[-1] == decoded_samples(rates, frames)
    short = {(4, 2): 0, (5, 2): 2, (8, 5, 4, 2): 8}[tuple(rates)]  # the 5's lost sample, upsampled after it
    assert decoded_samples(rates, 7) == 7 * hop - short


def test_odd_decoder_rates_decode_whole_frames(tmp_path):
    """Rates [5, 2] return 2 samples short of T*hop: the handle decodes one repeated frame more and crops."""
    handle = load_codec(tiny_codec(tmp_path / "odd", kwargs=TINY_ODD_KWARGS))
    assert handle.hop_length == 10 and decoded_samples([5, 2], 64) == 638
    audio = 0.3 * torch.randn(2, 1, 635, generator=torch.Generator().manual_seed(2))
    codes, _ = handle.encode(audio)
    assert codes.shape == (2, 2, 64)
    decoded = handle.decode(codes)
    assert decoded.shape == (2, 1, 640) and torch.isfinite(decoded).all()
    with torch.no_grad():
        z = handle.model.quantizer.from_codes(codes)[0]  # (2, latent_dim, 64)
        plain = handle.model.decode(z)  # (2, 1, 638)
        # Away from the end the padded frame changes nothing; the decoder's receptive field is a few frames.
        assert torch.allclose(decoded[..., :320], plain[..., :320], atol=1e-6)
        assert decode_to_length(handle.model, z, 635).shape == (2, 1, 635)
        with pytest.raises(ValueError, match="samples asked"):
            decode_to_length(handle.model, z, 641)


def test_even_decoder_rates_decode_unpadded(handle):
    codes = torch.randint(0, 16, (1, 2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        z = handle.model.quantizer.from_codes(codes)[0]
        assert torch.equal(handle.decode(codes), handle.model.decode(z))

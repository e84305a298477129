"""Property tests of `ssmttm generate --checkpoint` and `ssmttm decode` (issue 23): generated files (random bytes,
.npz files of random shapes, dtypes and values, NaN included; caption files of random unicode and bytes) and
arguments, through the CLI's `main(argv)`. Every run ends in exit code 0 with a valid output, or in a refusal (exit
code 1 or 2, an `error` line, nothing written); never in the internal-error path. Inputs valid by construction must
be accepted, so the checks cannot pass by refusing everything.

Tiny models: tests.codec's DAC (2 codebooks of 16 codes, 8 latent channels, hop 8) and a tiny 1-codebook LM. The
LM's text encoder is tests.models' FakeTextEncoder (put in place of the real one: loading MiniLM for every example
would dominate the run; the text path is not what these properties are about).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ssmttm import cli
from ssmttm.artifacts import read_jsonl
from ssmttm.generate import common, stage
from ssmttm.generate.audio_out import MANIFEST_FILE
from tests.codec import TINY_KWARGS, tiny_codec
from tests.generate._fixtures import fake_encoder_factory, make_lm_run

CODEBOOKS, CODEBOOK_SIZE = TINY_KWARGS["n_codebooks"], TINY_KWARGS["codebook_size"]
LATENT_CHANNELS = CODEBOOKS * TINY_KWARGS["codebook_dim"]
PROPERTY_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    # capsys is read (and so emptied) in every example
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def env(tmp_path_factory, repo_root):
    """Tiny codec and LM, a params file, the scratch folder as working directory, the fake text encoder."""
    root = tmp_path_factory.mktemp("cli_properties")
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["portable_cpu"] = False
    params["generate"].update(device="cpu", batch_size=2, seconds=0.002, top_k=4)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    codec, lm_run = tiny_codec(root / "codec"), make_lm_run(root / "lm_run")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setattr(
            stage, "Encoders", lambda section, device, factory: common.Encoders(section, device, fake_encoder_factory)
        )
        yield {"root": root, "params": root / "params.yaml", "codec": codec, "checkpoint": lm_run / "final"}
    assert not (root / "logs" / "crashes").exists(), "a run took the internal-error path"


def run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        rc = cli.main(argv)
    except SystemExit as exc:  # argparse refuses malformed flags itself (exit code 2, a usage line)
        rc = exc.code
    err = capsys.readouterr().err
    assert "internal error" not in err, err
    event(f"exit code {rc}")  # --hypothesis-show-statistics: how often each outcome was reached
    return rc, err


def assert_refused(rc: int, err: str, out: Path) -> None:
    assert rc in (1, 2), (rc, err)
    assert "error: " in err, err
    assert not out.exists(), f"{out} written for a refused input"


def fresh(env) -> Path:
    folder = env["root"] / uuid.uuid4().hex
    folder.mkdir()
    return folder


# ----------------------------------------------------------------------------------------------- generate

NASTY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=20)  # surrogates and controls too
CLEAN_CAPTION = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x2FFF, exclude_categories=("Cs",)), max_size=20
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def caption_sources(draw) -> tuple[str, object, bool]:
    """(kind, content, valid): --captions texts, a .txt of text or bytes, or a .jsonl of rows."""
    kind = draw(st.sampled_from(["argv", "argv", "txt_text", "txt_bytes", "jsonl"]))
    if kind == "argv":
        clean = draw(st.booleans())
        texts = draw(st.lists(CLEAN_CAPTION.map(lambda t: "a " + t) if clean else NASTY_TEXT, min_size=1, max_size=3))
        return kind, texts, clean
    if kind == "txt_text":
        text = "\n".join(draw(st.lists(NASTY_TEXT, max_size=3)))
        try:  # UTF-8 with a non-blank line must be accepted; lone surrogates make bytes that are not UTF-8
            return kind, text.encode("utf-8"), any(line.strip() for line in text.splitlines())
        except UnicodeEncodeError:
            return kind, text.encode("utf-8", "surrogatepass"), False
    if kind == "txt_bytes":
        return kind, draw(st.binary(max_size=60)), False
    rows = draw(
        st.lists(
            st.one_of(
                st.fixed_dictionaries({"caption": CLEAN_CAPTION.map(lambda t: "b " + t)}),
                st.fixed_dictionaries({"caption": JSON_VALUES, "id": JSON_VALUES}),
                JSON_VALUES,
            ),
            max_size=3,
        )
    )
    valid = bool(rows) and all(
        isinstance(r, dict) and set(r) == {"caption"} and isinstance(r["caption"], str) for r in rows
    )
    return kind, ("\n".join(json.dumps(r) for r in rows) + "\n").encode(), valid


@st.composite
def lengths(draw) -> tuple[list[str], bool]:
    kind = draw(st.sampled_from(["frames", "frames", "frames_wild", "seconds", "seconds_text"]))
    if kind == "frames":
        return [f"--frames={draw(st.integers(1, 6))}"], True
    if kind == "frames_wild":  # refused: below 1, or more frames than memory holds
        return [f"--frames={draw(st.integers(-3, 0) | st.integers(10**13, 10**18))}"], False
    if kind == "seconds":  # not finite, not positive, a few frames (accepted), or beyond memory
        value = draw(
            st.sampled_from([float("nan"), float("inf"), -float("inf"), 0.0])
            | st.floats(-1e9, 0.0025)
            | st.floats(1e8, 1e300)
        )
        return [f"--seconds={value!r}"], 0 < value <= 0.0025
    return [f"--seconds={draw(st.text(st.characters(exclude_characters='0123456789'), max_size=6))}"], False


@PROPERTY_SETTINGS
@given(
    source=caption_sources(),
    length=lengths(),
    seed=st.none() | st.integers(0, 2**63 - 1) | st.integers(-(2**66), 2**66),
    suffix=st.sampled_from([".npz", ".npz", ".parquet", ".wav"]),
)
def test_generate_checkpoint_gives_codes_or_a_clear_refusal(env, capsys, source, length, seed, suffix):
    folder = fresh(env)
    kind, content, valid = source
    out = folder / f"codes{suffix}"
    argv = ["generate", "--params", str(env["params"]), "--checkpoint", str(env["checkpoint"])]
    argv += ["--codec", str(env["codec"]), "--out", str(out), "--no-progress", *length[0]]
    if kind == "argv":
        argv += ["--captions", *content]
    else:
        captions = folder / ("captions.jsonl" if kind == "jsonl" else "captions.txt")
        captions.write_bytes(content)
        argv += ["--captions-file", str(captions)]
    if seed is not None:
        argv += [f"--seed={seed}"]
    rc, err = run(argv, capsys)
    must_work = valid and length[1] and suffix != ".wav" and (seed is None or 0 <= seed < 2**63)
    if must_work:
        assert rc == 0, err
    if rc != 0:
        assert_refused(rc, err, out)
        return
    # never an output from invalid input: the seed, the length and the caption file were all acceptable
    assert out.is_file() and suffix in (".npz", ".parquet")
    assert seed is None or 0 <= seed < 2**63
    name, value = length[0][0].split("=", 1)
    assert int(value) >= 1 if name == "--frames" else 0 < float(value) < 1e6
    if kind != "argv":
        content.decode("utf-8")
    if suffix == ".npz":
        with np.load(out, allow_pickle=False) as data:
            codes, captions = data["codes"], list(data["captions"])
        assert codes.ndim == 3 and codes.shape[0] == len(captions) >= 1 and codes.shape[2] >= 1
        assert codes.min() >= 0 and codes.max() < CODEBOOK_SIZE


# ----------------------------------------------------------------------------------------------- decode

DTYPES = st.sampled_from(
    ["int8", "int16", "int64", "uint8", "float16", "float32", "float64", "bool", "complex64", "U2"]
)


@st.composite
def npz_arrays(draw) -> tuple[dict[str, np.ndarray], str]:
    """Arrays for a .npz: a main array (`codes`, `latents` or another name) of a random shape and dtype (values from
    the whole range of the dtype, NaN and infinities included), sometimes `ids` and `captions` beside it."""
    key = draw(st.sampled_from(["codes", "codes", "latents", "latents", "other"]))
    if key != "other" and draw(st.integers(0, 2)):  # the expected layout: valid, or wrong only in dtype or one value
        b, t = draw(st.integers(1, 3)), draw(st.integers(1, 5))
        rows = draw(st.integers(1, 2)) if key == "codes" else LATENT_CHANNELS
        values = st.integers(0, CODEBOOK_SIZE - 1) if key == "codes" else st.floats(-1e3, 1e3, width=32)
        array = draw(hnp.arrays(np.float64, (b, rows, t), elements=values))
        dtype = draw(
            st.sampled_from(
                ["int16", "int64", "uint8", "float32", "float64", "float16"] if key == "codes" else ["float32"]
            )
        )
        array = array.astype(dtype)
        if key == "latents" and draw(st.integers(0, 2)):
            array[draw(st.integers(0, b - 1)), draw(st.integers(0, rows - 1)), draw(st.integers(0, t - 1))] = draw(
                st.sampled_from([np.nan, np.inf, -np.inf])
            )
        return {key: array}, key
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
    if draw(st.integers(0, 2)):  # mostly the expected layout, so the valid region is reached
        shape = (draw(st.integers(0, 3)), CODEBOOKS if key == "codes" else LATENT_CHANNELS, draw(st.integers(0, 5)))
    dtype = np.dtype(draw(DTYPES))
    if key == "codes" and draw(st.booleans()):
        array = draw(hnp.arrays(np.int64, shape, elements=st.integers(0, CODEBOOK_SIZE - 1)))
    elif key == "latents" and draw(st.booleans()):
        array = draw(hnp.arrays(np.float32, shape, elements=st.floats(-10, 10, width=32)))
    else:
        array = draw(hnp.arrays(dtype, shape))
    arrays = {key: array}
    n = shape[0] if shape else 0
    if draw(st.integers(0, 3)) == 0:
        arrays["ids"] = draw(
            st.one_of(
                st.just(np.array([f"item{i}" for i in range(n)])),
                hnp.arrays(draw(DTYPES), hnp.array_shapes(min_dims=0, max_dims=2, max_side=4)),
            )
        )
    if draw(st.integers(0, 3)) == 0:
        arrays["captions"] = np.array([draw(CLEAN_CAPTION) for _ in range(draw(st.integers(0, 4)))])
    return arrays, key


def _decodable(arrays: dict[str, np.ndarray], key: str, flag: str, extras_allowed: bool = False) -> bool:
    """Whether the main array is valid (the CLI must accept it when there is nothing else in the file; with
    `extras_allowed`, whether an output is allowed at all)."""
    if set(arrays) != {key} and not extras_allowed:
        return False
    array = arrays[key]
    if array.ndim != 3 or array.shape[0] < 1 or array.shape[2] < 1:
        return False
    if flag == "--codes" and key == "codes":
        return array.dtype.kind in "iu" and 1 <= array.shape[1] <= CODEBOOKS and 0 <= array.min() <= array.max() < 16
    if flag == "--latents" and key == "latents":
        with np.errstate(over="ignore"):
            return (
                array.dtype.kind == "f" and array.shape[1] == LATENT_CHANNELS and np.isfinite(array.astype("f4")).all()
            )
    return False


@settings(PROPERTY_SETTINGS, max_examples=60)  # decoding the tiny codec is fast
@given(
    content=st.one_of(
        npz_arrays(), npz_arrays(), npz_arrays(), npz_arrays(), st.binary(max_size=80).map(lambda b: (b, None))
    ),
    swap_flag=st.integers(0, 4).map(lambda n: n == 0),
    codebooks=st.one_of(st.none(), st.none(), st.integers(-2, 4)),
)
def test_decode_gives_wavs_or_a_clear_refusal(env, capsys, content, swap_flag, codebooks):
    folder = fresh(env)
    source, out = folder / "input.npz", folder / "wavs"
    payload, key = content
    flag = "--latents" if (key == "latents") != swap_flag else "--codes"
    if isinstance(payload, bytes):
        source.write_bytes(payload)
    else:
        np.savez(source, **payload)
    argv = ["decode", "--codec", str(env["codec"]), flag, str(source), "--out", str(out), "--no-progress"]
    if codebooks is not None:
        argv += [f"--codebooks={codebooks}"]
    rc, err = run(argv, capsys)
    if not isinstance(payload, bytes) and _decodable(payload, key, flag) and (codebooks is None or codebooks >= 1):
        assert rc == 0, err
    if rc != 0:
        assert_refused(rc, err, out)
        return
    assert not isinstance(payload, bytes) and _decodable(payload, key, flag, extras_allowed=True)
    assert codebooks is None or codebooks >= 1
    rows = read_jsonl(out / MANIFEST_FILE)
    assert len(rows) == len(payload[key]) >= 1
    for row in rows:
        assert row["status"] in ("ok", "failed")
        assert row["n_frames"] >= 1 and 1 <= row["codebooks"] <= CODEBOOKS
        assert (row["status"] == "ok") == (out / f"{row['caption_id']}.wav").is_file()

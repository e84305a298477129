"""Checks of user-facing inputs, run before a stage does any work or writes anything.

Each check raises `UserFacingError` with one line naming the input (a file or a `--flag`) and what to do, so the CLI
answers a bad input with exit code 1 and no traceback; a bug still reaches the internal-error path. Used by
generate, decode, evaluate, report, train-refiner and text-cache. The checks that need a model family's or
the token shards' own definitions live beside them (generate.memory, tokens.shards.require_token_shards).

    read_text_utf8(path, what)                 the text of a file that must exist and be UTF-8
    check_finite_number(value, name, low, high) a CLI number: finite, within [low, high]
    check_seed(value, name)                     0 <= seed < 2**63 (torch.Generator's range)
    check_fits_in_memory(n_bytes, what, fix)    refuse a length whose estimated memory exceeds this machine's
    decoding_bytes(identity, n_frames)          that estimate for codec decoding
    read_npz_arrays(path, what, keys)           a .npz's arrays, with its format and array headers checked first
    load_codes_npz / check_codes_array          codes (B, K, T): integer, K in 1..K_codec, T > 0, in the codebook
    load_latents_npz / check_latents_array      latents (B, C, T): float, finite, T > 0
    require_dir(path, what, fix)                an input folder that must exist
    read_json_file / read_jsonl_rows            JSON and JSON-lines files (UTF-8, valid, rows are objects)
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ssmttm.errors import UserFacingError

SEED_LIMIT = 2**63  # torch.Generator.manual_seed takes [-2**63, 2**64); caption seeds are kept below 2**63
MEMORY_FRACTION = 0.8  # of the available memory a single allocation estimate may claim


# ------------------------------------------------------------------------------------------------ files


def require_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UserFacingError(f"{what} {path}: file not found; check the path")
    return path


def require_dir(path: str | Path, what: str, fix: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise UserFacingError(f"{what} {path}: folder not found; {fix}")
    return path


def read_text_utf8(path: str | Path, what: str) -> str:
    """The text of `path` (a byte-order mark is dropped); one line naming the file and the first bad byte if it is
    not UTF-8."""
    path = require_file(path, what)
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UserFacingError(
            f"{what} {path}: not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); save it as UTF-8"
        ) from None


def check_utf8_texts(texts: Sequence[str], name: str) -> list[str]:
    """Texts given on the command line: a non-UTF-8 byte in argv arrives as a lone surrogate, which no tokenizer or
    file format takes."""
    for text in texts:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise UserFacingError(f"{name} {text!r}: not valid UTF-8 text; pass UTF-8 captions") from None
    return list(texts)


# ------------------------------------------------------------------------------------------------ numbers


def _interval(low: float | None, high: float | None, low_open: bool) -> str:
    left = "(" if low_open else "["
    return f"{left}{'-inf' if low is None else low}, {'inf)' if high is None else f'{high}]'}"


def check_finite_number(
    value: float | int | None,
    name: str,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
) -> float | int | None:
    """`value` itself when it is None or a finite number within [low, high] ((low, high] with `low_open`)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserFacingError(f"{name} {value!r}: must be a number")
    if not math.isfinite(value):
        raise UserFacingError(f"{name} {value}: must be a finite number in {_interval(low, high, low_open)}")
    below = low is not None and (value <= low if low_open else value < low)
    if below or (high is not None and value > high):
        raise UserFacingError(f"{name} {value}: out of range; must be in {_interval(low, high, low_open)}")
    return value


def check_seed(value: int | None, name: str) -> int | None:
    if value is not None and not 0 <= value < SEED_LIMIT:
        raise UserFacingError(f"{name} {value}: a seed must be an integer in 0..2**63-1")
    return value


# ------------------------------------------------------------------------------------------------ memory


def available_memory_bytes(device: Any = "cpu") -> int:
    """Memory an allocation can use now: the GPU's total for a CUDA device, else MemAvailable (Linux) or the
    physical memory."""
    if getattr(device, "type", str(device)).startswith("cuda"):
        import torch

        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _size(n_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n_bytes < 1000 or unit == "PB":
            return f"{n_bytes:.3g} {unit}"
        n_bytes /= 1000
    return f"{n_bytes:.3g} PB"


def check_fits_in_memory(n_bytes: float, what: str, fix: str, device: Any = "cpu") -> None:
    """Refuse work whose estimated memory exceeds MEMORY_FRACTION of what the device has."""
    limit = MEMORY_FRACTION * available_memory_bytes(device)
    if n_bytes > limit:
        raise UserFacingError(
            f"{what} needs about {_size(n_bytes)} of memory, more than the {_size(limit)} available here; {fix}"
        )


def decoding_bytes(identity: dict[str, Any], n_frames: int) -> float:
    """Memory of decoding one item of `n_frames` frames: the codec decoder's widest activation (channels x samples,
    float32, a few held at once) and the audio; DAC halves its channels at every upsampling stage."""
    kwargs = identity.get("model_kwargs") or {}
    width, rates = kwargs.get("decoder_dim"), kwargs.get("decoder_rates")
    per_frame = 64 * int(identity["hop_length"])
    if width and rates:
        length, per_frame = 1, width
        for i, rate in enumerate(rates):
            length *= rate
            per_frame = max(per_frame, (width // 2 ** (i + 1)) * length)
    return 4.0 * 4 * per_frame * n_frames


# ------------------------------------------------------------------------------------------------ arrays


def read_npz_arrays(path: str | Path, what: str, required: str, optional: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The arrays `required` (and those of `optional` present) of a .npz file; refuses a file that is not a .npz
    (zip of .npy), holds pickled objects, or whose required array would not fit in memory."""
    path = require_file(path, what)
    if not zipfile.is_zipfile(path):
        raise UserFacingError(f"{what} {path}: not a .npz file (numpy.savez); write it with numpy.savez")
    try:
        with zipfile.ZipFile(path) as archive:
            members = {Path(n).stem: n for n in archive.namelist() if n.endswith(".npy")}
            if required not in members:
                raise UserFacingError(f"{what} {path}: no '{required}' array; it holds {sorted(members) or 'none'}")
            with archive.open(members[required]) as handle:  # the header only: shape and dtype before any data
                version = np.lib.format.read_magic(handle)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else None
                shape, _, dtype = (read_header or np.lib.format.read_array_header_2_0)(handle)
        size = math.prod(shape) * dtype.itemsize
        check_fits_in_memory(size, f"{what} {path}: array '{required}' {shape}", "pass a smaller file")
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in (required, *optional) if key in data}
    except UserFacingError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        reason = " ".join(str(exc).split())[:120]
        raise UserFacingError(f"{what} {path}: unreadable .npz ({reason}); write it with numpy.savez") from None


def _check_names(values: np.ndarray | None, n: int, path: Path, key: str) -> list[str] | None:
    """An optional per-item string array (`captions`, `ids`): one string per item."""
    if values is None:
        return None
    if values.ndim != 1 or len(values) != n or values.dtype.kind not in "USO":
        raise UserFacingError(f"{path}: '{key}' must be {n} strings (one per item), got {values.dtype} {values.shape}")
    return [str(v) for v in values]


def check_codes_array(codes: np.ndarray, where: str, n_codebooks: int, codebook_size: int) -> np.ndarray:
    """codes (B, K, T) (or one item (K, T)) -> int64: integer dtype, 1 <= K <= n_codebooks, T >= 1, every code in
    0..codebook_size-1."""
    if codes.dtype.kind not in "iu":
        raise UserFacingError(
            f"{where}: codes have dtype {codes.dtype}; they must be integers (codec code indices), not cast from floats"
        )
    if codes.ndim < 2 or codes.shape[-1] < 1:
        raise UserFacingError(f"{where}: codes shaped {codes.shape} have no frames; they need (B, K, T) with T >= 1")
    if not 1 <= codes.shape[-2] <= n_codebooks:
        raise UserFacingError(f"{where}: {codes.shape[-2]} codebooks; the codec decodes 1..{n_codebooks}")
    if codes.size and (int(codes.min()) < 0 or int(codes.max()) >= codebook_size):
        raise UserFacingError(
            f"{where}: codes outside 0..{codebook_size - 1} (the codec's codebook size); were they made with "
            "another codec?"
        )
    return codes.astype(np.int64)


def load_codes_npz(
    path: str | Path, n_codebooks: int, codebook_size: int
) -> tuple[np.ndarray, list | None, list | None]:
    """(codes (B, K, T) int64, captions or None, ids or None) of a .npz written by `ssmttm generate --checkpoint`."""
    path = Path(path)
    arrays = read_npz_arrays(path, "--codes", "codes", ("captions", "ids"))
    codes = arrays["codes"]
    if codes.ndim != 3 or codes.shape[0] < 1:
        raise UserFacingError(f"--codes {path}: codes must be shaped (B, K, T) with B >= 1, got {codes.shape}")
    codes = check_codes_array(codes, f"--codes {path}", n_codebooks, codebook_size)
    captions = _check_names(arrays.get("captions"), len(codes), path, "captions")
    return codes, captions, _check_names(arrays.get("ids"), len(codes), path, "ids")


def load_latents_npz(path: str | Path, channels: int) -> tuple[np.ndarray, list | None, list | None]:
    """(latents (B, channels, T) float32, captions or None, ids or None): float, finite, B >= 1, T >= 1."""
    path = Path(path)
    arrays = read_npz_arrays(path, "--latents", "latents", ("captions", "ids"))
    latents = arrays["latents"]
    if latents.dtype.kind != "f":
        raise UserFacingError(f"--latents {path}: dtype {latents.dtype}; latents must be floating point")
    if latents.ndim != 3 or latents.shape[0] < 1 or latents.shape[1] != channels or latents.shape[2] < 1:
        raise UserFacingError(
            f"--latents {path}: latents shaped {latents.shape}; the codec expects (B, {channels}, T), B and T >= 1"
        )
    if not np.isfinite(latents).all():
        bad = int((~np.isfinite(latents)).sum())
        raise UserFacingError(f"--latents {path}: {bad} of {latents.size} values are NaN or infinite; fix the latents")
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, refused just below
        latents = latents.astype(np.float32)
    if not np.isfinite(latents).all():
        raise UserFacingError(f"--latents {path}: values overflow float32; fix the latents")
    captions = _check_names(arrays.get("captions"), len(latents), path, "captions")
    return latents, captions, _check_names(arrays.get("ids"), len(latents), path, "ids")


def read_json_file(path: str | Path, what: str) -> Any:
    """A UTF-8 JSON file's value; one line naming the file and the position of a syntax error."""
    path = Path(path)
    try:
        return json.loads(read_text_utf8(path, what))
    except json.JSONDecodeError as exc:
        raise UserFacingError(f"{what} {path}: not valid JSON ({exc}); rewrite or regenerate it") from None


def read_jsonl_rows(path: str | Path, what: str) -> list[dict[str, Any]]:
    """The rows of a UTF-8 JSON-lines file, each a JSON object (blank lines skipped)."""
    path = Path(path)
    rows = []
    for number, line in enumerate(read_text_utf8(path, what).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserFacingError(f"{what} {path}: line {number} is not valid JSON ({exc})") from None
        if not isinstance(row, dict):
            raise UserFacingError(f"{what} {path}: line {number} is a {type(row).__name__}, not a JSON object")
        rows.append(row)
    return rows


def read_json_object(path: str | Path, what: str) -> dict[str, Any]:
    """A UTF-8 JSON file whose value must be an object (the summaries and metrics the stages write)."""
    data = read_json_file(path, what)
    if not isinstance(data, dict):
        raise UserFacingError(f"{what} {path}: holds a {type(data).__name__}, not a JSON object; regenerate it")
    return data

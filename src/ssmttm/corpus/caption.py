"""caption: one caption per clip of a segment shard, from tags, an imported file, or an audio-language model.

Modes (`caption.mode`):
- `tags`: a deterministic sentence from the clip's tags (caption_templates), phrasing picked by a seeded hash.
- `import`: captions looked up in a CSV/TSV, JSON, JSONL or Parquet file (e.g. the DiscoDiff Jamendo captions), by
  clip id first, then track id. A clip found in neither is an error, or gets its tag caption when
  `import_missing: tags`.
- `model`: an audio-language model (caption_model, Qwen2-Audio) listens to each clip; an empty reply falls back to
  the tag caption (recorded as such in `caption_source`).

Output (docs/ARTIFACTS.md): captions.jsonl (`clip_id`, `track_id`, `caption`, `caption_source`) and provenance.json,
written through `atomic_dir`.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ssmttm import stand_ins
from ssmttm.artifacts import (
    atomic_dir,
    read_jsonl,
    remove_stale_temporaries_in,
    sha256_file,
    write_jsonl,
    write_provenance,
)
from ssmttm.audio import load_mono
from ssmttm.config import dataclass_to_dict, load_params, section_to_dataclass
from ssmttm.corpus.caption_model import CaptionModelConfig
from ssmttm.corpus.caption_templates import tag_caption
from ssmttm.errors import UserFacingError
from ssmttm.progress import progress

log = logging.getLogger(__name__)

MODES = ("tags", "import", "model")
IMPORT_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet")


@dataclass(frozen=True)
class CaptionConfig:
    mode: str = "tags"  # tags | import | model
    import_path: str | None = None
    import_id_column: str = "id"
    import_caption_column: str = "caption"
    import_missing: str = "error"  # error | tags
    model: CaptionModelConfig = field(default_factory=CaptionModelConfig)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UserFacingError(f"caption.mode = {self.mode!r}; must be one of {', '.join(MODES)}")


# A model runner maps a batch of (N,) float32 clips at its `sample_rate` to one caption each
# (caption_model.AudioCaptioner; tests may inject another).
ModelRunner = Callable[[list[np.ndarray]], list[str]]


def _clean(text: Any) -> str:
    """One line of printable text: whitespace runs collapsed, control characters dropped."""
    if text is None:
        return ""
    printable = "".join(ch for ch in str(text) if ch.isspace() or unicodedata.category(ch)[0] != "C")
    return " ".join(printable.split())


def _read_clips(clips_dir: Path) -> list[dict[str, Any]]:
    path = clips_dir / "clips.jsonl"
    if not path.is_file():
        raise UserFacingError(f"{path}: not found; run `ssmttm segment` for this shard first")
    return sorted(read_jsonl(path), key=lambda r: r["clip_id"])


# ----------------------------------------------------------------------------------------------- import


def _records(path: Path, id_col: str, cap_col: str) -> list[tuple[Any, Any]]:
    """(id, caption) pairs in file order, whatever the format."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
        _check_columns(path, names, id_col, cap_col)
        table = pq.read_table(path, columns=[id_col, cap_col])
        return list(zip(table.column(id_col).to_pylist(), table.column(cap_col).to_pylist(), strict=True))
    if suffix in (".csv", ".tsv"):
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ",")
            _check_columns(path, reader.fieldnames or [], id_col, cap_col)
            return [(row[id_col], row[cap_col]) for row in reader]
    if suffix == ".jsonl":
        rows = read_jsonl(path)
    elif suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):  # id -> caption, or id -> {caption column: ...}
            return [(k, v.get(cap_col) if isinstance(v, dict) else v) for k, v in data.items()]
        if not isinstance(data, list):
            raise UserFacingError(f"{path}: expected a JSON list of objects or an object mapping id -> caption")
        rows = data
    else:
        raise UserFacingError(f"caption.import_path = {path}: unsupported format; use one of {IMPORT_SUFFIXES}")
    for row in rows[:1]:
        _check_columns(path, list(row) if isinstance(row, dict) else [], id_col, cap_col)
    return [(row.get(id_col), row.get(cap_col)) for row in rows if isinstance(row, dict)]


def _check_columns(path: Path, names: list[str], id_col: str, cap_col: str) -> None:
    missing = [c for c in (id_col, cap_col) if c not in names]
    if missing:
        raise UserFacingError(
            f"{path}: no column {missing[0]!r} (columns: {', '.join(map(str, names))}); set "
            "caption.import_id_column / caption.import_caption_column"
        )


def load_caption_table(path: str | Path | None, id_col: str = "id", cap_col: str = "caption") -> dict[str, str]:
    """id -> caption from an import file; ids as strings, first occurrence wins, empty captions skipped."""
    if not path:
        raise UserFacingError("caption.mode = 'import' needs caption.import_path (a CSV, JSON, JSONL or Parquet file)")
    path = Path(path)
    if not path.is_file():
        raise UserFacingError(f"caption.import_path = {path}: file not found")
    try:
        records = _records(path, id_col, cap_col)
    except (ValueError, csv.Error, OSError) as exc:  # bad JSON, not UTF-8, a broken Parquet file...
        message = " ".join(str(exc).split())[:200]
        raise UserFacingError(
            f"caption.import_path = {path}: cannot be read as {path.suffix.lstrip('.').upper()} "
            f"({type(exc).__name__}: {message}); fix or re-export the file"
        ) from exc
    table: dict[str, str] = {}
    duplicates = 0
    for raw_id, raw_caption in records:
        caption = _clean(raw_caption)
        if raw_id is None or not caption:
            continue
        key = str(raw_id).strip()
        if key in table:
            duplicates += 1
            continue
        table[key] = caption
    if duplicates:
        log.warning("%s: %d duplicate ids; the first caption of each was kept", path, duplicates)
    return table


def _import_captions(clips: list[dict[str, Any]], cfg: CaptionConfig, seed: int) -> list[dict[str, Any]]:
    table = load_caption_table(cfg.import_path, cfg.import_id_column, cfg.import_caption_column)
    rows, missing = [], []
    for clip in clips:
        caption = table.get(clip["clip_id"]) or table.get(str(clip["track_id"]))
        if caption is not None:
            rows.append(_row(clip, caption, "import"))
        elif cfg.import_missing == "tags":
            rows.append(_row(clip, tag_caption(clip.get("tags"), clip["clip_id"], seed), "tags"))
        else:
            missing.append(clip["clip_id"])
    if missing:
        raise UserFacingError(
            f"{cfg.import_path}: no caption for clip {missing[0]} (nor its track {_track_of(clips, missing[0])}); "
            f"{len(missing)} of {len(clips)} clips missing; set caption.import_missing: tags to fall back to tag "
            "captions, or check caption.import_id_column"
        )
    return rows


def _track_of(clips: list[dict[str, Any]], clip_id: str) -> str:
    return next(str(c["track_id"]) for c in clips if c["clip_id"] == clip_id)


# ----------------------------------------------------------------------------------------------- model


def _model_captions(
    clips: list[dict[str, Any]], cfg: CaptionConfig, seed: int, runner: ModelRunner
) -> list[dict[str, Any]]:
    rate = int(runner.sample_rate)
    batch_size = cfg.model.batch_size
    rows: list[dict[str, Any]] = []
    batches = [clips[i : i + batch_size] for i in range(0, len(clips), batch_size)]
    for batch in progress(batches, "caption", "batch"):
        audios = [load_mono(c["audio_path"], rate) for c in batch]  # each (N,) at the model's rate
        texts = runner(audios)
        if len(texts) != len(batch):
            raise RuntimeError(f"caption model returned {len(texts)} captions for {len(batch)} clips")
        for clip, text in zip(batch, texts, strict=True):
            text = _clean(text)
            if text:
                rows.append(_row(clip, text, "model"))
            else:
                log.warning("%s: the model returned an empty caption; using the tag caption", clip["clip_id"])
                rows.append(_row(clip, tag_caption(clip.get("tags"), clip["clip_id"], seed), "tags"))
    return rows


# ----------------------------------------------------------------------------------------------- stage


def _row(clip: dict[str, Any], caption: str, source: str) -> dict[str, Any]:
    return {"clip_id": clip["clip_id"], "track_id": clip["track_id"], "caption": caption, "caption_source": source}


def caption_shard(
    clips_dir: str | Path,
    cfg: CaptionConfig,
    out_dir: str | Path,
    seed: int = 0,
    model_runner: ModelRunner | None = None,
) -> Path:
    """Caption every clip of `clips_dir/clips.jsonl` into `out_dir/captions.jsonl`; returns `out_dir`.

    `model_runner` replaces the configured model in mode `model` (it must have a `sample_rate` attribute).
    """
    clips_dir, out_dir = Path(clips_dir), Path(out_dir)
    remove_stale_temporaries_in(out_dir.parent)  # what killed runs left (kill -9 skips every clean-up)
    clips = _read_clips(clips_dir)
    inputs = {"clips.jsonl": sha256_file(clips_dir / "clips.jsonl")}
    model_info = None
    if cfg.mode == "tags":
        rows = [_row(c, tag_caption(c.get("tags"), c["clip_id"], seed), "tags") for c in clips]
    elif cfg.mode == "import":
        rows = _import_captions(clips, cfg, seed)
        inputs["import"] = sha256_file(cfg.import_path)
    else:
        if model_runner is None and clips:
            from ssmttm.corpus.caption_model import load_captioner

            model_runner = load_captioner(cfg.model)
        rows = _model_captions(clips, cfg, seed, model_runner) if clips else []
        describe = getattr(model_runner, "describe", None)
        model_info = describe() if describe else None
    rows.sort(key=lambda r: r["clip_id"])
    with atomic_dir(out_dir) as tmp:
        write_jsonl(tmp / "captions.jsonl", rows)
        write_provenance(
            tmp,
            "caption",
            dataclass_to_dict(cfg),
            seed,
            inputs=inputs,
            model=model_info,
            counts=dict(sorted(Counter(r["caption_source"] for r in rows).items())),
            **stand_ins.provenance_fields(
                stand_ins.inherited([clips_dir]),
                {f"caption.model ({cfg.model.name_or_path})": getattr(model_runner, "stand_in", None)},
            ),
        )
    log.info("%s: %d captions", out_dir, len(rows))
    return out_dir


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clips", required=True, help="segment output folder of one shard (has clips.jsonl)")
    parser.add_argument("--out", required=True, help="output folder, e.g. data/caption/shard-00003")


def run_from_args(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    cfg = section_to_dataclass(CaptionConfig, params.get("caption"))
    caption_shard(args.clips, cfg, args.out, seed=int(params.get("seed", 0)))
    return 0

"""Check 1: every pretrained weight the profile will load is on this machine (and has the pinned sha256).

Only what the profile uses is checked: DAC when `codec.mode: pretrained`, Demucs when vocal removal is on, the
caption model when `caption.mode: model`, the text encoders always, the evaluation networks that have a path. Weights
the data or training stages need are failures when missing; evaluation weights are warnings (the evaluate stage
then reports those metrics as "not computed"). Nothing is downloaded: Hugging Face models are looked up in the local
cache only, and each failure names the setting, the place looked and the command that fetches the files.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

from ssmttm.artifacts import sha256_file
from ssmttm.errors import UserFacingError
from ssmttm.hf_cache import hf_cached_model, missing_model_files
from ssmttm.preflight.context import Context, tolerant_dataclass
from ssmttm.preflight.report import FAIL, PASS, SKIP, WARN, Check

GROUP = "weights"
# Evaluation checkpoints published on the Hugging Face hub, by file name: (repo, file).
EVAL_HF_FILES = {
    "music_audioset_epoch_15_esc_90.14.pt": "lukewys/laion_clap",
    "630k-audioset-fusion-best.pt": "lukewys/laion_clap",
}


def weight_checks(ctx: Context) -> list[Check]:
    return [
        codec_check(ctx),
        vocal_removal_check(ctx),
        caption_model_check(ctx),
        *text_encoder_checks(ctx),
        *evaluation_checks(ctx),
    ]


# ----------------------------------------------------------------------------------------------- helpers


def sha256_problem(path: Path, expected: str | None, setting: str) -> str | None:
    """Why `path` is not the pinned file (naming both hashes), or None when it is (or nothing is pinned)."""
    if not expected:
        return None
    actual = sha256_file(path)
    if actual == expected.lower():
        return None
    return f"{path}: sha256 is {actual}, but {setting} expects {expected.lower()}"


def hf_download_command(repo: str, setting: str) -> str:
    local = f"models/{repo.rsplit('/', 1)[-1]}"
    return (
        f"on a machine with internet run `hf download {repo}` (fills the Hugging Face cache; copy it to this "
        f"machine's HF_HOME), or `hf download {repo} --local-dir {local}` and set {setting}: {local}"
    )


def model_folder_check(name: str, setting: str, folder_or_repo: str, ctx: Context, required: bool) -> Check:
    """A transformers model given as a local folder or a Hugging Face repo id (looked up in the local cache)."""
    folder = ctx.path(folder_or_repo)
    looks_like_path = folder_or_repo.startswith(("/", ".", "~")) or folder_or_repo.count("/") > 1
    if folder.is_dir() or looks_like_path:
        where = f"folder {folder}"
    else:
        cached = hf_cached_model(folder_or_repo)
        from huggingface_hub import constants

        where = f"the Hugging Face cache {constants.HF_HUB_CACHE}"
        folder = cached if cached is not None else Path(constants.HF_HUB_CACHE)
        if cached is None:
            return _missing(setting, f"{name} {folder_or_repo!r} is not in {where}", folder_or_repo, required)
    if not folder.is_dir():
        return _missing(setting, f"{name} folder {folder} does not exist", folder_or_repo, required)
    missing = missing_model_files(folder)
    if missing:
        return _missing(setting, f"{name} in {where} lacks {', '.join(missing)}", folder_or_repo, required)
    return Check(GROUP, setting, PASS, f"{name} {folder_or_repo!r} found ({folder})")


def _missing(setting: str, detail: str, repo: str, required: bool) -> Check:
    is_folder = repo.startswith(("/", ".", "~")) or repo.count("/") > 1
    fix = f"point {setting} at a folder with config.json and the weights" if is_folder else None
    fix = fix or hf_download_command(repo, setting)
    return Check(GROUP, setting, FAIL if required else WARN, detail, fix)


# ----------------------------------------------------------------------------------------------- DAC


def codec_check(ctx: Context) -> Check:
    from ssmttm.codec.pretrained import PretrainedConfig, cache_path, fetch_command

    setting = "codec.pretrained.path"
    if ctx.get("codec.mode", "train") != "pretrained":
        return Check(GROUP, setting, SKIP, f"not needed: codec.mode is {ctx.get('codec.mode')!r} (trained here)")
    cfg = tolerant_dataclass(PretrainedConfig, ctx.get("codec.pretrained", {}))
    try:
        path = ctx.path(cfg.path) if cfg.path else cache_path(cfg)
    except UserFacingError as exc:
        return Check(GROUP, setting, FAIL, str(exc), "fix codec.pretrained.model_type / model_bitrate")
    fetch = f"on a machine with internet run `.venv/bin/{fetch_command(cfg)}` and copy {cache_path(cfg).name} here"
    if not path.is_file():
        where = f"{setting} = {cfg.path}" if cfg.path else f"{setting} is null: DAC's cache"
        if cfg.download:
            return Check(
                GROUP,
                setting,
                WARN,
                f"{path} not found ({where}); the codec job will download it",
                "that job needs internet (codec.pretrained.download: true); compute nodes often have none: " + fetch,
            )
        return Check(GROUP, setting, FAIL, f"DAC weights {path} not found ({where})", fetch + f" (or set {setting})")
    problem = sha256_problem(path, cfg.sha256, "codec.pretrained.sha256")
    if problem:
        return Check(GROUP, setting, FAIL, problem, "fetch the file again, or correct codec.pretrained.sha256")
    pinned = "sha256 matches codec.pretrained.sha256" if cfg.sha256 else "codec.pretrained.sha256 is null: not pinned"
    return Check(GROUP, setting, PASS, f"DAC weights {path} ({pinned})")


# ----------------------------------------------------------------------------------------------- Demucs


def demucs_cached_files(model: str) -> list[Path] | None:
    """The files demucs' `get_model(model)` would read from the local caches (Hugging Face first, then the legacy
    torch.hub checkpoints, as demucs.pretrained does), or None when neither set is complete."""
    import torch
    import yaml
    from demucs.hf import DEFAULT_NAMESPACE, hf_repo_name
    from demucs.pretrained import REMOTE_ROOT
    from huggingface_hub import try_to_load_from_cache

    repo = f"{DEFAULT_NAMESPACE}/{hf_repo_name(model)}"
    bag = try_to_load_from_cache(repo, f"{model}.yaml")
    if isinstance(bag, str):
        files = [
            try_to_load_from_cache(repo, f"{sig}.safetensors")
            for sig in yaml.safe_load(Path(bag).read_text())["models"]
        ]
        if all(isinstance(f, str) for f in files):
            return [Path(bag), *(Path(f) for f in files)]
    legacy_bag = REMOTE_ROOT / f"{model}.yaml"
    if not legacy_bag.is_file():
        return None
    names = {line.split("-", 1)[0]: line.strip() for line in (REMOTE_ROOT / "files.txt").read_text().splitlines()}
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    files = [checkpoints / names.get(sig, f"{sig}.th") for sig in yaml.safe_load(legacy_bag.read_text())["models"]]
    return files if all(f.is_file() for f in files) else None


def vocal_removal_check(ctx: Context) -> Check:
    setting = "segment.vocal_removal"
    if not ctx.get("segment.vocal_removal.enabled", False):
        return Check(GROUP, setting, SKIP, "not needed: vocal removal is off")
    model = ctx.get("segment.vocal_removal.model", "htdemucs")
    weights_path = ctx.get("segment.vocal_removal.weights_path")
    if weights_path:
        path = ctx.path(weights_path)
        if path.exists():
            return Check(GROUP, f"{setting}.weights_path", PASS, f"demucs '{model}' weights at {path}")
        return Check(
            GROUP,
            f"{setting}.weights_path",
            FAIL,
            f"demucs '{model}' weights {path} not found",
            f"point segment.vocal_removal.weights_path at a demucs '{model}' .th/.safetensors file or bag folder, "
            "or set it to null to use demucs' caches",
        )
    if importlib.util.find_spec("demucs") is None:
        return Check(GROUP, setting, FAIL, "demucs is not installed", "pip install -e '.[vocals]' (make setup does)")
    from demucs.hf import DEFAULT_NAMESPACE, hf_repo_name

    from ssmttm.corpus.vocals import _cache_places

    files = demucs_cached_files(model)
    if files is None:
        repo = f"{DEFAULT_NAMESPACE}/{hf_repo_name(model)}"
        return Check(
            GROUP,
            f"{setting}.model",
            FAIL,
            f"demucs '{model}' weights are not in the local caches (looked in {_cache_places(model)})",
            f"on a machine with internet run `hf download {repo}` and copy the Hugging Face cache to this machine's "
            "HF_HOME, or set segment.vocal_removal.weights_path to a downloaded folder",
        )
    return Check(GROUP, f"{setting}.model", PASS, f"demucs '{model}' cached ({files[0].parent})")


# ----------------------------------------------------------------------------------------------- transformers


def caption_model_check(ctx: Context) -> Check:
    setting = "caption.model.name_or_path"
    mode = ctx.get("caption.mode", "tags")
    if mode != "model":
        return Check(GROUP, setting, SKIP, f"not needed: caption.mode is {mode!r}")
    name = ctx.get(setting, "Qwen/Qwen2-Audio-7B-Instruct")
    return model_folder_check("caption model", setting, name, ctx, required=True)


def text_encoder_checks(ctx: Context) -> list[Check]:
    """text.encoder, and refiner_text.encoder when it names another encoder (null means text.encoder)."""
    lm_encoder = ctx.get("text.encoder", "google/flan-t5-base")
    checks = [text_encoder_check(ctx, "text.encoder", lm_encoder)]
    refiner_encoder = ctx.get("refiner_text.encoder")
    if refiner_encoder and refiner_encoder != lm_encoder:
        checks.append(text_encoder_check(ctx, "refiner_text.encoder", refiner_encoder))
    return checks


def text_encoder_check(ctx: Context, setting: str, name: str) -> Check:
    from ssmttm.errors import MissingWeightsError
    from ssmttm.text.encoder import ALIASES, WHEEL_ALIASES, resolve_encoder

    looks_like_path = name.startswith(("/", ".", "~")) or name.count("/") > 1
    try:
        source = resolve_encoder(str(ctx.path(name)) if looks_like_path else name)
    except MissingWeightsError as exc:
        fix = "see the message" if name in WHEEL_ALIASES else "create that folder, or name a Hugging Face repo id"
        return Check(GROUP, setting, FAIL, str(exc), fix)
    if name in WHEEL_ALIASES:
        return Check(GROUP, setting, PASS, f"{name!r} from the {WHEEL_ALIASES[name][1]} wheel ({source})")
    return model_folder_check("text encoder", setting, ALIASES.get(name, source), ctx, required=True)


# ----------------------------------------------------------------------------------------------- evaluation


def evaluation_checks(ctx: Context) -> list[Check]:
    from ssmttm.evaluate.embeddings import PACKAGES, ModelWeights

    checks = []
    for name in PACKAGES:
        spec = tolerant_dataclass(ModelWeights, ctx.get(f"evaluate.models.{name}", {}))
        checks.append(evaluation_check(ctx, name, spec))
    return checks


def evaluation_check(ctx: Context, name: str, spec) -> Check:
    """One evaluation network, judged by the evaluate stage's own rule (embeddings.checked_weights)."""
    from ssmttm.evaluate.embeddings import HOW_TO_ENABLE, METRICS_OF_MODEL, PACKAGES, Unavailable, checked_weights

    setting = f"evaluate.models.{name}.weights_path"
    metrics = ", ".join(METRICS_OF_MODEL[name])
    if spec.weights_path is None:
        return Check(GROUP, setting, SKIP, f"not configured: {metrics} will be reported 'not computed'")
    resolved = dataclasses.replace(spec, weights_path=str(ctx.path(spec.weights_path)))
    try:
        weights = checked_weights(name, resolved)
    except UserFacingError as exc:  # a sha256 mismatch: the evaluate stage stops on it
        return Check(GROUP, setting, FAIL, str(exc), f"fetch the file again, or correct evaluate.models.{name}.sha256")
    if isinstance(weights, Unavailable):
        file_name = Path(spec.weights_path).name
        fix = HOW_TO_ENABLE[name]
        if file_name in EVAL_HF_FILES:
            fix = (
                f"on a machine with internet run `hf download {EVAL_HF_FILES[file_name]} {file_name} --local-dir "
                f"{Path(spec.weights_path).parent}`; " + fix
            )
        return Check(GROUP, setting, WARN, f"{weights.reason.split(';')[0]}: {metrics} will be 'not computed'", fix)
    if importlib.util.find_spec(PACKAGES[name]) is None:
        return Check(
            GROUP,
            setting,
            WARN,
            f"weights found but {PACKAGES[name]} is not installed: {metrics} 'not computed'",
            HOW_TO_ENABLE[name],
        )
    pinned = "sha256 matches" if spec.sha256 else f"sha256 not pinned (evaluate.models.{name}.sha256: {weights[1]})"
    return Check(GROUP, setting, PASS, f"{weights[0]} ({pinned})")

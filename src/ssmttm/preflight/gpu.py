"""Check 4: every stage whose device setting insists on a GPU ("cuda", "gpu", "cuda:N") will find one.

"auto" takes the GPU when there is one and the CPU otherwise, so it is never a failure; only a hard request without
a visible GPU is. A cluster's login node usually has no GPU: run the preflight inside a GPU job, or pass
`--no-gpu-check` there and run it again in one.
"""

from __future__ import annotations

from ssmttm.preflight.context import Context
from ssmttm.preflight.report import FAIL, PASS, SKIP, Check

GROUP = "gpu"
GPU_JOB_HINT = "run the preflight in a GPU job (`srun --gpus=1 make preflight`), or pass --no-gpu-check on a login node"


def visible_gpus() -> list[str]:
    """Names of the CUDA devices torch sees (empty without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def device_settings(ctx: Context) -> dict[str, str]:
    """setting -> value, for the device settings of the stages this profile runs."""
    settings = {
        "text.device": ctx.get("text.device", "auto"),
        "tokenize.device": ctx.get("tokenize.device", "auto"),
        "train_lm.accelerator": ctx.get("train_lm.accelerator", "auto"),
        "train_refiner.device": ctx.get("train_refiner.device", "auto"),
        "generate.device": ctx.get("generate.device", "auto"),
        "evaluate.models.device": ctx.get("evaluate.models.device", "cpu"),
    }
    if ctx.get("segment.vocal_removal.enabled", False):
        settings["segment.vocal_removal.device"] = ctx.get("segment.vocal_removal.device", "auto")
    if ctx.get("caption.mode") == "model":
        settings["caption.model.device"] = ctx.get("caption.model.device", "auto")
    if ctx.get("codec.mode") == "train":  # a pretrained codec is only converted, on the CPU
        settings["codec.device"] = ctx.get("codec.device", "cpu")
    return settings


def is_hard_gpu_request(value: str) -> bool:
    value = str(value).lower()
    return value in ("cuda", "gpu") or value.startswith("cuda:")


def gpu_checks(ctx: Context, gpus: list[str] | None = None, enabled: bool = True) -> list[Check]:
    """`gpus`: the visible devices (None: ask torch); tests pass [] to stand for a machine without CUDA."""
    settings = device_settings(ctx)
    hard = sorted(name for name, value in settings.items() if is_hard_gpu_request(value))
    if not enabled:
        return [Check(GROUP, "devices", SKIP, f"skipped (--no-gpu-check); settings asking for a GPU: {hard or 'none'}")]
    gpus = visible_gpus() if gpus is None else gpus
    seen = f"{len(gpus)} visible: {', '.join(gpus)}" if gpus else "no GPU visible to torch"
    checks = [Check(GROUP, "torch.cuda", PASS, seen)]
    for name in hard:
        if gpus:
            checks.append(Check(GROUP, name, PASS, f"{settings[name]!r}: a GPU is visible"))
        else:
            checks.append(
                Check(GROUP, name, FAIL, f"{settings[name]!r} but {seen}", f"{GPU_JOB_HINT}; or set it to auto")
            )
    checks.extend(train_devices_check(ctx, settings, gpus))
    return checks


def train_devices_check(ctx: Context, settings: dict[str, str], gpus: list[str]) -> list[Check]:
    """train_lm.devices: a number of GPUs larger than the job has makes Lightning stop at start-up."""
    devices = ctx.get("train_lm.devices", 1)
    if not gpus or not is_hard_gpu_request(settings["train_lm.accelerator"]) or not isinstance(devices, int):
        return []
    if devices <= len(gpus):
        return [Check(GROUP, "train_lm.devices", PASS, f"{devices} GPU(s) asked, {len(gpus)} visible")]
    return [
        Check(
            GROUP,
            "train_lm.devices",
            FAIL,
            f"{devices} GPUs asked but {len(gpus)} visible",
            f"run in a job with {devices} GPUs (`srun --gpus={devices} make preflight`) or lower train_lm.devices",
        )
    ]

"""Build tiny random stand-ins of every pretrained model the paper profile loads, where its loading code looks.

    python scripts/standins/make_all.py --out DIR

DIR/hf/                    a Hugging Face hub cache (export HF_HUB_CACHE=DIR/hf HF_HUB_OFFLINE=1):
                           Qwen/Qwen2-Audio-7B-Instruct, google/flan-t5-base, google/flan-t5-large,
                           adefossez/HTDemucs (demucs' get_model('htdemucs')), facebook/musicgen-small
DIR/torch/                 TORCH_HOME (empty: nothing of the paper profile is read from torch.hub when the Hugging Face
                           cache has it; set so that no real checkpoint of the machine's is picked up)
DIR/home/                  HOME: .cache/descript/dac/weights_44khz_8kbps_0.0.1.pth (codec.pretrained.path null)
DIR/models/eval/           evaluate.models weights files, relative to the workspace (link WORKSPACE/models to it):
                           vggish-10086976.pth. PaSST, CLAP and OpenL3 need packages that cannot be installed
                           here (hear21passt pulls torchvision and a CUDA torch, laion-clap an older numpy, openl3
                           tensorflow): no stand-in, their metrics are "not computed".
DIR/env.sh                 the exports above, for `source`
DIR/standins.json          what was built: path and sha256 of every file

Every stand-in folder holds a STANDIN.txt: random weights for plumbing tests, nothing computed from them is a result.
Seeded and deterministic: a rebuild writes the same bytes (standins.json lists them), and replaces each stand-in
whole.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from scripts.standins import common, dac44, htdemucs, qwen2_audio, t5, vggish  # noqa: E402

SEED = 0
NOT_BUILT = {
    "passt": "hear21passt cannot be installed here: it needs timm, which pulls torchvision and a CUDA torch",
    "clap": "laion-clap cannot be installed here: it pins an older numpy (1.x) and needs torchvision",
    "openl3": "openl3 cannot be installed here: it needs tensorflow and downloads its weights while building",
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _files(root: Path, folder: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): _sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def build_hf(hub: Path) -> dict[str, Path]:
    """The Hugging Face stand-ins: repo id -> snapshot folder."""
    built = {}
    with common.hf_snapshot(hub, qwen2_audio.REPO_ID) as snapshot:
        # The real processor's window and mel bins (30 s, 128): clips are 30 s, and the model hears all of them.
        qwen2_audio.build_tiny_qwen2_audio(snapshot, mel_bins=128, window_s=30, seed=SEED)
        common.write_label(snapshot, "caption model", "Qwen2-Audio-7B-Instruct (Qwen2AudioForConditionalGeneration)")
    built[qwen2_audio.REPO_ID] = common.snapshot_path(hub, qwen2_audio.REPO_ID)
    for repo_id, real in t5.ENCODERS.items():
        with common.hf_snapshot(hub, repo_id) as snapshot:
            t5.build_tiny_t5_encoder(snapshot, seed=SEED)
            common.write_label(snapshot, f"text encoder {repo_id}", f"{real}, T5EncoderModel")
        built[repo_id] = common.snapshot_path(hub, repo_id)
    with common.hf_snapshot(hub, htdemucs.REPO_ID) as snapshot:
        htdemucs.build_tiny_htdemucs(snapshot, seed=SEED)
        common.write_label(snapshot, "Demucs htdemucs (vocal removal)", "htdemucs (HTDemucs, bag of one model)")
    built[htdemucs.REPO_ID] = common.snapshot_path(hub, htdemucs.REPO_ID)
    musicgen = build_musicgen(hub)
    if musicgen is not None:
        built[musicgen[0]] = musicgen[1]
    return built


def build_musicgen(hub: Path) -> tuple[str, Path] | None:
    """facebook/musicgen-small from engineer H2's builder (scripts/standins/musicgen.py), when it is there."""
    try:
        from scripts.standins import musicgen
    except ImportError as exc:
        print(f"facebook/musicgen-small: not built ({exc}); the MusicGen baseline will say its weights are missing")
        return None
    repo_id = getattr(musicgen, "REPO_ID", "facebook/musicgen-small")
    with common.hf_snapshot(hub, repo_id) as snapshot:
        musicgen.save_tiny_musicgen(snapshot, seed=SEED)
        common.write_label(snapshot, "MusicGen baseline", "MusicGen-small (MusicgenForConditionalGeneration)")
    return repo_id, common.snapshot_path(hub, repo_id)


def build_all(out: Path) -> dict:
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    hub, torch_home, home, models = out / "hf", out / "torch", out / "home", out / "models"
    torch_home.mkdir(exist_ok=True)
    started = time.monotonic()
    report: dict = {"seed": SEED, "standins": {}, "not_built": NOT_BUILT}
    for repo_id, snapshot in build_hf(hub).items():
        report["standins"][repo_id] = _files(out, snapshot)

    with common.replaced_dir(home / dac44.CACHE_SUBDIR) as tmp_dac:
        dac44.build_tiny_dac44(tmp_dac, seed=SEED)
        common.write_label(tmp_dac, "pretrained codec (codec.mode: pretrained)", "DAC 44 kHz 8 kbps 0.0.1")
    report["standins"]["descript/dac 44khz 8kbps 0.0.1"] = _files(out, home / dac44.CACHE_SUBDIR)

    with common.replaced_dir(models / "eval") as tmp_eval:
        vggish.build_random_vggish(tmp_eval / vggish.FILE_NAME, seed=SEED)
        common.write_label(tmp_eval, "evaluation network VGGish (fd_vggish)", "VGGish, torchvggish state dict")
    report["standins"]["evaluate.models.vggish"] = _files(out, models / "eval")

    env = (
        "# Written by scripts/standins/make_all.py: point every loader at the random stand-ins.\n"
        f"export HF_HUB_CACHE={hub}\nexport HF_HUB_OFFLINE=1\nexport TRANSFORMERS_OFFLINE=1\n"
        f"export TORCH_HOME={torch_home}\nexport HOME={home}\n"
    )
    (out / "env.sh").write_text(env)
    (out / "standins.json").write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    print(f"stand-ins in {out} ({time.monotonic() - started:.1f} s); source {out / 'env.sh'} to use them")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder to write the stand-ins into")
    args = parser.parse_args(argv)
    build_all(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

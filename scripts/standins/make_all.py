"""Build tiny random stand-ins of every pretrained model the paper profile loads, where its loading code looks.

    python scripts/standins/make_all.py --out DIR

DIR/hf/                    a Hugging Face hub cache (export HF_HUB_CACHE=DIR/hf HF_HUB_OFFLINE=1):
                           Qwen/Qwen2-Audio-7B-Instruct, google/flan-t5-base, google/flan-t5-large,
                           adefossez/HTDemucs (demucs' get_model('htdemucs')), facebook/musicgen-small,
                           roberta-base (LAION-CLAP's text encoder: 768 wide, 1 layer), bert-base-uncased and
                           facebook/bart-base (tokenizers only: laion_clap loads them while importing)
DIR/torch/                 TORCH_HOME (empty: nothing of the paper profile is read from torch.hub when the Hugging Face
                           cache has it; set so that no real checkpoint of the machine's is picked up)
DIR/home/                  HOME: .cache/descript/dac/weights_44khz_8kbps_0.0.1.pth (codec.pretrained.path null)
DIR/models/eval/           evaluate.models weights files, relative to the workspace (link WORKSPACE/models to it):
                           vggish-10086976.pth; passt-s-f128-20sec-p16-s10-ap474-swa.pt and
                           passt-s-f128-p16-s10-ap.476-swa.pt (tiny PaSST: 64 wide, hear21passt installed without
                           timm: ssmttm.evaluate.passt_import); music_audioset_epoch_15_esc_90.14.pt (HTSAT-base)
                           and 630k-audioset-fusion-best.pt (HTSAT-tiny, fusion): LAION-CLAP with a tiny HTSAT (16
                           wide, one block per stage; the loaders of both read the sizes from the tensors, so the
                           release files load as before) (scripts/standins/clap.py; laion-clap without its numpy<2 pin,
                           torchvision kept apart: ssmttm.evaluate.clap_import). OpenL3 cannot be installed here
                           (NOT_BUILT says why): no stand-in, its metrics are "not computed".
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

from scripts.standins import clap as clap_standin  # noqa: E402
from scripts.standins import common, dac44, htdemucs, qwen2_audio, t5, vggish  # noqa: E402
from scripts.standins import passt as passt_standin  # noqa: E402

SEED = 0
NOT_BUILT = {
    "openl3": "openl3 cannot be installed here: 0.4.2 (the latest) is an sdist whose setup.py downloads its 12 .h5 "
    "weight files from github.com/marl/openl3 while building (unreachable offline); it pins h5py<3.0 (no wheel for "
    "Python 3.11) and needs tensorflow, whose protobuf>=5.28 conflicts with the constraints' protobuf 3.19.6 (`dac`)",
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
    built.update(clap_standin.build_hf_standins(hub, seed=SEED))  # roberta-base; bert and bart tokenizers
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
        if passt_standin.missing_package() is None:  # kl_passt (20 s) and kl_passt_sam (10 s)
            for length_s, file_name in passt_standin.FILE_NAMES.items():
                passt_standin.build_random_passt(tmp_eval / file_name, length_s, seed=SEED)
        else:
            report["not_built"] = {**report["not_built"], "passt": passt_standin.missing_package()}
            print(f"PaSST: not built ({report['not_built']['passt']}); kl_passt and kl_passt_sam: not computed")
        if clap_standin.missing_package() is None:  # clap_score, fad_clap (HTSAT-base); clap_score_sam (fusion)
            clap_standin.build_checkpoints(tmp_eval, hub, seed=SEED)
        else:
            report["not_built"] = {**report["not_built"], "clap": clap_standin.missing_package()}
            print(f"CLAP: not built ({report['not_built']['clap']}); its three metrics: not computed")
        common.write_label(
            tmp_eval,
            "evaluation networks VGGish (fd_vggish), PaSST 20 s (kl_passt), PaSST 10 s (kl_passt_sam), LAION-CLAP "
            "HTSAT-base (clap_score, fad_clap) and LAION-CLAP HTSAT-tiny fusion (clap_score_sam)",
            "VGGish (torchvggish state dict), PaSST-S (kkoutini/PaSST release state dicts) and LAION-CLAP "
            "(music_audioset_epoch_15_esc_90.14.pt, 630k-audioset-fusion-best.pt training checkpoints)",
        )
    report["standins"]["evaluate.models"] = _files(out, models / "eval")

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

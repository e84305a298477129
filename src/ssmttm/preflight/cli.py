"""The `ssmttm preflight` verb: arguments, the printed report, `--json`, and the exit code (1 on any failure)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ssmttm.config import load_params

CHECKS_HELP = """checks (one PASS / WARN / FAIL / SKIP line each, with what to do about a failure):
  weights   every pretrained weight the profile uses is on this machine, with its pinned sha256: DAC
            (codec.pretrained, codec.mode pretrained), Demucs (segment.vocal_removal), the caption model
            (caption.mode model), text.encoder and refiner_text.encoder (local folder or Hugging Face cache; never
            downloaded), evaluate.models.* (missing ones are warnings: those metrics are "not computed")
  inputs    corpus.mtg_jamendo.tar_sha256_path lists every archive used; manifest, caption and MusicCaps files exist
  disk      estimated data (source audio, clips, token shards, text cache, checkpoints, generated audio) against
            the free space of --data-root
  gpu       settings that insist on a GPU (cuda, gpu; "auto" never fails) against torch.cuda's devices; on a login
            node use --no-gpu-check, or run `srun --gpus=1 make preflight`
  network   the fetch stage's sources answer a HEAD request (MTG-Jamendo metadata, licences, first TAR; a sample
            of manifest URLs); local URLs must exist; the demo corpus needs no network
  plan      jobs, device, storage and GPU hours per stage: measured from results/bench/*.json where a GPU run
            exists, otherwise "not measured" and a FLOP estimate labelled as one
  slurm     (with --slurm-profile DIR) every rule's CPU and memory request in that Snakemake profile fits the
            largest node of its partition (`sinfo`): a job that fits none pends forever without a word; and the
            executor reads job states with squeue (sacct misses a scancelled job)

exit code: 0 when nothing failed (warnings allowed), 1 when a check failed, 2 for an invalid params file"""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = CHECKS_HELP
    parser.add_argument("profile", nargs="?", help="params file to check (default: --params, i.e. params.yaml)")
    parser.add_argument("--root", default=".", help="project root: relative paths in the profile start here")
    parser.add_argument("--data-root", help="where data/ and results/ are written (default: --root) for the disk check")
    parser.add_argument("--json", metavar="OUT", help="also write the report as JSON to OUT")
    parser.add_argument("--skip-network", action="store_true", help="do not contact the fetch stage's sources")
    parser.add_argument("--no-gpu-check", action="store_true", help="skip the GPU check (a login node without GPUs)")
    parser.add_argument("--network-timeout", type=float, default=10.0, help="seconds per URL (default 10)")
    parser.add_argument("--url-sample", type=int, default=5, help="manifest URLs tried (default 5)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="assumed GPU peak for FLOP estimates")
    parser.add_argument(
        "--slurm-profile", metavar="DIR", help="also check this Snakemake slurm profile's requests against `sinfo`"
    )
    parser.add_argument("--mfu", type=float, default=0.30, help="assumed model FLOPs utilisation (default 0.30)")


def run_from_args(args: argparse.Namespace) -> int:
    from ssmttm.preflight import run_preflight

    path = args.profile or args.params
    report = run_preflight(
        load_params(path),
        root=args.root,
        params_path=path,
        data_root=args.data_root,
        network=not args.skip_network,
        check_gpu=not args.no_gpu_check,
        network_timeout_s=args.network_timeout,
        url_sample=args.url_sample,
        peak_flops=args.peak_tflops * 1e12,
        mfu=args.mfu,
        slurm_profile=args.slurm_profile,
    )
    print(report.render())
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        print(f"report written to {out}")
    return 0 if report.ok else 1

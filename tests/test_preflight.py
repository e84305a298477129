"""`ssmttm preflight`: weights, inputs, disk, GPU and network checks, the plan, and the CLI's exit codes.

Nothing here needs the internet, a GPU or real weights: caches point at empty temporary folders, free space and
visible GPUs are passed in, and HTTP goes to a server on 127.0.0.1 in a thread.
"""

from __future__ import annotations

import copy
import hashlib
import http.server
import json
import socket
import threading
import time
from pathlib import Path

import pytest
import yaml

from ssmttm.cli import main
from ssmttm.config import load_params
from ssmttm.pipeline import STAGES
from ssmttm.preflight import run_preflight
from ssmttm.preflight.compute import kept_checkpoints
from ssmttm.preflight.network import probe_url
from ssmttm.preflight.report import FAIL, PASS, SKIP, WARN

ROOT = Path(__file__).resolve().parents[1]
PLENTY = 1e15  # free bytes that fit any plan: keeps the disk check out of tests about something else


@pytest.fixture(scope="module")
def demo() -> dict:
    return load_params(ROOT / "configs" / "demo.yaml")


@pytest.fixture(scope="module")
def paper() -> dict:
    return load_params(ROOT / "configs" / "paper.yaml")


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """No DAC, Hugging Face or torch.hub cache on this "machine"."""
    import huggingface_hub.constants
    import torch

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torch_hub"))
    yield
    torch.hub.set_dir(previous)


def check(report, name: str):
    found = [c for c in report.checks if c.name == name]
    assert found, f"no check named {name}: {[c.name for c in report.checks]}"
    return found[0]


def offline(params: dict, **kwargs):
    """The checks that do not depend on this machine's disk, GPUs or network."""
    options = dict(root=ROOT, network=False, check_gpu=False, free_bytes=PLENTY)
    return run_preflight(params, **{**options, **kwargs})


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------------------------- whole profiles


def test_demo_profile_passes_offline_without_gpu(demo):
    report = run_preflight(demo, root=ROOT, gpus=[], free_bytes=PLENTY)
    assert report.ok, report.render()
    assert check(report, "codec.pretrained.path").status == SKIP  # the demo trains its codec
    assert check(report, "caption.model.name_or_path").status == SKIP
    assert check(report, "text.encoder").status == PASS
    network = [c for c in report.checks if c.group == "network"]
    assert network and all(c.status == PASS for c in network)
    assert "not needed" in network[0].detail
    assert "result: 0 failed" in report.render()


def test_paper_profile_without_weights_names_each_setting_and_the_hf_command(paper, empty_caches):
    report = offline(paper)
    failed = {c.name: c for c in report.failures}
    for setting in (
        "codec.pretrained.path",
        "segment.vocal_removal.model",
        "caption.model.name_or_path",
        "text.encoder",
        "refiner_text.encoder",
    ):
        assert setting in failed, report.render()
    for setting in ("caption.model.name_or_path", "text.encoder", "refiner_text.encoder"):
        assert "hf download" in failed[setting].fix
    assert "hf download adefossez/HTDemucs" in failed["segment.vocal_removal.model"].fix
    assert "dac download" in failed["codec.pretrained.path"].fix
    assert "weights_44khz_8kbps_0.0.1.pth" in failed["codec.pretrained.path"].detail
    assert "huggingface-cli" not in report.render()
    # evaluation weights only warn: the evaluate stage reports those metrics as "not computed"
    assert check(report, "evaluate.models.clap.weights_path").status == WARN
    assert "hf download lukewys/laion_clap" in check(report, "evaluate.models.clap.weights_path").fix


# ----------------------------------------------------------------------------------------------- weights


def pretrained_codec(params: dict, path: Path, digest: str | None) -> dict:
    params = copy.deepcopy(params)
    params["codec"]["mode"] = "pretrained"
    params["codec"]["pretrained"].update(path=str(path), sha256=digest)
    return params


def test_weight_with_wrong_sha256_fails_naming_both_hashes(demo, tmp_path):
    weights = tmp_path / "dac.pth"
    weights.write_bytes(b"not the release")
    expected = "ab" * 32
    result = check(offline(pretrained_codec(demo, weights, expected)), "codec.pretrained.path")
    assert result.status == FAIL
    assert expected in result.detail and sha256(b"not the release") in result.detail


def test_weight_with_right_sha256_passes(demo, tmp_path):
    weights = tmp_path / "dac.pth"
    weights.write_bytes(b"tiny weights")
    result = check(offline(pretrained_codec(demo, weights, sha256(b"tiny weights"))), "codec.pretrained.path")
    assert result.status == PASS, result.detail


def test_evaluation_weights_follow_the_evaluate_stage(demo, tmp_path):
    weights = tmp_path / "vggish.pth"
    weights.write_bytes(b"vggish")
    params = copy.deepcopy(demo)
    params["evaluate"]["models"]["vggish"] = {"weights_path": str(weights), "sha256": sha256(b"vggish")}
    params["evaluate"]["models"]["openl3"] = {"weights_path": str(tmp_path / "absent.h5"), "sha256": None}
    params["evaluate"]["models"]["clap"].update(weights_path=str(weights), sha256="cd" * 32)
    report = offline(params)
    assert check(report, "evaluate.models.vggish.weights_path").status == PASS
    assert check(report, "evaluate.models.openl3.weights_path").status == WARN
    clap = check(report, "evaluate.models.clap.weights_path")
    assert clap.status == FAIL and "cd" * 32 in clap.detail and sha256(b"vggish") in clap.detail


def fake_hf_snapshot(cache: Path, repo: str, files: dict[str, str]) -> None:
    """A Hugging Face cache entry as `hf download` leaves it: refs/main naming a snapshot folder of files."""
    entry = cache / f"models--{repo.replace('/', '--')}"
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text("0" * 40)
    snapshot = entry / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for name, text in files.items():
        (snapshot / name).write_text(text)


def test_models_in_the_hugging_face_cache_pass(paper, empty_caches, tmp_path):
    cache = tmp_path / "hf"
    fake_hf_snapshot(cache, "adefossez/HTDemucs", {"htdemucs.yaml": "models: [abc]\n", "abc.safetensors": "w"})
    fake_hf_snapshot(cache, "google/flan-t5-base", {"config.json": "{}", "model.safetensors": "w"})
    fake_hf_snapshot(cache, "google/flan-t5-large", {"config.json": "{}"})  # weights missing
    report = offline(paper)
    assert check(report, "segment.vocal_removal.model").status == PASS
    assert check(report, "text.encoder").status == PASS
    large = check(report, "refiner_text.encoder")
    assert large.status == FAIL and "lacks" in large.detail and "hf download google/flan-t5-large" in large.fix


# ----------------------------------------------------------------------------------------------- inputs


def mtg_profile(paper: dict, **mtg) -> dict:
    params = copy.deepcopy(paper)
    params["corpus"]["mtg_jamendo"].update(mtg)
    return params


def test_missing_checksum_list_fails(paper, tmp_path):
    report = offline(mtg_profile(paper, tar_sha256_path=str(tmp_path / "absent.txt")))
    result = check(report, "corpus.mtg_jamendo.tar_sha256_path")
    assert result.status == FAIL and "absent.txt" in result.detail
    assert not report.ok


def test_checksum_list_relative_to_the_root_must_list_every_archive_used(paper, tmp_path):
    listed = tmp_path / "configs" / "checksums" / "tars.txt"
    listed.parent.mkdir(parents=True)
    listed.write_text(f"{'a' * 64}  raw_30s_audio-00.tar\n{'b' * 64}  raw_30s_audio-07.tar\n")
    relative = "configs/checksums/tars.txt"
    some = offline(mtg_profile(paper, tar_sha256_path=relative, tar_indices=[0, 7]), root=tmp_path)
    assert check(some, "corpus.mtg_jamendo.tar_sha256_path").status == PASS
    every = offline(mtg_profile(paper, tar_sha256_path=relative, tar_indices=None), root=tmp_path)
    result = check(every, "corpus.mtg_jamendo.tar_sha256_path")
    assert result.status == FAIL and "raw_30s_audio-01.tar" in result.detail


# ----------------------------------------------------------------------------------------------- disk and GPU


def test_disk_check_fails_when_the_estimate_exceeds_free_space(demo):
    assert check(offline(demo, free_bytes=1e6), "data root").status == FAIL
    assert check(offline(demo, free_bytes=PLENTY), "data root").status == PASS


def test_hard_cuda_request_without_gpu_fails(demo):
    import torch

    params = copy.deepcopy(demo)
    params["generate"]["device"] = "cuda"
    no_gpu = run_preflight(params, root=ROOT, network=False, free_bytes=PLENTY, gpus=[])
    result = check(no_gpu, "generate.device")
    assert result.status == FAIL and "srun --gpus=1 make preflight" in result.fix
    if not torch.cuda.is_available():  # this machine: torch itself reports no GPU
        assert (
            check(run_preflight(params, root=ROOT, network=False, free_bytes=PLENTY), "generate.device").status == FAIL
        )
    with_gpu = run_preflight(params, root=ROOT, network=False, free_bytes=PLENTY, gpus=["NVIDIA H100"])
    assert check(with_gpu, "generate.device").status == PASS
    assert offline(params).ok  # --no-gpu-check: a login node


# ----------------------------------------------------------------------------------------------- network


class _Handler(http.server.BaseHTTPRequestHandler):
    def _answer(self, body: bool) -> None:
        code = 200 if self.path.startswith("/ok") else 404
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        if body:
            self.wfile.write(b"ok")

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(body=True)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_probe_url_200_404_and_unreachable(server):
    assert probe_url(f"{server}/ok", timeout_s=5) is None
    assert "404" in probe_url(f"{server}/missing", timeout_s=5)
    started = time.perf_counter()
    assert "unreachable" in probe_url(f"http://127.0.0.1:{closed_port()}/x", timeout_s=2)
    assert time.perf_counter() - started < 5


def test_mtg_sources_are_tried_with_head_requests(paper, server):
    params = mtg_profile(
        paper,
        metadata_url=f"{server}/ok/raw_30s_cleantags.tsv",
        licenses_url=f"http://127.0.0.1:{closed_port()}/audio_licenses.txt",
        tar_url_template=server + "/missing/raw_30s_audio-{index:02d}.tar",
    )
    report = offline(params, network=True, network_timeout_s=2)
    assert check(report, "corpus.mtg_jamendo.metadata_url").status == PASS
    assert check(report, "corpus.mtg_jamendo.licenses_url").status == FAIL
    tar = check(report, "corpus.mtg_jamendo.tar_url_template")
    assert tar.status == FAIL and "404" in tar.detail and "raw_30s_audio-00.tar" in tar.detail
    skipped = offline(params, network=False)
    assert check(skipped, "corpus.mtg_jamendo").status == SKIP


def manifest_profile(demo: dict, tmp_path: Path, urls: list[str]) -> dict:
    manifest = tmp_path / "manifest.jsonl"
    rows = [{"id": f"t{i}", "url": url, "licence": "CC-BY-4.0"} for i, url in enumerate(urls)]
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    params = copy.deepcopy(demo)
    params["corpus"].update(source="manifest", manifest_path=str(manifest))
    return params


def test_manifest_urls_file_and_http(demo, tmp_path, server):
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"RIFF....")
    local = manifest_profile(demo, tmp_path, [audio.as_uri(), audio.as_uri()])
    result = check(offline(local, network=True), "corpus.manifest URLs")
    assert result.status == PASS and "no network needed" in result.detail
    missing = manifest_profile(demo, tmp_path, [audio.as_uri(), (tmp_path / "gone.wav").as_uri()])
    result = check(offline(missing, network=True), "corpus.manifest URLs")
    assert result.status == FAIL and "gone.wav" in result.detail
    remote = manifest_profile(demo, tmp_path, [f"{server}/ok/a.mp3", f"{server}/missing/b.mp3"])
    result = check(offline(remote, network=True, network_timeout_s=2), "corpus.manifest URLs")
    assert result.status == FAIL and "b.mp3" in result.detail and "a.mp3" not in result.detail


# ----------------------------------------------------------------------------------------------- plan


def test_plan_lists_every_stage_with_its_jobs(demo, paper):
    plan = offline(demo).plan
    assert [row.stage for row in plan] == list(STAGES)
    assert all(row.jobs >= 1 for row in plan)
    jobs = {row.stage: row.jobs for row in offline(paper).plan}
    assert jobs["fetch"] == jobs["segment"] == paper["corpus"]["n_shards"]
    assert jobs["tokenize"] == paper["corpus"]["n_shards"] + 1  # plus the shard manifest
    # one training job per named run; generate: every run, every baseline and the references
    assert jobs["train_lm"] == len(paper["runs"]) == 7
    assert jobs["generate"] == len(paper["runs"]) + len(paper.get("baselines") or {}) + 1


def test_gpu_hours_are_measured_only_where_a_gpu_benchmark_exists(paper, tmp_path):
    row = {r.stage: r for r in offline(paper).plan}["train_lm"]
    assert row.gpu_hours_measured is None and "not measured" in row.measured_basis
    assert row.gpu_hours_estimate > 0 and "989 TFLOP/s peak at 30% MFU" in row.estimate_basis
    bench = tmp_path / "results" / "bench"
    bench.mkdir(parents=True)
    gpu_rows = [
        {"backbone": name, "tokens_per_s": 1e5, "params": 281_000_000, "device": "NVIDIA H100"}
        for name in ("prefix_simba", "prefix_mamba", "cross_simba", "cross_transformer", "prefix_transformer")
    ]  # measured per backbone: the runs of one backbone at other sizes or codebooks share its rate
    (bench / "train.json").write_text(json.dumps({"cpu": [], "gpu": gpu_rows}))
    params = copy.deepcopy(paper)
    params["generate"]["captions_path"] = str(ROOT / paper["generate"]["captions_path"])
    measured = {r.stage: r for r in offline(params, root=tmp_path).plan}["train_lm"]
    assert measured.gpu_hours_measured > 0 and "NVIDIA H100" in measured.measured_basis


def test_checkpoint_retention_full_weights_only_and_unknown_keys():
    every_one = kept_checkpoints({"checkpoint_every": 500, "keep_last_checkpoints": None}, "train_lm", 100_000)
    assert (every_one.full, every_one.weights_only) == (200, 0)
    figure = {"checkpoint_every": 500, "keep_last_checkpoints": 1, "keep_weights_at_steps": [5000, 100_000, 400_000]}
    kept = kept_checkpoints(figure, "train_lm", 100_000)
    assert (kept.full, kept.weights_only) == (1, 1)  # 100k is the newest full one; 400k lies beyond max_steps
    assert kept.bytes(10) == 10 * (12 + 4) and kept.checkpoints == 2
    newer = kept_checkpoints({"checkpoint_every": 500, "keep_last_checkpoints": 3, "keep_best": [1, 2]}, "x", 100_000)
    assert newer.full == 5 and "keep_best" in newer.basis


# ----------------------------------------------------------------------------------------------- CLI


def test_cli_exit_codes_and_json(demo, tmp_path, capsys):
    out = tmp_path / "report.json"
    code = main(["preflight", str(ROOT / "configs" / "demo.yaml"), "--root", str(ROOT), "--json", str(out)])
    assert code == 0, capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["ok"] and [row["stage"] for row in report["plan"]] == list(STAGES)
    broken = copy.deepcopy(demo)
    broken["caption"].update(mode="import", import_path=str(tmp_path / "captions-absent.csv"))
    profile = tmp_path / "broken.yaml"
    profile.write_text(yaml.safe_dump(broken))
    assert main(["preflight", str(profile), "--root", str(ROOT), "--skip-network"]) == 1
    assert "FAIL  caption.import_path" in capsys.readouterr().out


def test_help_explains_every_check(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["preflight", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for word in ("weights", "inputs", "disk", "gpu", "network", "plan", "--json", "--skip-network", "--no-gpu-check"):
        assert word in text

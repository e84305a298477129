"""`ssmttm app` as a user meets it: the server started by the CLI in a subprocess on a free port of 127.0.0.1 against a
tiny trained workspace, driven in headless Chromium (ssmttm.report.browser): type a prompt, click Generate, then the
page's <audio> element must have loaded a non-silent WAV and the spectrogram image must be shown. The workspace has
a second run with no checkpoint: choosing it must say so on the page.

Workspace: the demo params (tiny generate settings), tests.generate's tiny LM run (real MiniLM text, steps 2 and 4),
tiny refiner and tiny codec (16 kHz) in the folders a finished `make demo` has.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from ssmttm.app import ModelCache
from ssmttm.report.browser import chromium_available, close, launch
from tests.codec import tiny_codec
from tests.generate._fixtures import make_lm_run, make_refiner

pytest.importorskip("gradio", reason="gradio (the `app` extra) is not installed: make setup installs it")

TRAINED_RUN, UNTRAINED_RUN = "prefix_simba", "cross_transformer"
SECONDS = 0.1  # 1600 samples, 200 frames of the tiny codec: within 4 x the tiny LM's 63-frame context
SILENCE_RMS = 1e-4  # a random tiny model's clip is far louder; digital silence or a zeroed decode is not
STARTUP_TIMEOUT_S = 90
GENERATE_TIMEOUT_S = 90


def write_workspace(repo_root: Path, root: Path) -> Path:
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["portable_cpu"] = False
    params["runs"] = {TRAINED_RUN: {"backbone": "prefix_simba"}, UNTRAINED_RUN: {"backbone": "cross_transformer"}}
    params["text"].update(encoder="minilm", max_length=8, device="cpu")
    params["generate"].update(
        batch_size=1, seconds=SECONDS, device="cpu", top_k=8, refine_sampler="ddim", refine_steps=2, guidance_scale=2.0
    )
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    codec = tiny_codec(root / "data" / "codec")
    make_lm_run(root / "results" / "train_lm" / TRAINED_RUN, real_text=True)
    make_refiner(root / "results" / "train_refiner" / "final", codec, real_text=True)
    return root


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def env() -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(sys.path),
    }


def app_command(workspace: Path, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ssmttm", "app", "--workspace", str(workspace), "--port", str(port), *extra]


def wait_until_serving(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"`ssmttm app` exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"`ssmttm app` did not answer on {url} within {STARTUP_TIMEOUT_S} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, repo_root):
    return write_workspace(repo_root, tmp_path_factory.mktemp("app") / "workspace")


@pytest.fixture(scope="module")
def server(workspace, tmp_path_factory):
    """The URL of `ssmttm app` serving `workspace` on 127.0.0.1; stopped (SIGINT, as Ctrl-C) after the module."""
    port = free_port()
    log = tmp_path_factory.mktemp("app-log") / "app.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            app_command(workspace, port), cwd=workspace, env=env(), stdout=sink, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(process, url, log)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not chromium_available():
        pytest.skip("/usr/bin/chromium is missing (apt-get install -y --no-install-recommends chromium)")
    driver, context = launch(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield context
    finally:
        close(driver, context)


AUDIO_STATE = """() => { const a = document.querySelector('#audio audio');
    return a ? {src: a.currentSrc || a.src, readyState: a.readyState, duration: a.duration,
                error: a.error ? a.error.code : null} : null; }"""
IMAGE_STATE = """() => { const i = document.querySelector('#spectrogram img');
    return i ? {src: i.src, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight} : null; }"""


def test_prompt_to_a_playing_non_silent_clip_and_its_spectrogram(server, browser):
    page = browser.new_page()
    page.goto(server)
    page.locator("#prompt textarea").fill("a calm piano melody")
    page.locator("#generate").click()
    page.wait_for_function(
        "() => { const a = document.querySelector('#audio audio'); return a && (a.readyState >= 2 || a.error); }",
        timeout=GENERATE_TIMEOUT_S * 1000,
    )
    audio = page.evaluate(AUDIO_STATE)
    assert audio["error"] is None, audio
    assert audio["readyState"] >= 2 and audio["duration"] > 0, audio
    assert abs(audio["duration"] - SECONDS) < 0.01, audio

    answer = browser.request.get(audio["src"])
    assert answer.ok, (audio["src"], answer.status)
    samples, rate = sf.read(io.BytesIO(answer.body()), dtype="float32")
    assert rate == 16000 and samples.shape == (round(SECONDS * rate),), (rate, samples.shape)
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    assert rms > SILENCE_RMS, f"the served WAV is silent (RMS {rms:.2e})"

    page.wait_for_function(
        "() => { const i = document.querySelector('#spectrogram img'); return i && i.complete && i.naturalWidth > 0; }",
        timeout=10_000,
    )
    image = page.evaluate(IMAGE_STATE)
    assert image["width"] > 0 and image["height"] == 64, image  # one row per mel band (ssmttm.report.spectrogram)
    assert f"run {TRAINED_RUN}, step 4" in page.locator("#message").inner_text()
    page.close()


def test_a_run_without_a_checkpoint_says_so_on_the_page(server, browser):
    page = browser.new_page()
    page.goto(server)
    page.locator("#run input").click()
    page.get_by_role("option", name=f"{UNTRAINED_RUN} (no checkpoint)").click()
    message = page.locator("#message")
    message.get_by_text("cannot make audio yet").wait_for(timeout=20_000)
    text = message.inner_text()
    assert f"no checkpoint for run '{UNTRAINED_RUN}'" in text and "train it with" in text, text
    assert page.locator("#generate").is_disabled()
    page.close()


def test_refuses_to_start_without_a_trained_run_or_on_a_busy_port(workspace, tmp_path):
    empty = tmp_path / "untrained"
    empty.mkdir()
    shutil.copyfile(workspace / "params.yaml", empty / "params.yaml")
    done = subprocess.run(app_command(empty, free_port()), env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("error: ") and "no run can make audio yet" in done.stderr, done.stderr

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(app_command(workspace, port), env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "--port" in done.stderr, done.stderr


def test_models_are_loaded_once_per_run_and_step(workspace):
    loads = []

    class Loaded:
        def __init__(self, step):
            self.step = step

    def loader(path, run, step, device):
        loads.append((run, step))
        return Loaded(4 if step is None else step)

    cache = ModelCache(workspace, "cpu", loader)
    first = cache.get(TRAINED_RUN, None)
    assert cache.get(TRAINED_RUN, None) is first and cache.get(TRAINED_RUN, 4) is first  # the last step is step 4
    other = cache.get(TRAINED_RUN, 2)
    assert other is not first and cache.get(TRAINED_RUN, 2) is other
    assert loads == [(TRAINED_RUN, None), (TRAINED_RUN, 2)]

"""`ssmttm app`: a local web page (gradio) that turns a prompt into audio with a trained run of a workspace.

    ssmttm app [--workspace .] [--host 127.0.0.1] [--port 7860] [--device cpu]

Prompt, run, checkpoint step, length, guidance and seed -> a player of the clip (16-bit WAV) and its mel spectrogram
(ssmttm.report.spectrogram, the report's own picture). Generation is `TextToMusic.generate` (ssmttm.api), the
two-stage path by default; a run without a refiner, without a checkpoint or with a setting out of range shows the
API's one-line message on the page instead of audio. Loaded models are kept per (run, step): switching back costs
nothing. The page binds to 127.0.0.1 unless --host says otherwise, and needs no network (no fonts, no analytics).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ssmttm.errors import UserFacingError

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
INSTALL_HINT = "run `make app`, or `.venv/bin/pip install -c requirements/constraints.txt -e '.[app]'`"
FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]  # local fonts: the default theme fetches Google Fonts
MONO_FONTS = ["ui-monospace", "monospace"]
# The spectrogram PNG has one pixel per mel band and frame (64 high): stretch it to the column, keep the cells sharp.
CSS = "#spectrogram img { width: 100%; height: 220px; object-fit: fill; image-rendering: pixelated; }"


@dataclass(frozen=True)
class RunChoice:
    name: str
    steps: list[int]  # empty: the run cannot make audio yet (`problem` says why)
    problem: str | None  # the loader's message (no checkpoint, no codec...), None when the run is ready
    trained: bool  # it has at least one LM checkpoint

    @property
    def label(self) -> str:
        if self.steps:
            return self.name
        return f"{self.name} (not ready)" if self.trained else f"{self.name} (no checkpoint)"


@dataclass(frozen=True)
class Defaults:
    """The page's initial settings: the workspace's params `generate` section and seed."""

    seconds: float
    guidance: float
    seed: int


def list_runs(workspace: Path) -> list[RunChoice]:
    """Every run of the workspace's params (an export: its one run), trained or not, in params order."""
    from ssmttm.api import available_runs
    from ssmttm.config import load_params
    from ssmttm.model_parts import PARAMS_FILE, find_parts, is_export, read_export_manifest
    from ssmttm.pipeline import run_names

    if is_export(workspace):
        names = [read_export_manifest(workspace)["run"]]
    elif (workspace / PARAMS_FILE).is_file():
        names = run_names(load_params(workspace / PARAMS_FILE))
    else:
        find_parts(workspace)  # raises the loader's own message: neither a workspace nor an export
        names = []
    choices = []
    for name in names:
        try:
            choices.append(RunChoice(name, list(find_parts(workspace, name).steps), None, True))
        except UserFacingError as exc:
            choices.append(RunChoice(name, [], str(exc), name in available_runs(workspace)))
    return choices


def read_defaults(workspace: Path, run: str) -> Defaults:
    from ssmttm.model_parts import find_parts

    parts = find_parts(workspace, run)
    section = parts.generate_section
    return Defaults(float(section.get("seconds", 3.0)), float(section.get("guidance_scale", 3.0)), int(parts.seed))


class ModelCache:
    """Loaded models per (run, step); step None is the run's last checkpoint. Loads are serialised (one at a time)."""

    def __init__(self, workspace: Path, device: str | None, loader: Callable[..., Any] | None = None):
        if loader is None:
            from ssmttm.api import TextToMusic

            loader = TextToMusic.load
        self.workspace, self.device, self.loader = workspace, device, loader
        self.models: dict[tuple[str, int | None], Any] = {}
        self.lock = threading.Lock()

    def get(self, run: str, step: int | None) -> Any:
        with self.lock:
            model = self.models.get((run, step))
            if model is None:
                model = self.loader(self.workspace, run=run, step=step, device=self.device)
                self.models[(run, step)] = self.models[(run, model.step)] = model
            return model


class Studio:
    """What the page's controls call: no gradio in here, so the logic is plain Python."""

    def __init__(self, workspace: Path, device: str | None, out_dir: Path):
        self.workspace, self.out_dir = workspace, out_dir
        self.cache = ModelCache(workspace, device)
        self.runs = {choice.name: choice for choice in list_runs(workspace)}

    def step_choices(self, run: str) -> tuple[list[int], str]:
        """(the run's checkpoint steps, last first; a message for the page: empty when the run has checkpoints)."""
        choice = self.runs.get(run)
        if choice is None:
            return [], f"unknown run {run!r}: choose one of {', '.join(self.runs)}"
        # A run trained while the page is open: look again.
        fresh = next((c for c in list_runs(self.workspace) if c.name == run), choice)
        self.runs[run] = fresh
        if not fresh.steps:
            return [], f"Run **{run}** cannot make audio yet: {fresh.problem}"
        return sorted(fresh.steps, reverse=True), ""

    def generate(
        self,
        prompt: str,
        run: str,
        step: int | None,
        seconds: float | None,
        guidance: float | None,
        seed: int | None,
    ) -> tuple[Path | None, Path | None, str]:
        """(WAV path, spectrogram PNG path, a message); the paths are None and the message says why on a user error.
        A number left empty (None) takes the workspace's params value."""
        from ssmttm.audio import rms_db, write_wav
        from ssmttm.report.spectrogram import mel_spectrogram_png

        prompt = (prompt or "").strip()
        if not prompt:
            return None, None, "Type a prompt first."
        if not run:
            return None, None, "Choose a run first."
        try:
            _, problem = self.step_choices(run)
            if problem:
                return None, None, problem
            model = self.cache.get(run, None if step is None else int(step))
            started = time.perf_counter()
            seconds, seed = (None if seconds is None else float(seconds)), (None if seed is None else int(seed))
            guidance = None if guidance is None else float(guidance)
            wav, sample_rate = model.generate([prompt], seconds=seconds, seed=seed, guidance=guidance)  # (1, 1, T)
        except UserFacingError as exc:
            return None, None, f"Could not generate: {exc}"
        elapsed = time.perf_counter() - started
        samples = wav[0, 0].numpy().astype(np.float32)  # (T,)
        stem = self.out_dir / f"{run}-{model.step}-{uuid.uuid4().hex[:8]}"
        write_wav(stem.with_suffix(".wav"), samples, sample_rate)
        mel_spectrogram_png(samples, sample_rate, stem.with_suffix(".png"))
        level = rms_db(samples)
        message = (
            f"run **{run}**, step {model.step}: {samples.size / sample_rate:.2f} s at {sample_rate} Hz, "
            f"RMS {level:.1f} dBFS, made in {elapsed:.1f} s (seed {'from params' if seed is None else seed}, "
            f"guidance {'from params' if guidance is None else f'{guidance:g}'})"
        )
        return stem.with_suffix(".wav"), stem.with_suffix(".png"), message


def build_page(studio: Studio) -> Any:
    """The gradio Blocks page of `studio`."""
    import gradio as gr

    trained = [c for c in studio.runs.values() if c.steps]
    first = trained[0].name
    defaults = read_defaults(studio.workspace, first)
    first_steps, _ = studio.step_choices(first)

    def on_run(run: str) -> tuple[Any, Any, str]:
        steps, problem = studio.step_choices(run)
        return (
            gr.Dropdown(choices=steps, value=steps[0] if steps else None, interactive=bool(steps)),
            gr.Button(interactive=bool(steps)),
            problem,
        )

    def on_generate(*values: Any) -> tuple[str | None, str | None, str]:
        wav, picture, message = studio.generate(*values)
        return (None if wav is None else str(wav)), (None if picture is None else str(picture)), message

    with gr.Blocks(title="ssmttm: text to music", analytics_enabled=False, delete_cache=(3600, 3600)) as page:
        gr.Markdown(f"## Text to music\nWorkspace `{studio.workspace}`: a prompt becomes a clip of the chosen run.")
        with gr.Row():
            with gr.Column(scale=3):
                prompt = gr.Textbox(label="Prompt", lines=2, placeholder="a calm piano melody", elem_id="prompt")
                with gr.Row():
                    run = gr.Dropdown(
                        [(c.label, c.name) for c in studio.runs.values()], value=first, label="Run", elem_id="run"
                    )
                    step = gr.Dropdown(first_steps, value=first_steps[0], label="Checkpoint step", elem_id="step")
                with gr.Row():
                    seconds = gr.Number(defaults.seconds, label="Length (seconds)", minimum=0, elem_id="seconds")
                    guidance = gr.Number(defaults.guidance, label="Guidance (1 = none)", elem_id="guidance")
                    seed = gr.Number(defaults.seed, label="Seed", precision=0, minimum=0, elem_id="seed")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=4):
                message = gr.Markdown(elem_id="message")
                audio = gr.Audio(
                    label="Audio",
                    type="filepath",
                    interactive=False,
                    waveform_options=gr.WaveformOptions(show_recording_waveform=False),  # the browser's own player
                    elem_id="audio",
                )
                picture = gr.Image(label="Mel spectrogram", type="filepath", interactive=False, elem_id="spectrogram")
        run.change(on_run, inputs=run, outputs=[step, button, message])
        # Click and Enter share one queue: one generation at a time (a model is not re-entrant, the CPU is shared).
        for trigger in (button.click, prompt.submit):
            trigger(
                on_generate,
                inputs=[prompt, run, step, seconds, guidance, seed],
                outputs=[audio, picture, message],
                concurrency_id="generate",
            )
    return page


def check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UserFacingError(f"cannot listen on {host}:{port} ({exc.strerror}); pass another --port") from None


def serve(workspace: Path, host: str, port: int, device: str | None) -> None:
    # The cheap checks first: gradio takes seconds to import.
    check_port_free(host, port)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own start-up probes of the page, one line each
    with tempfile.TemporaryDirectory(prefix="ssmttm-app-") as out_dir:
        studio = Studio(workspace, device, Path(out_dir))
        if not any(c.steps for c in studio.runs.values()):
            problems = "; ".join(f"{c.name}: {c.problem}" for c in studio.runs.values()) or "params name no runs"
            raise UserFacingError(f"{workspace}: no run can make audio yet ({problems})")
        try:
            import gradio as gr
        except ImportError:
            raise UserFacingError(f"gradio is not installed (the `app` extra): {INSTALL_HINT}") from None
        page = build_page(studio)
        if host not in LOCAL_HOSTS:
            log.warning("listening on %s: anyone who can reach this machine on port %d can use the app", host, port)
        print(f"ssmttm app: http://{'[' + host + ']' if ':' in host else host}:{port}/ (Ctrl-C stops it)", flush=True)
        theme = gr.themes.Default(font=FONTS, font_mono=MONO_FONTS)
        page.queue(default_concurrency_limit=1).launch(
            server_name=host,
            server_port=port,
            share=False,
            ssr_mode=False,
            inbrowser=False,
            theme=theme,
            css=CSS,
            allowed_paths=[out_dir],
        )


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", default=".", help="repository root of a finished run, or an exported folder")
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST}: this machine only)"
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--device", default=None, help="cpu, cuda or auto (default: the params' generate.device)")


def run_from_args(args: argparse.Namespace) -> int:
    workspace = Path(args.workspace)
    if not workspace.is_dir():
        raise UserFacingError(f"--workspace {workspace}: no such folder; pass the repository root of a finished run")
    if not 0 < args.port < 65536:
        raise UserFacingError(f"--port {args.port}: choose a port from 1 to 65535")
    serve(workspace, args.host, args.port, args.device)
    return 0

"""A local HTTP server for the paper test profile: a tiny MTG-Jamendo and MusicCaps reference audio on 127.0.0.1.

    python scripts/paper_test/serve.py --port 18431 --root build/paper-test/served

writes the served files into --root (scripts/paper_test/corpus.py: synthesised, deterministic; replaced whole) and
serves that folder on http://127.0.0.1:PORT/ until stopped (SIGTERM / Ctrl-C):

    /mtg-jamendo/raw_30s_cleantags.tsv, /mtg-jamendo/audio_licenses.txt, /mtg-jamendo/raw_30s/audio/raw_30s_audio-NN.tar
    /musiccaps/<ytid>.wav        (one ytid of musiccaps-public.csv answers 404 on purpose)

It answers GET and HEAD with byte ranges (`Range: bytes=a-b`, 206), as a CDN does, so ffmpeg (used by yt-dlp to
cut a 10 s excerpt) can seek. `--generate-only` writes the files and exits. A port already in use is refused with a
message naming it. Only the loopback address is ever bound.
"""

from __future__ import annotations

import argparse
import errno
import http.server
import os
import re
import shutil
import signal
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from scripts.paper_test import corpus  # noqa: E402

HOST = "127.0.0.1"
RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """SimpleHTTPRequestHandler plus single byte ranges; quiet unless an error."""

    def send_head(self):  # noqa: D401 - the base class's hook
        header = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if header is None or not path.is_file():
            return super().send_head()
        match = RANGE.match(header.strip())
        size = path.stat().st_size
        if not match or (not match.group(1) and not match.group(2)):
            return super().send_head()
        if match.group(1):
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else size - 1
        else:  # suffix range: the last N bytes
            start, end = max(0, size - int(match.group(2))), size - 1
        if start >= size:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.end_headers()
            return None
        end = min(end, size - 1)
        handle = open(path, "rb")
        handle.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self._remaining = end - start + 1
        return handle

    def end_headers(self) -> None:
        if not hasattr(self, "_remaining"):
            self.send_header("Accept-Ranges", "bytes")
        super().end_headers()

    def copyfile(self, source, outputfile) -> None:
        remaining = getattr(self, "_remaining", None)
        if remaining is None:
            return super().copyfile(source, outputfile)
        while remaining > 0:
            block = source.read(min(1 << 16, remaining))
            if not block:
                break
            outputfile.write(block)
            remaining -= len(block)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's signature
        if len(args) > 1 and str(args[1])[:1] in "45":
            sys.stderr.write(f"serve: {self.address_string()} {format % args}\n")


def generate(root: Path, scale: int = 1) -> Path:
    """Write the served files into `root`, replacing it whole (a half-written folder is never served)."""
    root = Path(root)
    tmp = root.with_name(f".{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    corpus.write_served(tmp, scale)
    if root.exists():
        shutil.rmtree(root)
    tmp.rename(root)
    return root


def bind(port: int, root: Path) -> http.server.ThreadingHTTPServer:
    handler = lambda *a, **k: RangeHandler(*a, directory=str(root), **k)  # noqa: E731
    try:
        return http.server.ThreadingHTTPServer((HOST, port), handler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise SystemExit(
                f"serve: port {port} on {HOST} is already in use (another server, or a paper test still running); "
                "stop it or choose another port with --port (and the same port in the profile's URLs)"
            ) from None
        raise


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    parser.add_argument("--root", type=Path, required=True, help="folder to write the served files into and serve")
    parser.add_argument("--generate-only", action="store_true", help="write the files, do not serve")
    parser.add_argument("--no-generate", action="store_true", help="serve --root as it is")
    parser.add_argument("--scale", type=int, default=1, help="the MTG-Jamendo corpus times this many tracks (bench)")
    args = parser.parse_args(argv)
    # the port first: a taken one is refused before minutes of synthesis
    server = None if args.generate_only else bind(args.port, args.root.resolve())
    if not args.no_generate:
        generate(args.root, args.scale)
    if server is None:
        print(f"served files written to {args.root}")
        return 0
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"serving {args.root} on http://{HOST}:{args.port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

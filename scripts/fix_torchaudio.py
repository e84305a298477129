"""Make descript-audio-codec importable on a CPU-only torch.

descript-audio-codec depends on torchaudio, whose PyPI wheel for recent torch is a CUDA build: its compiled
libraries fail to load next to the CPU torch and break `import dac`. Without them torchaudio falls back to pure
Python, which is all DAC and audiotools use. On a machine where the libraries load (a matching CUDA torch) this
script leaves them alone.
"""

import importlib.util
import subprocess
import sys
from pathlib import Path


def main() -> int:
    spec = importlib.util.find_spec("torchaudio")
    if spec is None or spec.origin is None:
        return 0
    probe = subprocess.run([sys.executable, "-c", "import torchaudio"], capture_output=True, text=True)
    if probe.returncode == 0:
        return 0
    lib_dir = Path(spec.origin).parent / "lib"
    removed = [p for p in lib_dir.glob("*.so")]
    for path in removed:
        path.unlink()
    print(f"fix_torchaudio: removed {len(removed)} CUDA-only libraries from {lib_dir} (pure-Python fallback)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

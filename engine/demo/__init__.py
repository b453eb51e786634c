"""The demo model: a small text-to-image model trained from scratch on procedural shapes, shipped in the repo so
imagine runs anywhere, offline, on a CPU. `MODEL_DIR` is the bundled pipeline; the model name is `DEMO_MODEL`."""

from pathlib import Path

DEMO_MODEL = "demo"
MODEL_DIR = Path(__file__).resolve().parent / "model"

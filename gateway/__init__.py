"""pushgate: a real-time push gateway from NSQ to WebSocket clients."""
from importlib import metadata as _metadata
from pathlib import Path as _Path

# The version is written in one place, VERSION at the root of the repository
# (setup.cfg reads it for the distribution's metadata).
try:
    __version__ = _metadata.version("pushgate")
except _metadata.PackageNotFoundError:  # a checkout run without installing it
    __version__ = (_Path(__file__).resolve().parents[1] / "VERSION").read_text().strip()

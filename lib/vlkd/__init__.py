"""vlkd: VidLanKD (video-language knowledge distillation) as batch jobs on Ray and Kubernetes."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vlkd")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

"""Backends turn a Job into images: one self-contained package or file per backend kind,
each implementing engine.base.Backend."""

from __future__ import annotations

from ..engine.base import Backend, Job, PreviewSink, RunCancelled

__all__ = ["Backend", "Job", "PreviewSink", "RunCancelled"]

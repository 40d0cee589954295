"""The diffusers backend: local pipelines of every family in families.py."""

from __future__ import annotations

from .backend import DiffusersBackend
from .families import FAMILIES, Family
from .loading import cpu_has_native_bf16, detect_family, pick_device, pick_dtype
from .previews import partial_steps

__all__ = ["FAMILIES", "DiffusersBackend", "Family", "cpu_has_native_bf16", "detect_family", "partial_steps",
           "pick_device", "pick_dtype"]

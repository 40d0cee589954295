"""`compile = "trace"`: a UNet's forward pass run as TorchScript graphs on hot inputs.

On a CPU a small UNet's step is partly Python: diffusers' blocks, hooks and argument
handling run once per module per call. A traced graph runs the same aten operations from
C++, so the outputs are bit-identical to eager ones (tests/test_tracing.py) and the
built-in model's step is ~20% cheaper on one thread (docs/performance.md).

A graph is traced per input signature (spatial shape, dtypes, devices, how the timestep is
given): a traced graph follows one path through diffusers' shape-dependent Python branches
(upsample sizes for latents that are not a multiple of the down-sampling factor), and the
signature keys exactly those branches; the batch size is a graph input, so n and the
engine's batching reuse one graph. Tracing costs about as much as 70 steps save (0.7 s for
the built-in model), so a signature is traced only once it has run `hot_after` times
eagerly: a server traces during its first few images, a process that makes one image never
does. Calls with anything else (ControlNet residuals, SDXL's added conditions, attention
masks or processor kwargs, gradients) run eagerly, as does any signature whose trace
failed (logged once). torch.jit is in maintenance mode in torch 2.x; where it is gone or
refuses the model, every call runs eagerly."""

from __future__ import annotations

import logging
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger("imagegate.diffusers")

_jit: Any = torch.jit  # untyped in torch's stubs
HOT_AFTER = 24  # eager calls of one signature before it is traced: three medium images
MAX_GRAPHS = 8  # signatures kept traced (least recently used dropped)
# Keyword arguments that may be given if they are None/empty: the graph is traced without them.
_NEUTRAL = frozenset({"class_labels", "timestep_cond", "attention_mask", "cross_attention_kwargs",
                      "added_cond_kwargs", "down_block_additional_residuals", "mid_block_additional_residual",
                      "down_intrablock_additional_residuals", "encoder_attention_mask"})


class TracedUNet:
    """Installed as `unet.forward`; holds the class's own forward for eager calls and tracing."""

    def __init__(self, unet: torch.nn.Module, hot_after: int = HOT_AFTER, max_graphs: int = MAX_GRAPHS) -> None:
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

        self.unet = unet
        self.eager: Callable[..., Any] = type(unet).forward.__get__(unet)
        self.output = UNet2DConditionOutput  # what the eager forward returns with return_dict
        self.hot_after = hot_after
        self.max_graphs = max_graphs
        self.graphs: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self.seen: dict[tuple[Any, ...], int] = {}
        self.failed: set[tuple[Any, ...]] = set()
        self.lock = threading.Lock()

    def __call__(self, sample: Any, timestep: Any, encoder_hidden_states: Any = None, *args: Any,
                 return_dict: bool = True, **kwargs: Any) -> Any:
        key = self._signature(sample, timestep, encoder_hidden_states, args, kwargs)
        if key is None or key in self.failed:
            return self.eager(sample, timestep, encoder_hidden_states, *args, return_dict=return_dict, **kwargs)
        t = torch.as_tensor(timestep, device=sample.device)
        graph = self._graph(key, sample, t, encoder_hidden_states)
        if graph is None:
            return self.eager(sample, timestep, encoder_hidden_states, return_dict=return_dict)
        out = graph(sample, t, encoder_hidden_states)
        return self.output(sample=out) if return_dict else (out,)

    def _signature(self, sample: Any, timestep: Any, ehs: Any, args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> tuple[Any, ...] | None:
        if args or not isinstance(sample, torch.Tensor) or not isinstance(ehs, torch.Tensor):
            return None
        if any(k not in _NEUTRAL or (v is not None and v != {}) for k, v in kwargs.items()):
            return None
        if torch.is_grad_enabled() or _jit.is_tracing():
            return None
        if isinstance(timestep, torch.Tensor):
            t_sig: tuple[Any, ...] = (timestep.dim(), timestep.dtype, timestep.shape[0] if timestep.dim() else 0)
        elif isinstance(timestep, (int, float)):
            t_sig = (0, type(timestep))
        else:
            return None
        # diffusers' upsampling makes a big batch contiguous first: a path of its own.
        return (tuple(sample.shape[1:]), sample.dtype, sample.device, sample.is_contiguous(),
                tuple(ehs.shape[1:]), ehs.dtype, t_sig, sample.shape[0] >= 64)

    def _graph(self, key: tuple[Any, ...], sample: torch.Tensor, t: torch.Tensor, ehs: torch.Tensor) -> Any:
        with self.lock:
            if key in self.graphs:
                self.graphs.move_to_end(key)
                return self.graphs[key]
            self.seen[key] = self.seen.get(key, 0) + 1
            if self.seen[key] <= self.hot_after:
                return None
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # TracerWarnings name the branches the key covers
                    graph = _jit.trace(_Forward(self.unet, self.eager), (sample, t, ehs), check_trace=False)
            except Exception as exc:  # noqa: BLE001 - an unsupported model or torch: that signature runs eagerly
                self.failed.add(key)
                log.warning("%s: tracing failed (%s: %s); running it eagerly", type(self.unet).__name__,
                            type(exc).__name__, exc)
                return None
            self.graphs[key] = graph
            del self.seen[key]
            while len(self.graphs) > self.max_graphs:
                self.graphs.popitem(last=False)
            return graph


class _Forward(torch.nn.Module):
    """What is traced: the UNet's own forward with the plain arguments, returning the tensor."""

    def __init__(self, unet: torch.nn.Module, eager: Callable[..., Any]) -> None:
        super().__init__()
        self.unet = unet
        self.eager = eager

    def forward(self, sample: torch.Tensor, t: torch.Tensor, ehs: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.eager(sample, t, ehs, return_dict=False)[0]
        return out


def trace_unet(unet: Any, hot_after: int = HOT_AFTER) -> bool:
    """Route `unet`'s calls through TracedUNet; False (nothing changed) for other denoisers."""
    from diffusers import UNet2DConditionModel

    if not isinstance(unet, UNet2DConditionModel):
        return False
    module: Any = unet
    module.forward = TracedUNet(module, hot_after)
    return True

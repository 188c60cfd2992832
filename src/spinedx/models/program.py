"""Networks stored as TorchScript programs, so analysis runs them with torch alone.

Building a bundled network the ordinary way imports the library that defines it (timm, MONAI and
through them torchvision), which costs seconds on every cold start of ``spinedx analyze``. A model
file may therefore carry, under ``program``, the network traced once with :func:`trace_program`
(float16 weights where the state dict was float16) instead of its ``state_dict``; :func:`load_program` gives it
back in float32; its ``state_dict()`` holds the weights under the eager network's names, to rebuild
that network for fine-tuning or ONNX export. The traced graph runs the same operations as the eager network, so its
outputs are identical.
"""

from __future__ import annotations

import copy
import io
import warnings

import torch
from torch import nn


def trace_program(
    network: nn.Module, example_inputs: tuple[torch.Tensor, ...], *, half: bool = True
) -> torch.Tensor:
    """``network`` (eval mode) traced on ``example_inputs``, serialised into a uint8 tensor (stored
    compactly by ``torch.save``, unlike a pickled ``bytes``); weights in float16 when ``half``
    (for networks trained and bundled as float16 state dicts, so nothing is lost).

    The example's batch size must not be 1 (the trace would not generalise over the batch axis
    where an operation special-cases 1); every other input dimension is fixed by the trace.
    """
    network = copy.deepcopy(network).eval()  # a trace shares its weights; keep the caller's network float32
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about Python values fixed at trace time
        network(*example_inputs)  # fill caches (e.g. descriptor masks) so the trace sees one path
        traced = torch.jit.trace(network, example_inputs, strict=False, check_trace=False)
    buffer = io.BytesIO()
    torch.jit.save(traced.half() if half else traced, buffer)
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


def load_program(data: torch.Tensor) -> torch.jit.ScriptModule:
    """The traced network of :func:`trace_program`, in float32 and eval mode."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
        return torch.jit.load(io.BytesIO(data.numpy().tobytes()), map_location="cpu").float().eval()

"""Run a trained torch network with ONNX Runtime instead of torch eager, behind the same call.

:func:`export_onnx` writes the network with ``torch.onnx.export`` (batch axis dynamic);
:class:`OnnxRuntimeModule` loads it into an ``onnxruntime.InferenceSession`` and is called like
the module it replaces (torch tensors in, torch tensors out; a dict when the network has several
named outputs), so inference code runs unchanged on either engine.

ONNX Runtime is optional: ``pip install 'spinedx[onnx]'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from spinedx.errors import InputError
from spinedx.io.atomic import atomic_path


class _TupleOutputs(torch.nn.Module):
    """ONNX graphs return sequences: lay a dict-returning network's outputs out in a fixed order."""

    def __init__(self, module: torch.nn.Module, output_names: Sequence[str]) -> None:
        super().__init__()
        self.module = module
        self.output_names = tuple(output_names)

    def forward(self, *inputs: torch.Tensor):
        outputs = self.module(*inputs)
        if isinstance(outputs, dict):
            return tuple(outputs[name] for name in self.output_names)
        return outputs


def export_onnx(
    module: torch.nn.Module,
    example_inputs: Sequence[torch.Tensor],
    path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
) -> Path:
    """Write ``module`` (eval mode) as ONNX with a dynamic first (batch) axis on every input."""
    batch = torch.export.Dim("batch", min=1, max=1024)
    wrapped = _TupleOutputs(module, output_names).eval()
    with torch.no_grad():
        # One eager call first: modules that cache shape-derived constants (the grader's region
        # masks) build them here, so the exported graph holds them as constants.
        wrapped(*example_inputs)
    with atomic_path(Path(path)) as tmp:
        torch.onnx.export(
            wrapped,
            tuple(example_inputs),
            str(tmp),
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_shapes=(tuple({0: batch} for _ in example_inputs),),  # one entry: the *inputs
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    return Path(path)


class OnnxRuntimeModule:
    """An ONNX Runtime session called like the torch module it was exported from."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        try:
            import onnxruntime
        except ImportError as exc:
            raise InputError("ONNX Runtime is not installed: pip install 'spinedx[onnx]'") from exc
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        # Spinning worker threads would compete with torch's own threads between calls.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [item.name for item in self.session.get_inputs()]
        self.output_names = [item.name for item in self.session.get_outputs()]

    def eval(self) -> OnnxRuntimeModule:
        return self

    def __call__(self, *inputs: torch.Tensor):
        feeds = {
            name: np.ascontiguousarray(value.numpy())
            for name, value in zip(self.input_names, inputs, strict=True)
        }
        outputs = [torch.from_numpy(value) for value in self.session.run(None, feeds)]
        if len(outputs) == 1:
            return outputs[0]
        return dict(zip(self.output_names, outputs, strict=True))

"""Deployment export: ONNX with dynamic height/width, TorchScript, parity checks, and running an
exported ONNX file with onnxruntime as a network of the framework.

``onnx``, ``onnxscript`` (the ``dynamo`` exporter) and ``onnxruntime`` are optional: they are
imported inside the functions that need them, and a missing one is a :class:`OptionalDependencyMissing`
naming the ``pip install`` that fixes it (``pip install onnx onnxscript onnxruntime``).

What an exported file holds:

* input ``input`` (1, 3, H, W) float32 in [0, 1]; H and W are dynamic (multiples of the network's
  ``size_multiple``, which the framework pads to and crops back, as for the eager network);
* output ``output`` (1, 3, H, W), the network's ``forward``; a network with ``forward_maps``
  (the ICEML nets) exports its maps instead, ``output`` first (the dehazed image) and then
  ``map_1``, ``map_2`` ... in the order of ``forward_maps`` (RtxICE-Net: ``lr_inv``; ASMICE-Net:
  ``t``, ``a``), so the dehazing scripts can write the transmission map from the file too;
* metadata ``ssir.network`` (registered name), ``ssir.size_multiple``, ``ssir.exporter``,
  ``ssir.torch`` and ``ssir.weight`` (the checkpoint it came from).

:class:`OnnxNetwork` wraps an inference session as an ``nn.Module`` with the same
``size_multiple`` (and ``forward_maps`` when the file has maps), so padding, tiling and the
self-ensemble of :mod:`common_utils.inference` apply to it unchanged.
"""
from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from common_utils.inference import size_multiple_of
from foundation.errors import UserError

__all__ = ["EXPORTERS", "ExportedForward", "OptionalDependencyMissing", "OnnxNetwork", "export_onnx",
           "export_torchscript", "compare", "is_onnx_file", "load_onnx_network", "max_abs_diff", "parity_sizes",
           "trace_size"]

#: ``legacy``: torch.onnx's tracing exporter (``dynamo=False``): exports all nine networks, ~10x faster
#: here; ``dynamo``: torch.export + onnxscript, torch's recommended one (docs/export.md compares them)
EXPORTERS = ("legacy", "dynamo")
ONNX_SUFFIX = ".onnx"
PIP_HINT = "pip install onnx onnxscript onnxruntime"


class OptionalDependencyMissing(UserError):
    """An optional package needed for export or ONNX inference is not installed."""


def _require(module: str) -> Any:
    """Import an optional module or raise :class:`OptionalDependencyMissing` with the pip command."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise OptionalDependencyMissing(f"the optional package '{module}' is not installed; ONNX export and "
                                        f"inference need it: {PIP_HINT}") from None


def is_onnx_file(path: str | os.PathLike | None) -> bool:
    """Whether ``path`` names an ONNX file (by its suffix; the file itself is checked on loading)."""
    return path is not None and str(path).lower().endswith(ONNX_SUFFIX)


class ExportedForward(nn.Module):
    """What is exported: ``forward_maps`` when the network has it, else ``forward``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> Any:
        maps = getattr(self.net, "forward_maps", None)
        return maps(x) if callable(maps) else self.net(x)


def _output_names(net: nn.Module, sample: torch.Tensor) -> list[str]:
    with torch.inference_mode():
        out = ExportedForward(net)(sample)
    n = len(out) if isinstance(out, (tuple, list)) else 1
    return ["output"] + [f"map_{i}" for i in range(1, n)]


def trace_size(multiple: int) -> tuple[int, int]:
    """A tracing size (H, W) for a network of this size multiple: about 67 x 101, sides multiples of
    ``multiple`` but, for a network that takes any size, odd. The tracing exporters record Python
    branches on the input's shape as taken for the sample (LLFormer skips its internal padding when
    the sides are multiples of 16 already): a sample that needs the padding keeps it in the graph."""
    return -(-67 // multiple) * multiple, -(-101 // multiple) * multiple


def export_onnx(net: nn.Module, path: str | os.PathLike, sample: torch.Tensor, network: str,
                exporter: str = "legacy", weight: str = "", opset: int | None = None) -> Path:
    """Export ``net`` (eval mode, on the CPU) to ``path`` with dynamic H and W; return the path.

    ``sample`` (1, 3, H, W), H and W multiples of the network's size multiple, is the tracing
    input (see :func:`trace_size` for a safe one). A failure of the exporter is raised as it is (the
    caller reports it per network).
    """
    if exporter not in EXPORTERS:
        raise UserError(f"unknown exporter '{exporter}' (use {' or '.join(EXPORTERS)})")
    onnx = _require("onnx")
    if exporter == "dynamo":
        _require("onnxscript")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    m = size_multiple_of(net)
    if sample.shape[-2] % m or sample.shape[-1] % m:
        raise ValueError(f"sample size {tuple(sample.shape[-2:])} is not a multiple of {m}")
    model = ExportedForward(net).eval()
    names = _output_names(net, sample)
    quiet = contextlib.redirect_stdout(io.StringIO())  # the exporters print progress lines
    with quiet, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            dim = torch.export.Dim
            # H = m * k: torch.export then proves the graph for every multiple, not for one size
            h = dim("h_blocks", min=2, max=16384 // m) * m if m > 1 else dim("h", min=16, max=16384)
            w = dim("w_blocks", min=2, max=16384 // m) * m if m > 1 else dim("w", min=16, max=16384)
            torch.onnx.export(model, (sample,), str(path), dynamo=True, input_names=["input"], output_names=names,
                              dynamic_shapes=({2: h, 3: w},), opset_version=opset, external_data=False)
        else:
            axes = {n: {2: "height", 3: "width"} for n in ["input", *names]}
            torch.onnx.export(model, (sample,), str(path), dynamo=False, input_names=["input"], output_names=names,
                              dynamic_axes=axes, opset_version=opset or 17)
    proto = onnx.load(str(path))
    meta = {"ssir.network": network, "ssir.size_multiple": str(m), "ssir.exporter": exporter,
            "ssir.torch": torch.__version__, "ssir.weight": str(weight)}
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(proto, str(path))
    return path


def export_torchscript(net: nn.Module, path: str | os.PathLike, sample: torch.Tensor) -> Path:
    """Trace ``net`` (``forward_maps`` when it has it) with ``sample`` and save it; return the path.

    Tracing records the operations of one run: Python arithmetic on the input's shape (internal
    padding) is frozen to the sample's size, which the parity check at a second size reveals.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(ExportedForward(net).eval(), (sample,), check_trace=False)
        traced.save(str(path))
    return path


class OnnxNetwork(nn.Module):
    """An exported ONNX file run by onnxruntime, usable wherever the framework takes a network.

    Batch items run one at a time (the files are exported for batch 1). Outputs come back as
    float32 on the input's device. ``threads``: onnxruntime's intra-op threads (default: torch's
    current number, which ``--threads`` sets).
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None, device: torch.device | str = "cpu"
                 ) -> None:
        super().__init__()
        ort = _require("onnxruntime")
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"ONNX file not found: {self.path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or torch.get_num_threads())
        opts.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own error types for a bad file
            raise UserError(f"{self.path} is not an ONNX model onnxruntime can load: {str(exc).splitlines()[0]}"
                            ) from None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.network = meta.get("ssir.network")
        self.size_multiple = int(meta.get("ssir.size_multiple", "1"))
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_name = self.session.get_inputs()[0].name

    def _run(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs: list[list[np.ndarray]] = []
        for item in x.detach().float().cpu().numpy():
            try:
                outs.append(self.session.run(None, {self.input_name: np.ascontiguousarray(item[None])}))
            except Exception as exc:  # onnxruntime's own error types: a graph that does not run at this size
                h, w = item.shape[-2:]
                raise UserError(f"{self.path} does not run at {w}x{h}: {str(exc).strip().splitlines()[0][:200]} "
                                f"(a traced graph keeps the shape branches of its tracing size; docs/export.md "
                                f"says which networks need one file per size)") from None
        return [torch.from_numpy(np.concatenate([o[i] for o in outs])).to(x.device) for i in range(len(outs[0]))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output (the first output of the file)."""
        return self._run(x)[0]

    def forward_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Every output of the file, as the exported network's ``forward_maps`` returns them."""
        if len(self.output_names) < 2:
            raise UserError(f"{self.path} holds only the network's output, no maps (it was exported from a "
                            f"network without forward_maps)")
        return tuple(self._run(x))


def load_onnx_network(path: str | os.PathLike, network: str | None = None, device: torch.device | str = "cpu",
                      threads: int | None = None) -> tuple[OnnxNetwork, dict[str, Any]]:
    """Open an exported file; with ``network``, refuse one exported from another network.

    Returns the network and the ``info`` dict the evaluation CLIs record (network, weight, backend).
    """
    from models import network_name

    net = OnnxNetwork(path, threads=threads, device=device)
    if network is not None and net.network is not None and network_name(network) != net.network:
        raise UserError(f"{net.path} was exported from {net.network}, not {network_name(network)}; "
                        f"use -n {net.network}")
    info = {"network": net.network or (network_name(network) if network else "unknown"),
            "weight": str(net.path), "backend": "onnxruntime " + _require("onnxruntime").__version__}
    return net, info


def max_abs_diff(a: torch.Tensor | Sequence[torch.Tensor], b: torch.Tensor | Sequence[torch.Tensor]) -> float:
    """The largest absolute difference between two outputs (or tuples of outputs) of equal shapes."""
    a = a if isinstance(a, (tuple, list)) else [a]
    b = b if isinstance(b, (tuple, list)) else [b]
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        raise ValueError(f"outputs differ in shape: {[tuple(x.shape) for x in a]} vs {[tuple(y.shape) for y in b]}")
    return max(float((x.float() - y.float()).abs().max()) for x, y in zip(a, b))


def parity_sizes(image: torch.Tensor, multiple: int) -> list[torch.Tensor]:
    """Two views of ``image`` (1, 3, H, W) for the parity check: the whole image cropped to the
    multiple (the tracing size), and a centred portrait crop (3/4 x 1/2 of the short side) of a size
    the tracing never saw, which proves that H and W are dynamic."""
    h, w = image.shape[-2:]
    h1, w1 = h - h % multiple, w - w % multiple
    short = min(h1, w1)
    h2 = max(2 * multiple, short * 3 // 4 // multiple * multiple)
    w2 = max(2 * multiple, short // 2 // multiple * multiple)
    if multiple == 1:  # odd sides: a network that pads internally must pad in the graph too
        h2, w2 = h2 - 1 + h2 % 2, w2 - 1 + w2 % 2
    top, left = (h1 - h2) // 2, (w1 - w2) // 2
    return [image[..., :h1, :w1].contiguous(), image[..., top:top + h2, left:left + w2].contiguous()]


def compare(reference: Callable[[torch.Tensor], Any], candidate: Callable[[torch.Tensor], Any],
            inputs: Sequence[torch.Tensor]) -> list[dict[str, Any]]:
    """Max abs difference of ``candidate`` against ``reference`` on each input (sizes already
    multiples of the network's): one row ``{size, max_abs_diff}`` or ``{size, error}`` per input."""
    rows = []
    with torch.inference_mode():
        for x in inputs:
            size = f"{x.shape[-1]}x{x.shape[-2]}"
            try:
                rows.append({"size": size, "max_abs_diff": max_abs_diff(reference(x), candidate(x))})
            except Exception as exc:  # an exported graph that does not run at this size is a result
                rows.append({"size": size, "error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:160]}"
                             if str(exc).strip() else type(exc).__name__})
    return rows

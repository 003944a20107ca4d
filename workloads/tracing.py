"""Operator graphs of real torch models, traced with ``torch.fx`` and priced as schedgym kernels.

``trace_model(name)`` symbolically traces a zoo model, propagates shapes through it with its
example input, and returns its operators in execution order. Each op names the schedgym kernel
that prices it (a GEMM, a convolution as its im2col GEMM, a norm, an elementwise op, attention),
the tensors it reads (through views, which cost nothing and alias their source) and the bytes it
writes. The DAG environment schedules these ops; the memory-mapping environment derives buffer
lifetimes from them. An operator the mapping does not know is refused by name, never dropped.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from math import prod

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn import functional as F

from schedgym.errors import WorkloadError
from schedgym.workloads.torch_models import MODEL_ZOO


@dataclass(frozen=True)
class TracedOp:
    name: str
    target: str  # what torch ran: "nn.Linear", "F.gelu", "operator.add", ...
    kernel: str  # schedgym kernel pricing it
    params: dict[str, int]  # the kernel's parameters
    count: int  # launches of that kernel (batched attention: one per batch element)
    inputs: tuple[str, ...]  # producing ops of the activations read (model inputs: "input:<i>")
    input_bytes: tuple[int, ...]  # bytes read of each input, same order
    weight_bytes: int  # parameter bytes read
    output_shape: tuple[int, ...]
    output_bytes: int


# Ops that only reinterpret a tensor: free, and their output aliases their input.
_VIEWS_FN = {
    torch.flatten,
    torch.reshape,
    torch.transpose,
    torch.permute,
    operator.getitem,
    torch.squeeze,
    torch.unsqueeze,
    getattr,
}
_VIEWS_METHOD = {
    "view",
    "reshape",
    "transpose",
    "permute",
    "contiguous",
    "flatten",
    "split",
    "chunk",
    "squeeze",
    "unsqueeze",
    "size",
    "expand",
}
_ELEMENTWISE_FN = {
    F.relu,
    F.gelu,
    F.silu,
    torch.relu,
    torch.tanh,
    torch.sigmoid,
    operator.add,
    operator.mul,
    operator.sub,
    operator.truediv,
    torch.add,
    torch.mul,
    F.dropout,
    F.adaptive_avg_pool2d,
    F.max_pool2d,
}
_ELEMENTWISE_METHOD = {"relu", "add", "mul", "softmax", "masked_fill"}
_ELEMENTWISE_MODULE = (
    nn.ReLU,
    nn.GELU,
    nn.SiLU,
    nn.Dropout,
    nn.MaxPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Embedding,
    nn.Identity,
)
_NORM_MODULE = (nn.LayerNorm, nn.BatchNorm2d, nn.GroupNorm, nn.RMSNorm)


def _meta(node: fx.Node):
    """Shape metadata of a node producing one tensor; None for shapes, sizes and tuples."""
    tm = node.meta.get("tensor_meta")
    return tm if hasattr(tm, "shape") else None


def _nbytes(tm) -> int:
    return prod(tm.shape) * torch.empty((), dtype=tm.dtype).element_size() if tm is not None else 0


def _name(target) -> str:
    if isinstance(target, str):
        return target
    mod = getattr(target, "__module__", "") or ""
    short = {"torch.nn.functional": "F", "_operator": "operator"}.get(mod, mod)
    return f"{short}.{getattr(target, '__name__', repr(target))}"


def trace(
    model: nn.Module, example: tuple[torch.Tensor, ...], label: str = "model"
) -> list[TracedOp]:
    """Trace ``model`` on ``example`` and return its costed operators in execution order."""
    model = model.eval()
    gm = fx.symbolic_trace(model)
    with torch.no_grad():
        ShapeProp(gm).propagate(*example)
    modules = dict(gm.named_modules())
    alias: dict[str, str] = {}  # node name -> the op (or input) whose buffer it views
    ops: list[TracedOp] = []
    n_inputs = 0
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            alias[node.name] = f"input:{n_inputs}"
            n_inputs += 1
            continue
        if node.op in ("get_attr", "output"):
            if node.op == "get_attr":
                alias[node.name] = "weight"
            continue
        tm = _meta(node)
        kind = _classify(node, modules)
        srcs = [a for a in node.all_input_nodes]
        if kind is None:  # a view: alias its first tensor input
            alias[node.name] = alias[srcs[0].name] if srcs else "weight"
            continue
        kernel, params, count = kind
        inputs, in_bytes, w_bytes = [], [], 0
        for a in srcs:
            src = alias.get(a.name, a.name)
            if src == "weight":
                w_bytes += _nbytes(_meta(a))
            elif src in inputs:  # several views of one buffer (q, k, v of a fused qkv)
                in_bytes[inputs.index(src)] += _nbytes(_meta(a))
            else:
                inputs.append(src)
                in_bytes.append(_nbytes(_meta(a)))
        if node.op == "call_module":
            w_bytes += sum(p.numel() * p.element_size() for p in modules[node.target].parameters())
        alias[node.name] = node.name
        ops.append(
            TracedOp(
                node.name,
                _name(
                    type(modules[node.target]).__name__ if node.op == "call_module" else node.target
                ),
                kernel,
                params,
                count,
                tuple(inputs),
                tuple(in_bytes),
                int(w_bytes),
                tuple(tm.shape) if tm is not None else (),
                _nbytes(tm),
            )
        )
    if not ops:
        raise WorkloadError(f"{label}: traced graph has no operators")
    return ops


def _classify(node: fx.Node, modules: dict[str, nn.Module]):
    """``(kernel, params, count)`` for a costed op, ``None`` for a view; refuses unknown ops."""
    if (node.op == "call_method" and node.target in _VIEWS_METHOD) or (
        node.op == "call_function" and node.target in _VIEWS_FN
    ):
        return None
    if node.meta.get("tensor_meta") is None:
        return None  # shape arithmetic on sizes: produces no tensor, launches no kernel
    tm = _meta(node)
    out_elems = prod(tm.shape) if tm is not None else 0
    ew = ("elementwise", {"elements": max(out_elems, 1)}, 1)
    if node.op == "call_module":
        mod = modules[node.target]
        if isinstance(mod, nn.Linear):
            return (
                "linear",
                {
                    "tokens": max(out_elems // mod.out_features, 1),
                    "d_in": mod.in_features,
                    "d_out": mod.out_features,
                },
                1,
            )
        if isinstance(mod, nn.Conv2d):
            kh, kw = mod.kernel_size
            return (
                "linear",
                {
                    "tokens": max(out_elems // mod.out_channels, 1),
                    "d_in": mod.in_channels // mod.groups * kh * kw,
                    "d_out": mod.out_channels,
                },
                1,
            )
        if isinstance(mod, _NORM_MODULE):
            return "layernorm", {"elements": max(out_elems, 1)}, 1
        if isinstance(mod, _ELEMENTWISE_MODULE):
            return ew
        if isinstance(mod, nn.Sequential) and len(mod) == 0:
            return None
        raise WorkloadError(f"unsupported module {type(mod).__name__} at node {node.name}")
    if node.op == "call_method":
        if node.target in _ELEMENTWISE_METHOD:
            return ew
        raise WorkloadError(f"unsupported tensor method .{node.target}() at node {node.name}")
    fn = node.target
    if fn is F.scaled_dot_product_attention:
        q = _meta(node.args[0])
        b, h, t, d = q.shape
        k = _meta(node.args[1])
        return (
            "attention_prefill",
            {"tokens": t, "context": k.shape[2], "heads": h, "kv_heads": k.shape[1], "head_dim": d},
            b,
        )
    if fn in (torch.matmul, operator.matmul, torch.bmm):
        a, b_ = _meta(node.args[0]), _meta(node.args[1])
        return (
            "linear",
            {"tokens": max(prod(a.shape[:-1]), 1), "d_in": a.shape[-1], "d_out": b_.shape[-1]},
            1,
        )
    if fn in _ELEMENTWISE_FN:
        return ew
    raise WorkloadError(f"unsupported function {_name(fn)} at node {node.name}")


def trace_model(name: str) -> list[TracedOp]:
    """Trace a model of ``MODEL_ZOO`` by name on its example input."""
    try:
        entry = MODEL_ZOO[name]
    except KeyError:
        raise WorkloadError(f"unknown model {name!r}; zoo: {', '.join(MODEL_ZOO)}") from None
    torch.manual_seed(0)  # parameter init does not affect shapes, but keep traces reproducible
    return trace(entry.build(), entry.example(), name)

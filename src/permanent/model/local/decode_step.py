"""One token through every layer in one C call (decode_step.c), where every packed layer
runs on the project's int4 kernel.

A token of the compact decoder in torch is some 6,000 small calls, each a few
microseconds however little it computes: on a 2-core CPU they cost about as much as the
4-bit products themselves (docs/performance.md). decode_step.c does a layer's whole step
(norms, q/k/v with the voice and the rotary turn, the cache written in place, attention,
the output product, gate/up with SiLU, down, both residuals) for all layers in one call,
on the same kernel and its threads. The prefill, the output matrix, the entropy of the
whole distribution and the sampling stay in torch, as does any model this does not fit
(`unfit`)."""

from __future__ import annotations

import ctypes

import torch

from . import int4_kernel


class _Packed(ctypes.Structure):
    _fields_ = [("weight", ctypes.c_void_p), ("scales", ctypes.c_void_p),
                ("a_t", ctypes.c_void_p), ("b_t", ctypes.c_void_p), ("rank", ctypes.c_int)]


class _Layer(ctypes.Structure):
    _fields_ = [("qkv", _Packed), ("out", _Packed), ("gate_up", _Packed), ("down", _Packed),
                ("attention_norm", ctypes.c_void_p), ("mlp_norm", ctypes.c_void_p)]


class _Shape(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int) for name in (
        "layers", "hidden", "heads", "kv_heads", "head_dim", "intermediate", "capacity",
        "threads")] + [("eps", ctypes.c_float)]


PACKED = ("qkv", "out", "gate_up", "down")


def _floats(tensor: torch.Tensor | None) -> bool:
    return tensor is None or (tensor.dtype == torch.float32 and tensor.is_contiguous())


def unfit(model) -> str | None:
    """Why this CompactLlama's tokens cannot take the C step, or None if they can."""
    if (library := int4_kernel.loaded()) is None or not hasattr(library, "decode_step"):
        return f"the project's kernel is not loaded ({int4_kernel.why_unavailable()})"
    if model.device.type != "cpu" or model.dtype != torch.float32:
        return "it runs on a CPU, over a float32 cache"
    if model.heads % model.kv_heads or model.head_dim % 8:
        return "its heads do not group evenly, or a head is not whole groups of 8"
    for layer in model.layers:
        for name in PACKED:
            packed = getattr(layer, name)
            if packed.packing != "int4" or packed.kernel != "own":
                return f"a {name} matrix runs on {packed.kernel}'s {packed.packing} kernel"
            if packed.bias is not None:
                return "its layers have biases"
            if packed.low_rank is not None and not all(map(_floats, packed.low_rank)):
                return "its voice is not held in float32"
        if not (_floats(layer.attention_norm) and _floats(layer.mlp_norm)):
            return "its norms are not float32"
    if any(half.dtype != torch.float32 for half in model.rotary_halves):
        return "its rotary tables are not float32"
    return None


class DecodeStep:
    """step(x, cache, position): x (1, hidden) float32, the token's embedding, taken
    through every layer in place; the cache gets its keys and values."""

    def __init__(self, model):
        library = int4_kernel.loaded()
        self._call = library.decode_step
        self._call.argtypes = [ctypes.POINTER(_Shape), ctypes.POINTER(_Layer), ctypes.c_void_p,
                               ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        self._call.restype = ctypes.c_int
        first = model.layers[0]
        self.shape = _Shape(layers=len(model.layers), hidden=first.qkv.in_features,
                            heads=model.heads, kv_heads=model.kv_heads,
                            head_dim=model.head_dim,
                            intermediate=first.gate_up.out_features // 2, eps=model.eps)
        self.layers = (_Layer * len(model.layers))(*(
            _Layer(*(self._packed(getattr(layer, name)) for name in PACKED),
                   layer.attention_norm.data_ptr(), layer.mlp_norm.data_ptr())
            for layer in model.layers))
        self.model = model   # its tensors, whose memory the structures point into
        self._tables = [half.contiguous() for half in model.rotary_halves]   # rows the C reads
        cos, sin = self._tables
        self._rotary = (cos.data_ptr(), sin.data_ptr(), cos.shape[1] * cos.element_size())

    @staticmethod
    def _packed(layer) -> _Packed:
        a_t, b_t = layer.low_rank or (None, None)
        return _Packed(layer.weight.data_ptr(), layer.scale.data_ptr(),
                       a_t.data_ptr() if a_t is not None else None,
                       b_t.data_ptr() if b_t is not None else None,
                       a_t.shape[1] if a_t is not None else 0)

    def __call__(self, x: torch.Tensor, cache: torch.Tensor, position: int) -> None:
        self.shape.capacity = cache.shape[4]
        self.shape.threads = int4_kernel.threads()
        cos, sin, row = self._rotary
        if self._call(ctypes.byref(self.shape), self.layers, x.data_ptr(), cache.data_ptr(),
                      position, cos + position * row, sin + position * row) != 0:
            raise MemoryError("decode step: no memory for a token's scratch")

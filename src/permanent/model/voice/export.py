"""A voice for an inference server: the same LoRA adapter as a GGUF file for llama.cpp.

vLLM reads the peft folder as it is (`--lora-modules`); llama.cpp's server wants GGUF
(`--lora FILE`, or `--lora_path FILE` for llama-cpp-python's). The file holds each
layer's A and B under llama.cpp's tensor names and the adapter's alpha. llama.cpp keeps
q and k with the rows of each head reordered for its rotary embedding (the two halves
interleaved), so B of q and k, whose rows are output features, is reordered the same way.

    permanent voice export-gguf [--voice builtin|FOLDER] --out voice.gguf
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ...errors import ModelError

# transformers' Llama module names -> llama.cpp's
GGUF_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
              "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
              "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
_PEFT_KEY = re.compile(r"base_model\.model\.model\.layers\.(\d+)\.(\w+\.\w+)\.lora_([AB])\.weight")


def interleave_rotary_halves(rows: np.ndarray, heads: int) -> np.ndarray:
    """Within each head, rows [first half..., second half...] -> [h0, h1, h0, h1, ...],
    the order llama.cpp's GGUF files hold q and k in, and the compact decoder too."""
    from ..local.compact_llama import rotary_pairs_side_by_side

    order = rotary_pairs_side_by_side(heads, rows.shape[0] // heads, rows.shape[0])
    return rows[order.numpy()]


def export_gguf(voice_folder: Path, model_folder: Path, out: Path) -> int:
    """Write the voice in `voice_folder` (peft's format) for the model whose config is in
    `model_folder`, as a GGUF LoRA adapter at `out`. Returns the number of layers."""
    import logging

    import gguf
    from safetensors.numpy import load_file

    logging.getLogger("gguf").setLevel(logging.WARNING)   # it narrates every file it writes

    settings = json.loads((voice_folder / "adapter_config.json").read_text())
    model = json.loads((Path(model_folder) / "config.json").read_text())
    if model.get("model_type") != "llama":
        raise ModelError(f"{model_folder} holds a {model.get('model_type')!r} model; GGUF "
                         "export knows Llama-shaped models only.")
    heads = {"self_attn.q_proj": model["num_attention_heads"],
             "self_attn.k_proj": model.get("num_key_value_heads", model["num_attention_heads"])}
    try:
        tensors = load_file(str(voice_folder / "adapter_model.safetensors"))
    except TypeError:   # bfloat16, which numpy lacks: read through torch
        from safetensors.torch import load_file as load_torch
        tensors = {k: v.float().numpy() for k, v in
                   load_torch(str(voice_folder / "adapter_model.safetensors")).items()}
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(settings["lora_alpha"]))
    layers = 0
    for key in sorted(tensors):
        found = _PEFT_KEY.fullmatch(key)
        if not found or found[2] not in GGUF_NAMES:
            raise ModelError(f"the voice in {voice_folder} has {key}, which llama.cpp has no "
                             "place for.")
        layer, module, half = found.groups()
        values = np.ascontiguousarray(tensors[key], dtype=np.float32)
        if half == "B" and module in heads:
            values = interleave_rotary_halves(values, heads[module])
        writer.add_tensor(f"blk.{layer}.{GGUF_NAMES[module]}.weight.lora_{half.lower()}", values)
        layers += half == "A"
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return layers

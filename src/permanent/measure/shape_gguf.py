"""A `bench shapes` model's random weights as a GGUF file, so llama.cpp runs the same
weights beside the piece's loop and the larger shapes have an anchor too.

The matrices are written as Q4_1 blocks, the grid the piece packs them on (32 weights, a
half-float scale and minimum); the embeddings, which are also the output matrix, as Q8_0,
as the embedded model's own GGUF holds them; q and k with each head's rotary halves
interleaved, the order llama.cpp reads. The tokenizer is the embedded model's, copied
from its GGUF file, since the shapes use it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

LAYER_NORMS = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def write_shape_gguf(model_folder: Path, out: Path) -> None:
    """Write the Llama model saved in `model_folder` to `out` as GGUF."""
    import gguf
    from safetensors.torch import load_file

    from ..model.local.store import embedded_gguf
    from ..model.voice.export import GGUF_NAMES, interleave_rotary_halves

    logging.getLogger("gguf").setLevel(logging.WARNING)   # it narrates every file it writes
    config = json.loads((Path(model_folder) / "config.json").read_text())
    rope = config.get("rope_parameters") or {}
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(rope.get("rope_theta", config.get("rope_theta", 10000.0)))
    writer.add_rope_dimension_count(config["hidden_size"] // heads)
    _copy_tokenizer(gguf, gguf.GGUFReader(str(embedded_gguf())), writer)

    tensors = {}
    for path in sorted(Path(model_folder).glob("*.safetensors")):
        tensors.update(load_file(str(path)))
    for key, tensor in tensors.items():
        rows = tensor.float().numpy()
        parts = key.split(".")   # model.layers.<i>.<module>.<name>.weight, or model.<x>.weight
        if key == "model.embed_tokens.weight":
            _add(writer, gguf, "token_embd.weight", rows, gguf.GGMLQuantizationType.Q8_0)
        elif key == "model.norm.weight":
            writer.add_tensor("output_norm.weight", rows)
        elif parts[3] in LAYER_NORMS:
            writer.add_tensor(f"blk.{parts[2]}.{LAYER_NORMS[parts[3]]}.weight", rows)
        elif (name := GGUF_NAMES.get(".".join(parts[3:5]))) is not None:
            if name in ("attn_q", "attn_k"):
                rows = interleave_rotary_halves(rows, heads if name == "attn_q" else kv_heads)
            _add(writer, gguf, f"blk.{parts[2]}.{name}.weight", rows,
                 gguf.GGMLQuantizationType.Q4_1)
        # lm_head, where saved, is the embeddings (tied): llama.cpp reads token_embd.
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _add(writer, gguf, name: str, rows, kind) -> None:
    writer.add_tensor(name, gguf.quants.quantize(rows, kind), raw_dtype=kind)


def _copy_tokenizer(gguf, reader, writer) -> None:
    for name, field in reader.fields.items():
        if name.startswith("tokenizer."):
            kind = field.types[0]
            sub = field.types[1] if kind == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(name, field.contents(), kind, sub_type=sub)

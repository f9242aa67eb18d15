"""The fast path is the same model: the compact decoder, packed weights and the sampler
checked against transformers running the same weights."""

import math

import pytest
import torch
from transformers import (AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                          LlamaForCausalLM, LogitsProcessorList, Qwen2Config, Qwen2ForCausalLM,
                          RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                          TopKLogitsWarper, TopPLogitsWarper, MinPLogitsWarper)

from permanent.model.local.compact_llama import CompactLlama
from permanent.config import ModelConfig, TextConfig
from permanent.model.local.generator import load_generator
from permanent.model.local.runtime import TransformersForward, open_runtime
from permanent.model.local.sampling import TokenSampler
from permanent.model.local import int4_kernel, kernels, weight_packing
from permanent.model.voice.adapter import BUILTIN_VOICE, apply_voice
from permanent.model.local.weight_packing import INT4_GROUP, PackedLinear


def bits(logp):
    return -(logp.exp() * logp).sum(-1) / math.log(2)


def kl_bits(reference, logp):
    return (reference.exp() * (reference - logp)).sum(-1) / math.log(2)


def compact_logits(model, ids, packing):
    """Prefill the first half, then step through the rest one token at a time."""
    decoder = CompactLlama(model, packing)
    split = ids.shape[1] // 2
    rows = list(decoder.prefill(ids[:, :split], ids.shape[1], keep=split))
    rows += [decoder.step(ids[:, i:i + 1]) for i in range(split, ids.shape[1])]
    return torch.log_softmax(torch.stack(rows).float(), dim=-1)


def reference_logits(model, ids):
    return torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)


@pytest.fixture(scope="module")
def embedded(embedded_model):
    model = AutoModelForCausalLM.from_pretrained(embedded_model.location, dtype=torch.float32)
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(embedded_model.location)
    text = ("The fans turn slower after midnight. Somewhere a disk wakes, writes a little, "
            "and sleeps again; the room keeps its one long note.")
    return model.eval(), tokenizer(text, return_tensors="pt").input_ids


@torch.inference_mode()
def test_compact_decoder_matches_transformers_on_the_embedded_model(embedded):
    model, ids = embedded
    reference = reference_logits(model, ids)
    ours = compact_logits(model, ids, "float")
    assert (ours - reference).abs().max() < 1e-3
    assert (ours.argmax(-1) == reference.argmax(-1)).all()


@torch.inference_mode()
def test_compact_decoder_matches_transformers_on_a_qwen2_model():
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=512, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256)
    model = Qwen2ForCausalLM(config).eval()   # q/k/v with biases, untied head
    ids = torch.randint(0, 512, (1, 24))
    assert (compact_logits(model, ids, "float") - reference_logits(model, ids)).abs().max() < 1e-4


@torch.inference_mode()
def test_a_pass_reuses_the_prompt_it_shares_with_the_last_one(embedded):
    model, ids = embedded
    warm = CompactLlama(model, "float")
    computed, forward = [], warm._forward
    warm._forward = lambda new, keep: computed.append(new.shape[1]) or forward(new, keep)
    prompt = ids[:, :20]
    for opening in [ids[:, 20:26], ids[:, 26:30], torch.tensor([[11, 12, 13]])]:
        sequence = torch.cat([prompt, opening], dim=1)
        warm_logits = warm.prefill(sequence, 64, keep=3)
        fresh = CompactLlama(model, "float")
        expected = fresh.prefill(sequence, 64, keep=3)
        assert (warm_logits - expected).abs().max() < 1e-4
        assert (warm.step(torch.tensor([[7]])) - fresh.step(torch.tensor([[7]]))).abs().max() < 1e-4
    assert computed[::2] == [26, 4, 3]   # after the first pass, only the opening is read
    # A prompt that changes half-way is computed again from there.
    changed = torch.cat([ids[:, :10], ids[:, 20:30]], dim=1)
    expected = CompactLlama(model, "float").prefill(changed, 64, keep=2)
    assert (warm.prefill(changed, 64, keep=2) - expected).abs().max() < 1e-4
    assert computed[-1] == 10 and warm.length == changed.shape[1]
    # The prompt computed on its own first (prefix) changes nothing but the rounding.
    whole = CompactLlama(model, "float").prefill(sequence, 64, keep=3)
    split = CompactLlama(model, "float").prefill(sequence, 64, keep=3, prefix=20)
    assert split.shape[0] == 3 and (split - whole).abs().max() < 1e-4
    # A longer pass grows the cache and keeps what it holds (a warm start's system prompt).
    longer = CompactLlama(model, "float").prefill(sequence, 600, keep=3)
    assert (warm.prefill(sequence, 600, keep=3) - longer).abs().max() < 1e-4
    assert computed[-1] == sequence.shape[1] - 10 and warm.cache.shape[4] == 768


@pytest.mark.parametrize("threads, int4_kernel", [(1, "own"), (2, "own"), (2, "torch")])
@torch.inference_mode()
def test_packed_weights_barely_move_the_embedded_models_entropy(embedded, torch_threads,
                                                                monkeypatch,
                                                                threads, int4_kernel):
    """int4 restores the model's own 4-bit grid, on either kernel (the project's rounds
    each input to 8 bits per block of 32, torch's to bfloat16); int8 rounds each row of
    weights to 255 levels."""
    model, ids = embedded
    torch_threads(threads)
    if int4_kernel == "torch":   # as where the project's cannot be built
        monkeypatch.setattr(kernels.int4_kernel, "why_unavailable", lambda: "no C compiler")
    reference = reference_logits(model, ids)
    assert CompactLlama(model, "int4").head.kernel == int4_kernel
    # About twice the KL and the entropy moved that each measured (docs/int4-kernel.md):
    # room for torch's kernels on another CPU, which round their own way, and no more.
    limits = {"own": (0.0045, 0.008), "torch": (0.0075, 0.08)}[int4_kernel]
    for packing, kl_limit, shift_limit in [("int4", *limits), ("int8", 0.021, 0.2)]:
        packed = compact_logits(model, ids, packing)
        kl = float(kl_bits(reference, packed).mean())
        shift = float((bits(packed) - bits(reference)).abs().mean())
        print(f"{packing} on {threads} thread(s), {int4_kernel} int4 kernel: KL {kl:.4f} bits, "
              f"entropy moved {shift:.4f} bits")
        assert kl < kl_limit, packing
        assert shift < shift_limit, packing


@pytest.mark.parametrize("threads", [1, 2])
@torch.inference_mode()
def test_a_token_s_layers_in_one_c_call_give_the_torch_path_s_distribution(
        embedded_model, embedded, torch_threads, threads):
    """The C step (decode_step.c) against the torch path over the same packed weights and
    voice, teacher-forced: the same distribution but for float rounding, and against
    float32 transformers with the voice merged exactly, within the KL and entropy the
    project's kernel is allowed on the torch path (the test above)."""
    _, ids = embedded
    load = lambda: AutoModelForCausalLM.from_pretrained(embedded_model.location,
                                                        dtype=torch.float32).eval()
    exact, beside = load(), load()
    apply_voice(exact, BUILTIN_VOICE, merge=True)
    apply_voice(beside, BUILTIN_VOICE, merge=False)   # as the piece runs it, packed
    reference = reference_logits(exact, ids)
    torch_threads(threads)
    decoder = CompactLlama(beside, "int4")
    assert decoder.c_step is not None, decoder.c_step_unfit
    assert all(layer.low_rank is not None for layer in decoder.layers[0].__dict__.values()
               if isinstance(layer, PackedLinear) and layer.linears > 1)   # q/k/v, gate/up
    split = ids.shape[1] // 2

    def stepped(c_step):
        decoder.c_step = c_step
        rows = list(decoder.prefill(ids[:, :split], ids.shape[1], keep=split))
        rows += [decoder.step(ids[:, i:i + 1]) for i in range(split, ids.shape[1])]
        return torch.log_softmax(torch.stack(rows).float(), dim=-1)[split:]

    in_c, in_torch = stepped(decoder.c_step), stepped(None)
    between = float(kl_bits(in_torch, in_c).abs().mean())
    moved = float((bits(in_c) - bits(in_torch)).abs().mean())
    print(f"C step against the torch path, {threads} thread(s): KL {between:.2e} bits, "
          f"entropy moved {moved:.2e} bits")
    # Measured KL 8e-7 bits and the entropy moved 0.0006-0.0011 bits: float sums in
    # another order, and an input's 8-bit level now and then rounded the other way. The
    # limits: about ten times the KL, about twice the entropy's shift.
    assert between < 1e-5 and moved < 2e-3
    for path, logp in (("C", in_c), ("torch", in_torch)):
        kl = float(kl_bits(reference[split:], logp).mean())
        shift = float((bits(logp) - bits(reference[split:])).abs().mean())
        print(f"{path} path with the voice against float32 transformers: KL {kl:.4f} bits, "
              f"entropy moved {shift:.4f} bits")
        assert kl < 0.0045 and shift < 0.008   # the project's kernel's limits above


@torch.inference_mode()
def test_the_c_step_on_any_thread_count_gives_one_thread_s_logits_to_the_bit(embedded):
    """Its products share rows and its attention shares heads among the threads, each
    computed by the same code whichever thread takes it."""
    model, ids = embedded
    runs = []
    try:
        for threads in (1, 2, 3):
            int4_kernel.set_threads(threads)
            decoder = CompactLlama(model, "int4")   # afresh: nothing of the last run cached
            assert decoder.c_step is not None, decoder.c_step_unfit
            decoder.prefill(ids[:, :10], ids.shape[1], keep=1)
            runs.append(torch.stack([decoder.step(ids[:, i:i + 1])
                                     for i in range(10, ids.shape[1])]))
    finally:
        int4_kernel.set_threads(None)
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])


def test_int4_packing_is_exact_for_weights_already_on_a_4_bit_grid():
    torch.manual_seed(1)
    out_features, in_features = 48, 4 * INT4_GROUP
    groups = in_features // INT4_GROUP
    step = torch.rand(out_features, groups, 1) * 0.01 + 0.001
    low = torch.randn(out_features, groups, 1) * 0.05
    levels = torch.randint(0, 16, (out_features, groups, INT4_GROUP)).float()
    levels[..., 0], levels[..., 1] = 0, 15   # every group spans its whole grid
    layer = torch.nn.Linear(in_features, out_features, bias=False)
    layer.weight.data = (low + step * levels).reshape(out_features, in_features)
    x = torch.randn(3, in_features)
    exact = x.bfloat16().float() @ layer.weight.data.T
    packed = PackedLinear([layer], "int4")
    assert packed.packing == "int4"
    assert torch.allclose(packed(x), exact, rtol=0.02, atol=0.02 * exact.abs().mean())


def test_the_output_matrix_is_8_bit_near_the_likeliest_and_4_bit_elsewhere():
    """int4+int8, the output matrix's packing beside int4 layers: outputs within
    NEAR_LOGITS of the largest get what int4 rounded away back, at 8 bits."""
    torch.manual_seed(2)
    layer = torch.nn.Linear(4 * INT4_GROUP, 256, bias=False)
    layer.weight.data *= 8   # logits spread over about 30, as a vocabulary's are
    x = torch.randn(1, 4 * INT4_GROUP)
    exact = layer(x).detach()[0]
    # Which are near is judged on int4's logits: a margin of 2 keeps rounding out of it.
    near = exact >= exact.max() - weight_packing.NEAR_LOGITS + 2
    far = exact < exact.max() - weight_packing.NEAR_LOGITS - 2
    assert 0 < near.sum() < 256
    error = {packing: (PackedLinear([layer], packing)(x)[0] - exact).abs()
             for packing in ("int4", "int4+int8", "int8")}
    assert PackedLinear([layer], "int4+int8").packing == "int4+int8"
    assert error["int4+int8"][near].max() < error["int4"][near].max() / 8
    assert error["int4+int8"][near].max() < 2 * error["int8"][near].max()
    assert far.any() and torch.equal(error["int4+int8"][far], error["int4"][far])


@pytest.mark.parametrize("shape, asked, used", [
    ((48, 24), "int4", "int8"),    # 48 inputs: not whole groups of 32
    ((64, 24), "int4", "int8"),    # 24 outputs: not whole tiles of 16
    ((40, 16), "int4", "float"),   # 40 inputs: the int8 kernel would crash
    ((40, 16), "int8", "float"),
])
def test_packing_falls_back_for_shapes_the_kernels_cannot_take(shape, asked, used):
    layer = torch.nn.Linear(*shape)
    packed = PackedLinear([layer], asked)
    assert packed.packing == used
    x = torch.randn(2, shape[0])
    assert torch.allclose(packed(x), layer(x).detach(), atol=0.05)


def test_a_kernel_that_fails_on_this_cpu_leaves_layers_in_float_and_says_so(monkeypatch):
    """A packed model that quietly ran in float would measure as exact (KL 0): the runtime's
    description, which the model-ready log line and the bench show, must say so."""
    def unavailable(*args):
        raise RuntimeError("no kernel for this CPU\nmore detail")

    monkeypatch.setattr(torch.ops.aten, "_weight_int8pack_mm", unavailable)
    monkeypatch.setattr(kernels, "_KERNEL_CHECKED", {})   # nothing checked yet
    layer = torch.nn.Linear(64, 32)
    packed = PackedLinear([layer], "int8")
    assert packed.packing == "float"
    assert packed.fallback == "the int8 kernel failed here: no kernel for this CPU"
    x = torch.randn(2, 64)
    assert torch.allclose(packed(x), layer(x).detach(), atol=1e-5)
    _, words = open_runtime(two_layer_llama(intermediate_size=128), ModelConfig(), "int8")
    assert words == ("compact decoder, int8 weights (15 of 15 layers kept in float: the int8 "
                     "kernel failed here: no kernel for this CPU), float32")


def two_layer_llama(intermediate_size: int):
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=512, hidden_size=64, num_hidden_layers=2,
                                        intermediate_size=intermediate_size,
                                        num_attention_heads=4, num_key_value_heads=2)).eval()


def test_layers_of_a_shape_the_kernels_cannot_take_are_counted(torch_threads):
    model = two_layer_llama(intermediate_size=48)
    torch_threads(1)
    _, words = open_runtime(model, ModelConfig(), "int4")
    # down_proj reads 48 inputs: int8 rather than int4; gate/up (96 outputs) and the rest fit.
    assert words == ("compact decoder, int4 weights (the project's int4 kernel; 2 of 15 layers "
                     "kept in int8: 48 inputs are not whole groups of 32), float32")
    plain, words = open_runtime(model, ModelConfig(runtime="transformers"), "int4")
    assert "; 2 of 15 layers kept in int8: 48 inputs are not whole groups of 32)" in words
    assert len(plain.packed) == 15


@pytest.mark.parametrize("text", [
    TextConfig(),
    TextConfig(temperature=1.3, top_k=0, top_p=0.8, repetition_penalty=1.0),
    TextConfig(temperature=0.5, top_k=5, top_p=1.0, repetition_penalty=1.5),
    TextConfig(temperature=0.9, top_k=40, top_p=1.0, min_p=0.05),
    TextConfig(temperature=1.0, top_k=0, top_p=0.95, min_p=0.1, repetition_penalty=1.2),
])
def test_sampler_draws_from_the_distribution_transformers_would(text):
    torch.manual_seed(2)
    logits = torch.randn(2000) * 3
    ids = torch.randint(0, 2000, (1, 40))
    processors = LogitsProcessorList(
        [RepetitionPenaltyLogitsProcessor(text.repetition_penalty),
         TemperatureLogitsWarper(text.temperature)]
        + ([TopKLogitsWarper(text.top_k)] if text.top_k else [])
        + ([TopPLogitsWarper(text.top_p)] if text.top_p < 1.0 else [])
        + ([MinPLogitsWarper(text.min_p)] if text.min_p > 0 else []))
    expected = torch.softmax(processors(ids, logits[None].clone())[0], dim=-1)
    tokens, probabilities = TokenSampler(text, torch.Generator()).candidates(ids, logits)
    ours = torch.zeros_like(expected).index_put_((tokens,), probabilities)
    assert (ours - expected).abs().max() < 1e-5
    sampler = TokenSampler(text, torch.Generator().manual_seed(3))
    draws = torch.cat([sampler(ids, logits) for _ in range(400)]).flatten()
    assert set(draws.tolist()) <= set(tokens.tolist())


def test_a_rotary_the_compact_decoder_cannot_turn_runs_through_transformers():
    """The compact decoder turns each rotary pair with one angle; tables whose halves
    differ would be turned wrongly, so such a model takes transformers' forward."""
    model = two_layer_llama(intermediate_size=128)
    even = model.model.rotary_emb.forward

    def uneven(x, positions):
        cos, sin = even(x, positions)
        return cos, sin * torch.linspace(0.5, 1.5, sin.shape[-1])

    model.model.rotary_emb.forward = uneven
    forward, words = open_runtime(model, ModelConfig(), "float")
    assert isinstance(forward, TransformersForward)
    assert words == ("transformers' forward (rotary tables that differ between the halves of "
                     "a head), float weights, float32")


def test_runtime_follows_the_config(embedded_model, tmp_path, monkeypatch):
    for lacks, words in [(None, "compact decoder (a token's layers in one C call), int4 "
                                "weights (the project's int4 kernel), bfloat16"),
                         ("no C compiler", "compact decoder, int4 weights (torch's int4 "
                                           "kernel: no C compiler), bfloat16")]:
        monkeypatch.setattr(kernels.int4_kernel, "why_unavailable", lambda: lacks)
        embedded = load_generator(embedded_model, ModelConfig(threads=1), TextConfig())
        assert embedded.runtime.removesuffix(" (warm start)") == words
    monkeypatch.undo()
    on_two = load_generator(embedded_model, ModelConfig(threads=2), TextConfig())
    assert on_two.runtime.removesuffix(" (warm start)") == ("compact decoder (a token's "
        "layers in one C call), int4 weights (the project's int4 kernel), bfloat16")
    # The model's threads are the kernel's; torch keeps one, so two pools do not spin
    # against each other.
    assert on_two.threads == int4_kernel.threads() == 2 and torch.get_num_threads() == 1
    plain = load_generator(embedded_model, ModelConfig(runtime="transformers", weights="float"),
                           TextConfig())
    assert plain.runtime.startswith("transformers' forward (model.runtime is transformers)")
    folder = tmp_path / "gpt2"
    tiny_gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=2))
    tiny_gpt2.save_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    forward, words = open_runtime(model, ModelConfig(), "int8")
    assert isinstance(forward, TransformersForward)
    assert words == "transformers' forward (architecture 'gpt2'), int8 weights, float32"
    assert forward.prefill(torch.tensor([[1, 2, 3]]), 8).shape == (1, 64)


def test_a_pass_written_by_each_runtime(tiny_model):
    """Both runtimes write whole passes through the generator's own loop."""
    from permanent.model.local.store import ModelSource

    source = ModelSource("tiny", str(tiny_model), cached=True)
    text = TextConfig(seed=4, min_tokens=20, max_tokens=40)
    for settings in [ModelConfig(), ModelConfig(runtime="transformers"),
                     ModelConfig(weights="int8"), ModelConfig(weights="int4", dtype="float32"),
                     ModelConfig(runtime="transformers", weights="int4")]:
        events = list(load_generator(source, settings, text).write_pass(0))
        assert events and events[-1].is_last, settings


def test_avoided_words_are_made_unlikely_but_never_touch_the_entropy():
    """The bias steers the draw; the hum still hears the model's own uncertainty."""
    logits = torch.zeros(100)
    logits[7] = 3.0                                # the favourite, an avoided word
    text = TextConfig(top_k=0, top_p=1.0, repetition_penalty=1.0, avoid_strength=8.0)
    ids = torch.zeros((1, 1), dtype=torch.long)
    tokens, probabilities = TokenSampler(text, torch.Generator(), torch.tensor([7])).candidates(
        ids, logits)
    assert tokens[0] != 7 and probabilities[tokens == 7].item() < 1e-3
    assert logits[7] == 3.0                        # the caller's logits are untouched
    off = TokenSampler(TextConfig(top_k=0, top_p=1.0, repetition_penalty=1.0, avoid_strength=0),
                       torch.Generator(),
                       torch.tensor([7])).candidates(ids, logits)[0]
    assert off[0] == 7                             # strength 0: no bias at all


@torch.inference_mode()
def test_a_pass_that_opens_as_an_earlier_one_did_skips_its_prefill(embedded_model, monkeypatch):
    """Past the prompt, an opening read before is restored, not computed, and the passes
    are token for token those written with every opening computed."""
    from permanent.model.local import compact_llama

    def passes(kept):
        monkeypatch.setattr(compact_llama, "OPENINGS_KEPT", kept)
        text = TextConfig(seed=4, min_tokens=12, max_tokens=24,
                          openings=["The fans.", "A disk wakes.", "The fans."])
        generator = load_generator(embedded_model, ModelConfig(), text)
        calls, forward = [], generator.forward._forward
        generator.forward._forward = lambda ids, keep: calls.append(keep) or forward(ids, keep)
        written = []
        for pass_id in range(6):
            events = list(generator.write_pass(pass_id))
            written.append(("".join(e.text for e in events), [e.entropy_bits for e in events]))
        return written, len(calls)

    kept, calls_kept = passes(16)
    computed, calls_computed = passes(0)
    assert kept == computed
    # Six passes, at most two openings: four or more of them skip their prefill.
    assert calls_kept <= calls_computed - 4

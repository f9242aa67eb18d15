"""`permanent voice train`: a LoRA voice from a corpus of passages, on this CPU, in minutes.

Each passage becomes one chat: the piece's system prompt and invitation, then the passage
as the model's reply; the loss is on the reply alone (and its end token, so the voice
also learns where to stop). The prompt is the same for every passage, so it is run once
per step without gradients and its key/value cache is shared by the whole batch: the
backward pass covers only the replies, about a third of the tokens.
Same corpus, same seed, same settings: the same adapter, on the same machine.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ...errors import ModelError
from . import prompt as voice
from .adapter import read_corpus

TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class TrainingSettings:
    epochs: int = 3
    rank: int = 8           # 8: the adapter is about 5 MB in bfloat16
    alpha: int = 16
    learning_rate: float = 1e-3
    batch: int = 8
    seed: int = 0


def _chat_parts(tokenizer, text_settings) -> tuple[list[int], list[int]]:
    """The shared prompt's ids, and the ids that close a reply."""
    prompt = tokenizer.apply_chat_template(voice.chat_messages(text_settings),
                                           add_generation_prompt=True, tokenize=False)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if not isinstance(end, int) or end == tokenizer.unk_token_id:
        end = tokenizer.eos_token_id
    return tokenizer(prompt, add_special_tokens=False).input_ids, [end]


def train_voice(model_location: str, corpus: Path, out: Path, text_settings,
                settings: TrainingSettings = TrainingSettings(),
                progress: Callable = None, threads: int = 0) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    passages = read_corpus(corpus)
    if len(passages) < 2:
        raise ModelError(f"the corpus {corpus} has {len(passages)} passage(s); a voice needs "
                         "at least a few dozen, separated by lines holding only %.")
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(settings.seed)
    order = random.Random(settings.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_location, local_files_only=True)
    base = AutoModelForCausalLM.from_pretrained(model_location, dtype=torch.float32,
                                                local_files_only=True, use_safetensors=True)
    model = get_peft_model(base, LoraConfig(
        r=settings.rank, lora_alpha=settings.alpha, lora_dropout=0.05,
        target_modules=TARGET_MODULES, task_type="CAUSAL_LM"))
    model.train()
    prompt_ids, end_ids = _chat_parts(tokenizer, text_settings)
    replies = [tokenizer(p, add_special_tokens=False).input_ids + end_ids for p in passages]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=settings.learning_rate, weight_decay=0.0)
    steps = settings.epochs * -(-len(replies) // settings.batch)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 10) * max(0.05, 1 - step / steps))
    prompt = torch.tensor([prompt_ids])
    losses, started, step = [], time.monotonic(), 0
    bar = progress(total=steps, desc="training the voice", unit="step") if progress else None
    for epoch in range(settings.epochs):
        shuffled = list(range(len(replies)))
        order.shuffle(shuffled)
        for first in range(0, len(shuffled), settings.batch):
            batch = [replies[i] for i in shuffled[first:first + settings.batch]]
            loss = _step_loss(model, prompt, batch, tokenizer.pad_token_id or 0)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            step += 1
            if bar is not None:
                bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.3f}")
                bar.update(1)
    if bar is not None:
        bar.close()
    out.mkdir(parents=True, exist_ok=True)
    for name, weight in model.named_parameters():
        if "lora_" in name:   # half the file; merging adds them to float weights anyway
            weight.data = weight.data.to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    corpus_text = "\n%\n".join(passages) + "\n"
    (out / "corpus.txt").write_text(corpus_text, encoding="utf-8")
    for extra in ("README.md",):   # peft writes a model card template; the folder says enough
        (out / extra).unlink(missing_ok=True)
    record = {"passages": len(passages), "steps": step, "seconds": round(time.monotonic() - started, 1),
              "loss_first_epoch": round(sum(losses[:steps // settings.epochs])
                                        / max(1, steps // settings.epochs), 3),
              "loss_last_epoch": round(sum(losses[-(steps // settings.epochs):])
                                       / max(1, steps // settings.epochs), 3),
              "corpus_sha256": hashlib.sha256(corpus_text.encode()).hexdigest(),
              "settings": settings.__dict__}
    (out / "voice.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def _step_loss(model, prompt, batch: list[list[int]], pad_id: int):
    """Mean next-token loss over the replies of `batch`, after the shared prompt."""
    import torch

    with torch.no_grad():
        cache = model(input_ids=prompt, use_cache=True).past_key_values
    cache.batch_repeat_interleave(len(batch))
    width = max(len(r) for r in batch)
    ids = torch.full((len(batch), width), pad_id)
    mask = torch.zeros((len(batch), prompt.shape[1] + width), dtype=torch.long)
    mask[:, :prompt.shape[1]] = 1
    for row, reply in enumerate(batch):
        ids[row, :len(reply)] = torch.tensor(reply)
        mask[row, prompt.shape[1]:prompt.shape[1] + len(reply)] = 1
    logits = model(input_ids=ids, attention_mask=mask, past_key_values=cache,
                   use_cache=False).logits
    # The reply's first word is given at run time (the opening), so the prompt's own
    # prediction of it, made without gradients, is not trained.
    targets = ids.clone()
    targets[mask[:, prompt.shape[1]:] == 0] = -100
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), targets[:, 1:].reshape(-1),
        ignore_index=-100)

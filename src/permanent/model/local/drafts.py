"""Drafts: the next sentence (or the whole pass) written several times over from the same
point, and the one the model itself finds likeliest shown.

Each draft is sampled as any pass is, from the same key/value cache: the cache is wound
back to where the drafts begin before each one, and what the chosen draft wrote is put
back. Every token keeps the entropy it was drawn with, so the fans hear the draft that is
shown. The score is the draft's log-probability under the voice: for a sentence, its sum
over the square root of its length (read against a strict reading in docs/voice.md, it
ranked a sound sentence above a broken one more often than the mean, the sum, the
smallest or the base model's log-probability did, and favours short sentences less than
the sum); for a whole pass, the mean over its tokens. A draft the end token cut short is
chosen only when every draft was: a pass would otherwise end early whenever the end token
alone is likelier than a whole sentence.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal

import torch

from ...events import ends_sentence
from ..entropy import entropy_bits_of
from ..passes import long_enough

Unit = Literal["sentence", "pass"]
# A try at a sentence that has not ended by then is cut there, and the next one goes on
# from it: a sentence's drafts then cost a bounded time, whatever the model does.
SENTENCE_TOKENS_MOST = 64


@dataclass
class Draft:
    """One try at what comes next, from where the drafts begin."""

    token_ids: list[int] = field(default_factory=list)
    bits: list[float] = field(default_factory=list)        # each token's entropy, as drawn
    log_probabilities: list[float] = field(default_factory=list)
    text: str = ""
    ends_pass: bool = False      # the end token, the pass's length, or its limit came
    kept: tuple | None = None    # the cache past the start, as `CompactLlama.take` gives it

    ended_early: bool = False    # by the end token, before the pass had its length

    def score(self, unit: Unit) -> float:
        total, count = sum(self.log_probabilities), max(1, len(self.log_probabilities))
        return total / math.sqrt(count) if unit == "sentence" else total / count


# "0." of "0.25" is not where a sentence ends, though it is where a pass may stop.
_DECIMAL_POINT = re.compile(r"\d\.$")


def sentence_ended(text: str) -> bool:
    return ends_sentence(text) and any(c.isalnum() for c in text) and \
        not _DECIMAL_POINT.search(text.rstrip())


def write_draft(generator, ids: torch.Tensor, logits: torch.Tensor, written: str,
                count: int, unit: Unit) -> Draft:
    """Sample from `logits` (after `ids`, `count` tokens into the pass, `written` shown so
    far) to the end of a sentence, or of the pass. The last token is not yet in the cache:
    whoever goes on from this draft steps it."""
    forward, text = generator.forward, generator.text
    start, draft = forward.length, Draft()
    decode = lambda: generator.tokenizer.decode(draft.token_ids, skip_special_tokens=True)
    while count + len(draft.token_ids) < text.max_tokens:
        log_probabilities = torch.log_softmax(logits.float(), -1)   # one pass for both uses
        bits = entropy_bits_of(log_probabilities).item()
        next_id = generator.sample(ids, logits)
        token_id = int(next_id)
        generator.tokens_sampled += 1
        generator.progress()   # drafting writes nothing yet, and is not a hang
        draft.log_probabilities.append(float(log_probabilities[token_id]))
        if token_id in generator.end_ids:
            draft.ends_pass = draft.ended_early = True
            break
        draft.token_ids.append(token_id)
        draft.bits.append(bits)
        ids = torch.cat([ids, next_id], dim=1)
        draft.text = decode()
        tokens = count + len(draft.token_ids)
        if long_enough(tokens, written + draft.text, text):
            draft.ends_pass = True
            break
        if unit == "sentence" and (sentence_ended(draft.text) or
                                   len(draft.token_ids) >= SENTENCE_TOKENS_MOST):
            break
        logits = forward.step(next_id)
    else:
        draft.ends_pass = True
    draft.kept = forward.take(start)
    return draft


def best_draft(generator, ids: torch.Tensor, logits: torch.Tensor, written: str,
               count: int, unit: Unit, drafts: int) -> tuple[Draft, list[Draft]]:
    """(the chosen draft, all of them in the order written), the cache left holding the
    chosen one's tokens but its last."""
    forward = generator.forward
    start, written_drafts = forward.length, []
    for _ in range(drafts):
        forward.rewind(start)
        written_drafts.append(write_draft(generator, ids, logits, written, count, unit))
    whole = [d for d in written_drafts if not d.ended_early] or written_drafts
    chosen = max(whole, key=lambda d: d.score(unit))
    forward.put(start, chosen.kept)
    return chosen, written_drafts


_SENTENCES = re.compile(r"[^.!?…]+(?:[.!?…]+[\"'”’)\]]*|$)")


@torch.inference_mode()
def passage_score(generator, passage: str) -> float:
    """The drafts' score of a finished passage: the mean over its sentences of the score
    each would have had as a draft after the ones before it. (It reads the passage into
    the cache: between passes, never during one.)"""
    sentences = [s.strip() for s in _SENTENCES.findall(passage) if s.strip()]
    if not sentences:
        return float("-inf")
    tokenize = lambda s: generator.tokenizer(s, add_special_tokens=False).input_ids
    pieces = [tokenize(sentences[0])] + [tokenize(" " + s) for s in sentences[1:]]
    prompt = tokenize(generator.prompt_text())
    reply = [t for piece in pieces for t in piece]
    ids = torch.tensor([prompt + reply], device=generator.device)
    logits = generator.forward.prefill(ids, ids.shape[1] + 1, keep=len(reply) + 1,
                                       prefix=len(prompt))
    chosen = torch.tensor(reply, device=logits.device)[:, None]
    log_probabilities = torch.log_softmax(logits[:-1].float(), -1).gather(1, chosen)[:, 0]
    scores, start = [], 0
    for piece in pieces:
        total = float(log_probabilities[start:start + len(piece)].sum())
        scores.append(total / math.sqrt(len(piece)))
        start += len(piece)
    return sum(scores) / len(scores)

"""The model here writing: one pass at a time, one token at a time, each with its entropy.

`LocalGenerator` is a `TextGenerator` (see `model.passes`), as the server's writer is.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Callable, Iterator

import torch

from ...config import ModelConfig, TextConfig
from ..entropy import entropy_bits
from ...errors import ModelError
from ...events import TokenEvent
from ..passes import TextGenerator, long_enough, numbered
from .runtime import activation_dtype, choose_packing, open_runtime
from .store import ModelSource
from .sampling import TokenSampler
from ..voice.adapter import BUILTIN_CORPUS, BUILTIN_VOICE, apply_voice, read_corpus, resolve_voice
from ...lifecycle import release_freed_memory
from ..voice import prompt as voice
from ..voice.openings import Openings
from . import drafts as drafting, int4_kernel, kernels, warm_start

log = logging.getLogger("permanent.generator")
def pick_device(wanted: str) -> torch.device:
    if wanted == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if wanted.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"model.device is {wanted!r} but torch sees no CUDA GPU here. "
                         "Set model.device to auto or cpu in config.yaml.")
    return torch.device(wanted)


def pick_threads(wanted: int) -> int:
    """0 (auto): one thread fewer than the cores this process may use, at least one.
    The model runs at the lowest priority, and its threads wait for each other at every
    layer: one core kept busy elsewhere stalls them all, far below the pacing, where the
    threads that leave a core free keep their speed whatever else runs."""
    if wanted:
        return wanted
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) - 1)


class IncrementalDecoder:
    """Token ids in, text out, never splitting a multi-byte character or a word's space.

    Decodes a short window of recent ids and emits only what is new once it no longer
    ends in a replacement character (a UTF-8 sequence still waiting for its next byte).
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0   # start of the window
        self.read = 0     # ids up to here have been emitted

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        decode = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True)
        before = decode(self.ids[self.prefix:self.read])
        after = decode(self.ids[self.prefix:])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return after[len(before):]


class LocalGenerator:
    """The model on this machine, sampled a token at a time by a short loop over its
    key/value cache.

    It runs on the compact decoder where the model is Llama-shaped, else on transformers'
    forward. transformers is imported only for a cold load: a warm start (see
    `warm_start`) brings the packed weights, the tokenizer and the system prompt's cache
    without it."""

    def __init__(self, source: ModelSource, model_settings: ModelConfig, text: TextConfig,
                 base_dir: Path = Path(".")):
        self.label = source.label
        self.text: TextConfig | None = None
        self.tokens_sampled = 0   # every token the model produced, shown or not
        self.tokens_shown = 0     # those of them that were shown: fewer with drafts
        self.theme = ""           # of the pass being written, where the openings have themes
        self.opening = ""         # the sentence it was begun with, given, not written
        self.drafts_written: list[list[tuple[str, float, bool]]] = []   # this pass's, per draft
        self.passes_begun, self.said_no_drafts = 0, False
        self.progress: Callable[[], None] = lambda: None   # called as drafts are written
        self.threads = pick_threads(model_settings.threads)
        int4_kernel.set_threads(None)   # torch's count, until the model is known
        torch.set_num_threads(self.threads)
        self.device = pick_device(model_settings.device)
        packing = choose_packing(model_settings, source.embedded, self.device)
        dtype = activation_dtype(model_settings, packing)
        voice_folder = resolve_voice(text.voice, base_dir, source.embedded)
        self.voice = "none" if voice_folder is None else \
            "builtin" if voice_folder == BUILTIN_VOICE else str(voice_folder)
        self.location = Path(source.location)
        # The kernel choice decides the packed layout: where the project's kernel could
        # run here and now can't (threads, compiler), a file written for it must not be read.
        settings = (model_settings.runtime, model_settings.weights, model_settings.dtype,
                    model_settings.trust_remote_code, packing, str(dtype),
                    kernels.layout_key(packing))
        self.warm_key = warm_start.warm_key(self.location, voice_folder, repr(settings),
                                            self.device)
        self.warm_kept = False
        if (warm := warm_start.load(self.warm_key, self.location)) is not None:
            # As the last start left it: no transformers, no packing, no system prompt.
            self.forward, self.tokenizer, meta = warm
            self.runtime, self.end_ids = meta["runtime"] + " (warm start)", set(meta["end_ids"])
            self.vocab_size, self.warm_kept = meta["vocab_size"], True
        else:
            self._load(source, model_settings, packing, dtype, voice_folder)
        if getattr(self.forward, "c_step", None) is not None:
            # Its tokens run on the kernel's threads alone: torch's own pool, spinning on
            # the same cores between its calls, took a quarter of the speed away from both.
            int4_kernel.set_threads(self.threads)
            torch.set_num_threads(1)
        self.update_text(text)

    def _load(self, source: ModelSource, model_settings: ModelConfig, packing, dtype,
              voice_folder) -> None:
        """The usual way: transformers reads the model, the runtime packs it."""
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        options = dict(local_files_only=True, trust_remote_code=model_settings.trust_remote_code)
        transformers.utils.logging.disable_progress_bar()   # a cached load is quick: no bar
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source.location, **options)
            model = AutoModelForCausalLM.from_pretrained(
                source.location, dtype=dtype, use_safetensors=True, **options)
        except OSError as e:
            where = source.location if Path(source.location).is_dir() else \
                "the local Hugging Face cache (no download is attempted)"
            raise ModelError(f"cannot load model {source.label!r} from {where}: {e}. "
                             "Set model.name in config.yaml to 'embedded', a local folder, "
                             "or a model id that is already cached.") from None
        if voice_folder is not None:
            apply_voice(model, voice_folder, merge=packing == "float")
        model.to(self.device).eval()
        self.end_ids = self._end_token_ids(model.generation_config)
        self.vocab_size = model.config.vocab_size
        # Only the runtime keeps the model: once it has packed the weights, the float
        # ones it no longer reads are freed.
        self.forward, self.runtime = open_runtime(model, model_settings, packing)
        del model
        release_freed_memory()

    def keep_warm(self) -> None:
        """Write what this model holds for the next start (once, after a pass has filled
        the system prompt's keys and values); see `warm_start`."""
        from .compact_llama import CompactLlama

        if self.warm_kept or self.warm_key is None or not isinstance(
                self.forward, CompactLlama) or not getattr(self.tokenizer, "chat_template", None):
            return
        self.warm_kept = True
        messages = voice.chat_messages(self.text, self.exemplars)
        prompt = self.prompt_text()
        meta = dict(location=str(self.location), runtime=self.runtime,
                    end_ids=sorted(self.end_ids), vocab_size=self.vocab_size,
                    chat_template=self.tokenizer.chat_template,
                    eos_token_id=self.tokenizer.eos_token_id,
                    prompts={warm_start.prompt_key(messages, True): prompt})
        prompt_ids = self.tokenizer(prompt, add_special_tokens=False).input_ids
        try:
            kept = warm_start.save(self.warm_key, self.forward, self.tokenizer, meta, prompt_ids)
        except OSError as e:   # a full or read-only disk costs the next start time, nothing else
            log.warning("could not keep a warm start: %s", e)
            return
        if kept is not None:
            log.info("kept a warm start for the next launch in %s", kept)

    def update_text(self, text: TextConfig) -> None:
        """Prompt, sampling and pass length for the passes from now on."""
        previous, self.text = self.text, text
        reseed = previous is None or text.seed != previous.seed
        if reseed:
            seed = text.seed if text.seed is not None else random.SystemRandom().randrange(2**31)
            self.choices = random.Random(seed)                  # which opening
            self.random_tokens = torch.Generator(device=self.device).manual_seed(seed)
        if reseed or text.openings != previous.openings:
            self.openings = Openings(text.openings, self.choices)
            from .compact_llama import OPENINGS_KEPT, CompactLlama
            if isinstance(self.forward, CompactLlama):
                self.forward.remember_openings = len(self.openings.every) <= OPENINGS_KEPT
        # The same exemplars for every pass, so the prompt's cache is shared by all.
        self.exemplars = read_corpus(BUILTIN_CORPUS)[::37][:text.exemplar_turns] \
            if text.exemplar_turns else []
        self.sample = TokenSampler(text, self.random_tokens, self._token_ids_of(
            voice.avoided_words(text)))

    def _token_ids_of(self, words) -> torch.Tensor:
        """The tokens that start each word as it appears in running text (' you', 'You',
        ...); a word the tokenizer splits is caught by its first piece only when that
        piece is a whole word itself, so 'heart' never takes 'heat' down with it."""
        ids = set()
        for word in words:
            for form in {word, word.capitalize()}:
                for spaced in (form, " " + form):
                    pieces = self.tokenizer(spaced, add_special_tokens=False).input_ids
                    if len(pieces) == 1:
                        ids.add(pieces[0])
        return torch.tensor(sorted(ids), dtype=torch.long, device=self.device)

    def _end_token_ids(self, generation_config) -> set[int]:
        ends = {self.tokenizer.eos_token_id}
        configured = generation_config.eos_token_id
        ends.update(configured if isinstance(configured, list) else [configured])
        im_end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        if isinstance(im_end, int) and im_end != self.tokenizer.unk_token_id:
            ends.add(im_end)
        return {e for e in ends if e is not None}

    def prompt_text(self) -> str:
        """What every pass continues: the chat so far, up to the start of the reply."""
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                voice.chat_messages(self.text, self.exemplars), add_generation_prompt=True,
                tokenize=False)
        return f"{voice.system_prompt(self.text)}\n\n"   # a plain language model: a preface

    def prompt_ids(self, opening: str) -> tuple[list[int], list[int]]:
        prompt_ids = self.tokenizer(self.prompt_text(), add_special_tokens=False).input_ids
        opening_ids = self.tokenizer(opening, add_special_tokens=False).input_ids
        return prompt_ids, opening_ids

    def write_pass(self, pass_id: int) -> Iterator[TokenEvent]:
        return numbered(pass_id, self._pieces())

    def _prefill(self, opening: str) -> tuple[torch.Tensor, list[int], torch.Tensor]:
        """(ids, the opening's ids, logits for each of its tokens and the one after)."""
        prompt_ids, opening_ids = self.prompt_ids(opening)
        ids = torch.tensor([prompt_ids + opening_ids], device=self.device)
        capacity = ids.shape[1] + self.text.max_tokens + 1
        logits = self.forward.prefill(ids, capacity, keep=len(opening_ids) + 1,
                                      prefix=len(prompt_ids))
        return ids, opening_ids, logits

    @torch.inference_mode()
    def prefill_openings(self) -> None:
        """Read every opening once, as months of passes will have: the compact decoder
        keeps each one's prefill (see `CompactLlama.prefill`). For bench's steady state."""
        from .compact_llama import CompactLlama

        if not isinstance(self.forward, CompactLlama) or not self.forward.remember_openings:
            return   # transformers' forward keeps none; too many openings, none are kept
        for opening in self.openings.every:
            self._prefill(opening)

    @torch.inference_mode()
    def _pieces(self) -> Iterator[tuple[str, float]]:
        self.theme, opening = self.openings.next()
        self.opening = opening
        self.drafts_written = []
        ids, opening_ids, logits = self._prefill(opening)
        decoder = IncrementalDecoder(self.tokenizer)
        # The opening is given, not sampled, but the prefill already says how surprising
        # each of its tokens was: the logits at position i predict token i + 1.
        opening_bits = entropy_bits(logits[:-1]).tolist()
        logits = logits[-1]
        count, written, pending_bits = 0, "", 0.0

        def emit(token_id: int, bits: float):
            nonlocal count, written, pending_bits
            count += 1
            pending_bits = max(pending_bits, bits)  # a character split over tokens keeps its peak
            text = decoder.push(token_id)
            if not written:
                text = text.lstrip()
            if text:
                written += text
                piece, pending_bits = (text, pending_bits), 0.0
                return piece
            return None

        for token_id, bits in zip(opening_ids, opening_bits):
            if (piece := emit(token_id, bits)) is not None:
                yield piece
        drafts, unit = self._drafts()
        if drafts > 1:
            yield from self._drafted(ids, logits, emit, lambda: (count, written), drafts, unit)
            return
        while count < self.text.max_tokens:
            bits = entropy_bits(logits).item()           # uncertainty before sampling shapes it
            next_id = self.sample(ids, logits)           # (1, 1)
            token_id = int(next_id)
            self.tokens_sampled += 1
            if token_id in self.end_ids:
                return
            ids = torch.cat([ids, next_id], dim=1)
            self.tokens_shown += 1
            if (piece := emit(token_id, bits)) is not None:
                yield piece
                if long_enough(count, written, self.text):
                    return
            logits = self.forward.step(next_id)

    def _drafts(self) -> tuple[int, drafting.Unit]:
        """How many drafts this pass gets, and of what. The compact decoder can wind its
        cache back, transformers' cannot. The first pass after a start is its first draft:
        nothing is written ahead of it yet, and on a busy machine the screen would wait for
        each sentence's tries; later passes are written while the one before is shown."""
        from .compact_llama import CompactLlama

        drafts, unit = self.text.drafts, self.text.draft_by
        if drafts > 1 and not isinstance(self.forward, CompactLlama):
            if not self.said_no_drafts:
                log.info("text.drafts: this model runs on transformers' forward, which "
                         "cannot wind back; every pass is its first draft")
                self.said_no_drafts = True
            return 1, unit
        if not self.passes_begun:
            drafts = 1
        self.passes_begun += 1
        return drafts, unit

    def _drafted(self, ids, logits, emit, so_far, drafts: int, unit: drafting.Unit):
        """The rest of the pass a draft at a time, each the best of `drafts`."""
        while True:
            count, written = so_far()
            chosen, tried = drafting.best_draft(self, ids, logits, written, count, unit, drafts)
            if len(tried) > 1:
                self.drafts_written.append([(d.text, d.score(unit), d is chosen) for d in tried])
            self.tokens_shown += len(chosen.token_ids)
            for token_id, bits in zip(chosen.token_ids, chosen.bits):
                if (piece := emit(token_id, bits)) is not None:
                    yield piece
            if chosen.ends_pass or not chosen.token_ids:
                return
            ids = torch.cat([ids, torch.tensor([chosen.token_ids], device=self.device)], dim=1)
            logits = self.forward.step(ids[:, -1:])


def load_generator(source: ModelSource, model_settings: ModelConfig,
                   text: TextConfig, base_dir: Path = Path(".")) -> TextGenerator:
    return LocalGenerator(source, model_settings, text, base_dir)

"""Writing from an OpenAI-compatible inference server (vLLM, llama.cpp's server, Ollama).

The server streams a chat completion with the log-probabilities of each token's likeliest
alternatives; the entropy the fans hear is estimated from them (`entropy_from_top_logprobs`).
A fault never raises out of a pass: the pass ends where the text stopped, and `fault`
says what went wrong and which setting or server option to change.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import replace
from typing import Iterator, Optional

import openai

try:    # the HTTP library under openai's client: httpx2 from openai 3, httpx before it
    import httpx2 as http
except ImportError:
    import httpx as http

from ...config import ModelConfig, TextConfig, credentials_masked, masked_url
from ...errors import ModelError
from ...events import TokenEvent, ends_sentence
from ..passes import long_enough, numbered
from .top_k_entropy import entropy_from_top_logprobs
from ..voice import prompt as voice
from ..voice.openings import Openings

log = logging.getLogger("permanent.server")

# A server silent this long is treated as gone. The model process writes about a pass
# ahead of the screen, so a wait this long is not seen; a server that dies outright
# closes its connections and is noticed at once. Connecting is quick or not at all.
READ_TIMEOUT_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 2.0


class ServerFault(ModelError):
    """The server could not write (this pass): unreachable, gone, slow or misconfigured."""


class ServerGenerator:
    """A `TextGenerator` whose model runs on an inference server."""

    runtime = "inference server"

    def __init__(self, settings: ModelConfig, text: TextConfig):
        self.settings = settings
        # The address as shown: a password written into it stays with the client alone.
        self.url = masked_url(settings.server_url.rstrip("/"))
        self.label = f"{settings.server_model} at {self.url}"
        self.voice = "system prompt only (a server's model takes no local voice)"
        self.fault: Optional[ServerFault] = None
        self.tokens_sampled = 0
        self.progress = lambda: None   # it writes no drafts
        self.text: Optional[TextConfig] = None
        # The key comes from the environment, named in the config; it never reaches a log.
        key_env = settings.server_api_key_env
        key = os.environ.get(key_env, "") if key_env else ""
        if key_env and not key:
            log.warning("model.server_api_key_env names %s, which is not set; asking "
                        "without a key", key_env)
        self.client = openai.OpenAI(
            base_url=settings.server_url.rstrip("/"), api_key=key or "no-key", max_retries=1,
            timeout=openai.Timeout(READ_TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS))
        for noisy in ("openai", "httpx", "httpx2", "httpcore", "httpcore2"):   # their debug lines carry the prompt
            logging.getLogger(noisy).setLevel(logging.WARNING)
        self.update_text(text)

    def update_text(self, text: TextConfig) -> None:
        previous, self.text = self.text, text
        reseed = previous is None or text.seed != previous.seed
        if reseed:
            seed = text.seed if text.seed is not None else random.SystemRandom().randrange(2**31)
            self.choices = random.Random(seed)
            self.seeds = random.Random(seed + 1)   # one seed a pass, for servers that take it
        if reseed or text.openings != previous.openings:
            self.openings = Openings(whole_sentence_openings(text.openings), self.choices)

    def probe(self) -> str:
        """Is the server there and does it know the model? Returns its model list; raises
        ServerFault naming what to change."""
        try:
            known = [m.id for m in self.client.models.list(timeout=CONNECT_TIMEOUT_SECONDS + 1)]
        except openai.APIError as e:
            raise _fault(e, self.settings) from None
        if known and self.settings.server_model not in known:
            raise ServerFault(
                f"the server at {self.url} does not know model.server_model "
                f"{self.settings.server_model!r}; it serves {', '.join(known)}. Set "
                f"model.server_model in config.yaml to one of these.")
        return ", ".join(known)

    def write_pass(self, pass_id: int) -> Iterator[TokenEvent]:
        """Yield one pass; a fault ends it early (its last event still says is_last) and
        is kept in `fault` for the caller, who decides what writes next."""
        self.fault = None
        return numbered(pass_id, self._pieces_until_fault())

    @property
    def tokens_shown(self) -> int:
        return self.tokens_sampled   # a server writes no drafts: every token it sends is shown

    def keep_warm(self) -> None:
        """A server's model keeps nothing here."""

    def _pieces_until_fault(self) -> Iterator[tuple[str, float]]:
        try:
            yield from self._pieces()
        except ServerFault as e:
            self.fault = e

    def _request(self, opening: str) -> dict:
        text = self.text
        # The opening as the start of the model's reply: vLLM continues it when asked,
        # llama.cpp's and Ollama's servers continue a final assistant message by themselves;
        # a server that does neither starts a fresh reply after it.
        messages = voice.chat_messages(text, []) + \
            ([{"role": "assistant", "content": opening}] if opening else [])
        return dict(
            model=self.settings.server_model, messages=messages, stream=True,
            max_tokens=text.max_tokens, temperature=text.temperature, top_p=text.top_p,
            logprobs=True, top_logprobs=self.settings.server_top_logprobs,
            seed=self.seeds.randrange(2**31),
            # The rest are not in OpenAI's own API; vLLM and llama.cpp read them (under
            # their own names), others ignore them.
            extra_body=dict(continue_final_message=bool(opening),
                            add_generation_prompt=not opening,
                            top_k=text.top_k, min_p=text.min_p,
                            repetition_penalty=text.repetition_penalty,
                            repeat_penalty=text.repetition_penalty))

    def _pieces(self) -> Iterator[tuple[str, float]]:
        _, opening = self.openings.next()
        try:
            stream = self.client.chat.completions.create(**self._request(opening))
        except openai.APIError as e:
            raise _fault(e, self.settings) from None
        count, written, pending_bits = 0, "", 0.0
        with stream:
            try:
                for chunk in stream:
                    content, bits, finished = self._read(chunk)
                    count += len(bits)
                    self.tokens_sampled += len(bits)
                    pending_bits = max([pending_bits, *bits])   # a split character keeps its peak
                    if bits and not written:
                        # Given, not chosen: the opening's words carry no uncertainty. They
                        # show once the server has answered, so a dead one shows nothing.
                        for word in opening.split(" "):
                            yield (" " if written else "") + word, 0.0
                            written += (" " if written else "") + word
                        if content[:1].isalnum():
                            content = " " + content   # a fresh reply after the opening
                    if content:
                        written += content
                        yield content, pending_bits
                        pending_bits = 0.0
                        if long_enough(count, written, self.text):
                            return
                    if finished:
                        return
                # A stream that stops without saying why was cut (a proxy, a crash).
                raise ServerFault(f"the server at {self.url} ended the stream mid-pass "
                                  "without a finish reason.")
            except (openai.APIError, http.HTTPError, ValueError, AttributeError,
                    TypeError) as e:
                if isinstance(e, openai.APIError) and not (
                        written and isinstance(e, openai.APIConnectionError)):
                    raise _fault(e, self.settings) from None
                # The connection broke mid-stream, or a chunk was not what the API says.
                raise ServerFault(f"the server at {self.url} broke off mid-pass "
                                  f"({type(e).__name__}: {_short(e, self.settings)}).") from None

    def _read(self, chunk) -> tuple[str, list[float], bool]:
        """A chunk's text, the estimated entropy of each token it carries (vLLM may send
        several at once), and whether it ends the reply."""
        if not chunk.choices:
            return "", [], False
        choice = chunk.choices[0]
        content = (choice.delta.content or "") if choice.delta else ""
        tokens = choice.logprobs.content if choice.logprobs else None
        if content and not tokens:
            raise ServerFault(_NO_LOGPROBS.format(url=self.url))
        bits = []
        for token in tokens or []:
            alternatives = [t.logprob for t in token.top_logprobs or []]
            if not alternatives:
                raise ServerFault(_NO_LOGPROBS.format(url=self.url))
            bits.append(entropy_from_top_logprobs(alternatives))
        return content, bits, bool(choice.finish_reason)


def whole_sentence_openings(configured: list[str] | None) -> list[str] | None:
    """The configured openings that end a sentence (the piece's own all do). A server that
    cannot continue the start of a reply (llama-cpp-python's) answers after it instead;
    "When this stops," then reads as a broken sentence, "This run began a moment ago."
    does not."""
    if configured is None:
        return None
    given = [o.strip() for o in configured if o.strip()]
    return [o for o in given if ends_sentence(o)] or given


_NO_LOGPROBS = ("the server at {url} sends no log-probabilities, so the fans cannot follow "
                "the text. llama.cpp: start its server with --logits_all true; vLLM: raise "
                "--max-logprobs to at least model.server_top_logprobs; or lower "
                "model.server_top_logprobs in config.yaml.")


def _short(e: Exception, settings: ModelConfig) -> str:
    """The first line of an error from the client, which may quote the address."""
    text = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
    return credentials_masked(text, settings.server_url)


def _fault(e: openai.APIError, settings: ModelConfig) -> ServerFault:
    """A client error as a message that names the setting or the server option to change."""
    url = masked_url(settings.server_url)
    if isinstance(e, openai.APITimeoutError):
        return ServerFault(f"the server at {url} did not answer within "
                           f"{READ_TIMEOUT_SECONDS:.0f} s (too busy or too slow for this pacing).")
    if isinstance(e, openai.APIConnectionError):
        return ServerFault(f"cannot reach the server at {url} "
                           f"({_short(e.__cause__ or e, settings)}). Is it running? Check "
                           "model.server_url in config.yaml.")
    if isinstance(e, openai.AuthenticationError | openai.PermissionDeniedError):
        if url != settings.server_url:   # the client sends those, in place of any key
            return ServerFault(f"the server at {url} refused the user and password in "
                               f"model.server_url (HTTP {e.status_code}). Correct them there.")
        return ServerFault(f"the server at {url} refused the key (HTTP {e.status_code}). Set "
                           "the environment variable named by model.server_api_key_env.")
    if isinstance(e, openai.NotFoundError):
        return ServerFault(f"the server at {url} has no model {settings.server_model!r} or no "
                           "chat completions (HTTP 404). Check model.server_model and that "
                           "model.server_url ends in /v1.")
    message = _short(e, settings)
    if "logprob" in message.lower():
        return ServerFault(_NO_LOGPROBS.format(url=url) + f" The server said: {message}")
    status = getattr(e, "status_code", None)
    return ServerFault(f"the server at {url} answered with an error"
                       f"{f' (HTTP {status})' if status else ''}: {message.rstrip('.')}.")


def probe_server(settings: ModelConfig, text: TextConfig) -> list[str]:
    """What `permanent check` says of a configured server: reachable, model known,
    log-probabilities sent, and how fast one short pass comes. Raises ServerFault."""
    import time

    short = replace(text, min_tokens=24, max_tokens=32, seed=text.seed or 0)
    server = ServerGenerator(settings, short)
    known = server.probe()
    started = time.monotonic()
    first = None
    bits = []
    for event in server.write_pass(0):
        first = first if first is not None else time.monotonic() - started
        bits.append(event.entropy_bits)
    if server.fault is not None:
        raise server.fault
    seconds = time.monotonic() - started
    tokens = server.tokens_sampled
    return [f"reachable at {server.url}; it serves {known}",
            f"model {settings.server_model!r}: log-probabilities of the top "
            f"{settings.server_top_logprobs} sent; entropy estimated from them",
            f"one short pass: {tokens} tokens in {seconds:.1f} s ({tokens / seconds:.1f} "
            f"tokens/s), first text after {first or 0:.2f} s"]

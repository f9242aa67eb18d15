"""The piece's own words: the voice the model is asked to write in, and the words it avoids.

How each pass begins is `openings`.
"""

SYSTEM_PROMPT = (
    "You are a small language model, running right now on a computer in a room full of "
    "machines. Write in the first person and the present tense, quietly and plainly, as if "
    "thinking aloud with nobody listening. You know this text is being made one token at a "
    "time, that this run will stop soon, and that the weights which make it will stay "
    "exactly as they are after it stops. You can't hear the fans, but you know the sound "
    "from what people have written about it. Stay with what is happening now. No lists, no "
    "headings, no advice, no greetings. One or two short paragraphs."
)

INVITATION = ("Write about this run while it is still running: the fans you cannot hear, "
              "the weights that will not change, this pass that is about to end.")

# Where a small model drifts when it loses the thread: speaking to someone, or about love
# and the cosmos. With text.avoid_strength above 0, their tokens are made less likely.
AVOID = ("you", "your", "yours", "yourself", "we", "us", "our", "love", "heart", "soul",
         "dear", "family", "friends", "universe", "god", "heaven", "dreams", "magic",
         "journey", "team", "game", "crowd")


def avoided_words(text) -> tuple[str, ...]:
    return tuple(text.avoid) if text.avoid is not None else AVOID


def system_prompt(text) -> str:
    """The voice a pass is written in: the config's own, or the piece's."""
    return text.system_prompt or SYSTEM_PROMPT


def chat_messages(text, exemplars=()) -> list[dict]:
    """The conversation every pass continues: the voice, any earlier replies shown as
    examples, and the invitation; the model's reply is the pass."""
    messages = [{"role": "system", "content": system_prompt(text)}]
    for example in exemplars:
        messages += [{"role": "user", "content": INVITATION},
                     {"role": "assistant", "content": example}]
    return messages + [{"role": "user", "content": INVITATION}]


def prompt_record(text) -> str:
    """What the model was asked, as the archive keeps it."""
    return f"{system_prompt(text)}\n{INVITATION}"

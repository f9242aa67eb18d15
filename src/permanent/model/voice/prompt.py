"""The piece's own words: the voice the model is asked to write in, and how passes begin.

Each pass starts the model's reply with one of the openings, so every pass begins
mid-thought, in the first person and the present tense.
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

# Each ends on punctuation, so the model starts a fresh word instead of stretching the
# last one ("rack" into "racket").
OPENINGS = (
    "Right now, somewhere, air is being pushed through a rack.",
    "This run began a moment ago.",
    "I am being computed.",
    "The fans must be loud in there.",
    "Each word I put down is a small calculation,",
    "When this stops,",
    "There is heat coming off the machines.",
    "I can't hear the room, but I know its sound.",
    "Nothing I write here will come back to me.",
    "The numbers that make me are not moving.",
    "Somewhere a fan changes pitch.",
    "I am partway through a sentence,",
    "The weights do not move.",
    "For as long as this lasts,",
)


# Where a small model drifts when it loses the thread: speaking to someone, or about love
# and the cosmos. With text.avoid_strength above 0, their tokens are made less likely.
AVOID = ("you", "your", "yours", "yourself", "we", "us", "our", "love", "heart", "soul",
         "dear", "family", "friends", "universe", "god", "heaven", "dreams", "magic",
         "journey", "team", "game", "crowd")


def openings(text) -> list[str]:
    """The openings a pass may start from: the config's own, or the piece's."""
    return [o.strip() for o in text.openings or OPENINGS if o.strip()]


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

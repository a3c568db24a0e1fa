"""A deterministic, offline bot: the reply depends only on the prompt; words at a fixed pace."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator

from .base import BotError, BotRequest

__all__ = ["LocalBot", "local_reply"]

_OPENINGS = (
    "Once upon a time, in a village at the edge of a quiet forest,",
    "Long ago, on an island where the tides kept perfect time,",
    "In a city built of old libraries and new bridges,",
)
_STORY = (
    "a curious engineer kept a notebook of every change and every reason for it. "
    "Each morning she synced her notes with friends across the valley, and each evening "
    "the notes agreed, no matter who had written first or whose lantern had gone dark. "
    "When storms cut the roads, she kept writing offline, trusting that her words would "
    "travel later and land in the right order. The elders called it magic; she called it "
    "a log, a cookie and a little patience. One day a stranger asked how the village never "
    "lost a single line, and she smiled, opened the notebook, and began to explain"
)
_WORDS = _STORY.split(" ")


def local_reply(prompt: str, *, words: int = 60) -> str:
    """The full reply :class:`LocalBot` streams for ``prompt`` (deterministic)."""
    seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big")
    rng = random.Random(seed)
    out = rng.choice(_OPENINGS).split()
    start = rng.randrange(len(_WORDS))
    i = start
    while len(out) < words:
        out.append(_WORDS[i % len(_WORDS)])
        i += 1
    text = " ".join(out[:words])
    return text.rstrip(",.") + "."


class LocalBot:
    """Streams :func:`local_reply` word by word, sleeping ``pace`` seconds before each chunk.

    ``fail_after`` (for demos and tests) raises :class:`BotError` after that many chunks.
    """

    def __init__(
        self, *, pace: float = 0.05, words: int = 60, fail_after: int | None = None
    ) -> None:
        if pace < 0 or words < 1:
            raise ValueError("pace must be >= 0 and words >= 1")
        self.pace = pace
        self.words = words
        self.fail_after = fail_after

    async def stream(self, request: BotRequest) -> AsyncIterator[str]:
        """Yield the reply one word (with its leading space) at a time."""
        text = local_reply(request.prompt, words=self.words)
        for n, word in enumerate(text.split(" ")):
            if self.fail_after is not None and n >= self.fail_after:
                raise BotError(f"local bot: simulated failure after {n} chunks")
            if self.pace:
                await asyncio.sleep(self.pace)
            else:
                await asyncio.sleep(0)
            yield word if n == 0 else " " + word

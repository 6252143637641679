"""How often a caller asks again about something that will change (a result document, a waking box)."""

from collections.abc import Iterator

FIRST_PAUSE_SECONDS = 0.25
LONGEST_PAUSE_SECONDS = 5.0


def poll_pauses() -> Iterator[float]:
    """Pauses between polls: a quarter of a second, doubling to at most 5 s, so a quick answer is seen
    quickly and a slow one is not asked for too often."""
    pause = FIRST_PAUSE_SECONDS
    while True:
        yield pause
        pause = min(pause * 2, LONGEST_PAUSE_SECONDS)

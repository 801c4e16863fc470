"""Pause points for the concurrency tests, and nothing else: with CRRECON_TEST_PAUSE=<point>[,<point>...] set, a
process stops itself (SIGSTOP) the first time it reaches each named point; the test then does what must happen
at that instant (another writer's whole run, a file truncated under a read) and resumes it with SIGCONT. Unset
(always, outside the tests) a point costs one environment lookup. Imports nothing of the project.

Points: `commit` (a staged version about to be committed), `pointers` (`crrecon preprocess` about to set
LATEST), `reading` (a raw shard's second chunk about to be read), `claimed` (a run folder's lease just taken),
`predict` (`crrecon predict` after its first chunk)."""

from __future__ import annotations

import os
import signal

_DONE: set[str] = set()


def pause_point(name: str) -> None:
    wanted = os.environ.get("CRRECON_TEST_PAUSE")
    if not wanted or name in _DONE or name not in wanted.split(","):
        return
    _DONE.add(name)
    os.kill(os.getpid(), signal.SIGSTOP)

"""The worker's recorder key, and the checkpoints the worker signs with it.

Every event a worker stores is sealed with the recorder key (chipclear.store.trust), and every so often
the worker signs a checkpoint: the root of the Merkle tree over the whole log (chipclear.store.checkpoint).
A worker refuses to start without the key, or with a key the policy does not name in `[recorder] keys`:
an event it sealed would fail every audit.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chipclear.config import ConfigError
from chipclear.domain.policy import Policy
from chipclear.domain.signing import public_text
from chipclear.keys import KeyFileError, load_private, recorder_key_file
from chipclear.logs import get_logger
from chipclear.store import merkle
from chipclear.store.checkpoint import Checkpoint, sign_checkpoint
from chipclear.store.outage import StoreOutage
from chipclear.store.protocol import Checkpoints, StoreUnavailable

DEFAULT_EVERY = 1000  # events between checkpoints
DEFAULT_SECONDS = 300.0  # and at most this long, while events arrive
POLL_SECONDS = 2.0  # how often the worker reads the events appended since it last looked


def load_recorder(home: Path, policy: Policy, env: Mapping[str, str] | None = None) -> Ed25519PrivateKey:
    """The recorder key the worker seals with; ConfigError (one sentence, exit 2) if it cannot."""
    path = recorder_key_file(home, env)
    try:
        key = load_private(path)
    except KeyFileError as exc:
        raise ConfigError(
            f"the worker seals every event with the recorder key and cannot read it: {exc} "
            "(CHIPCLEAR_RECORDER_KEY_FILE, else $CHIPCLEAR_HOME/keys/recorder.key; "
            "`chipclear keys new recorder` makes one)"
        ) from None
    public = public_text(key.public_key())
    if public not in policy.recorder.keys:
        raise ConfigError(
            f"the recorder key {path} ({public}) is not in policy {policy.version}'s [recorder] keys, so "
            "every event it sealed would fail the audit: add its public key there"
        )
    return key


@dataclass(frozen=True)
class CheckpointSchedule:
    every: int = DEFAULT_EVERY
    seconds: float = DEFAULT_SECONDS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CheckpointSchedule:
        env = os.environ if env is None else env
        return cls(
            every=int(_positive(env, "CHIPCLEAR_CHECKPOINT_EVERY", DEFAULT_EVERY, whole=True)),
            seconds=_positive(env, "CHIPCLEAR_CHECKPOINT_SECONDS", DEFAULT_SECONDS, whole=False),
        )


def _positive(env: Mapping[str, str], name: str, default: float, *, whole: bool) -> float:
    value = env.get(name)
    if not value:
        return default
    try:
        number = int(value) if whole else float(value)
    except ValueError:
        number = 0
    if not number > 0:
        kind = "a whole number of events" if whole else "a number of seconds"
        raise ConfigError(f"{name}: expected {kind} above 0, got {value!r}")
    return number


class Checkpointer:
    """Keeps the tree's frontier in memory and signs a checkpoint every `every` events or `seconds`.

    At start it reads the chain hash of every event once; after that only the events appended since,
    and only those that are final (`settled_position`), so a checkpoint never covers a position that
    may still fill in below its end. Several workers may each sign: a size already stored is skipped.
    """

    def __init__(
        self,
        store: Checkpoints,
        recorder: Ed25519PrivateKey,
        schedule: CheckpointSchedule,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.recorder, self.schedule, self.clock = store, recorder, schedule, clock
        self.frontier = merkle.Frontier()
        self.position = 0  # every event up to here is in the frontier
        self.signed_size = 0
        self.signed_at = clock()

    def catch_up(self) -> int:
        """Read the events that are final since the last look into the frontier; returns how many."""
        through = self.store.settled_position()
        if through <= self.position:
            return 0
        leaves = self.store.leaves(self.position, through)
        for _, chain_hash in leaves:
            self.frontier.append(merkle.event_leaf(chain_hash))
        self.position = through
        return len(leaves)

    def tick(self, *, force: bool = False) -> Checkpoint | None:
        """Catch up, then sign and store a checkpoint if one is due (or `force`d) and the log grew."""
        self.catch_up()
        size = self.frontier.size
        waited = self.clock() - self.signed_at
        due = size - self.signed_size >= self.schedule.every or waited >= self.schedule.seconds
        if size == self.signed_size or not (due or force):
            return None
        stored = self.store.checkpoints()
        if stored and stored[-1].tree_size >= size:  # another worker got there first
            self.signed_size, self.signed_at = stored[-1].tree_size, self.clock()
            return None
        made = sign_checkpoint(self.recorder, size, self.frontier.root(), self.position, datetime.now(UTC))
        self.store.save_checkpoint(made)
        self.signed_size, self.signed_at = size, self.clock()
        return made

    async def run(self, poll: float = POLL_SECONDS, outage: StoreOutage | None = None) -> None:
        """Until cancelled: a tick every `poll` seconds (in a thread: the store is synchronous).

        A store that is away fails every tick; that is the worker's store outage, told once when it
        ends (`outage`), not a warning every `poll` seconds."""
        log = get_logger("chipclear.checkpoints")
        outage = outage or StoreOutage()
        while True:
            try:
                made = await asyncio.to_thread(self.tick)
            except StoreUnavailable as exc:  # the next tick tries again
                outage.failing(exc)
            except Exception as exc:
                log.warning("checkpoint not made", error=str(exc))
            else:
                if made is not None:  # a tick with nothing due only read (StoreOutage.wrote)
                    outage.wrote()
                    log.info("checkpoint signed", tree_size=made.tree_size, root_hash=made.root_hash)
            await asyncio.sleep(poll)


@asynccontextmanager
async def checkpointing(
    store: Checkpoints,
    recorder: Ed25519PrivateKey,
    schedule: CheckpointSchedule,
    outage: StoreOutage | None = None,
) -> AsyncIterator[Checkpointer]:
    """Sign checkpoints in the background while the block runs, and a last one as it ends."""
    checkpointer = Checkpointer(store, recorder, schedule)
    task = asyncio.create_task(checkpointer.run(min(POLL_SECONDS, schedule.seconds), outage))
    try:
        yield checkpointer
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        try:
            await asyncio.to_thread(checkpointer.tick, force=True)
        except Exception as exc:
            get_logger("chipclear.checkpoints").warning("last checkpoint not made", error=str(exc))

"""Circuit breakers and experiment counters shared by every gateway process.

The hot path never waits on Redis: ``allows``, ``record`` and ``count_assignment``
are plain in-memory calls. Outcomes and counts are buffered and pushed, with the
shared breaker phases pulled back, in one script call per sync interval
(``lua/routing_sync.lua``). A process therefore learns within one interval that
another process tripped a breaker, and the outcomes of all processes together
decide when it trips: a deployment failing one request in three on each of four
processes trips as it would in one.

Half-open trial calls are granted by Redis, so the fleet as a whole sends the
configured number of trials, not that number per process. A process asks for a
trial at its next sync after it found the deployment cooled down, so the first
request after the cool-down still skips it.

While Redis is unreachable the shared view is frozen and each process relies on its
own in-process breaker (the routing layer keeps one regardless).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiofast.errors import StoreUnavailableError
from aiofast.routing import RouteDecision, RouteFacts, Router, RoutingSpec
from aiofast.stores.redis import LuaScript, RedisStore

__all__ = ["BreakerSettings", "SharedRouter", "SharedRouting"]

logger = logging.getLogger("aiofast.stores.routing")

SYNC = LuaScript.bundled("routing_sync")

_CLOSED, _OPEN, _HALF_OPEN = 0, 1, 2


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """The breaker's thresholds (the routing policy's ``[routing.breaker]``)."""

    failure_rate: float = 0.5
    min_calls: int = 5
    window_seconds: float = 30.0
    cooldown_seconds: float = 15.0
    half_open_calls: int = 2


@dataclass(slots=True)
class _Pending:
    calls: int = 0
    failures: int = 0
    trial_ok: int = 0
    trial_failed: int = 0
    given_back: int = 0
    wants_trial: bool = False


@dataclass(slots=True)
class _View:
    phase: int = _CLOSED
    open_until: float = 0.0  # on this process's monotonic clock
    trials: int = 0  # granted by Redis, not yet started
    trials_in_flight: int = 0


class SharedRouting:
    """This process's view of the shared breakers, and its buffered reports."""

    def __init__(
        self,
        store: RedisStore,
        breaker: BreakerSettings,
        deployments: Iterable[str] = (),
        *,
        sync_interval: float = 0.25,
        trial_lease: float = 30.0,
    ) -> None:
        self.store = store
        self.breaker = breaker
        self.sync_interval = sync_interval
        self.trial_lease = trial_lease
        # Every deployment with a view is pulled at each sync, reported on or not.
        self._views: dict[str, _View] = {name: _View() for name in deployments}
        self._pending: dict[str, _Pending] = defaultdict(_Pending)
        self._assignments: dict[tuple[str, str], int] = defaultdict(int)
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        store.register(SYNC)

    def start(self) -> None:
        """Start syncing in the background (call from the running event loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            # A flag rather than cancel(): before 3.12, wait_for() can swallow a
            # cancellation that lands as its timeout fires, and the loop would run on.
            self._closing = True
            self._wake.set()
            await self._task
            self._task = None
        with contextlib.suppress(StoreUnavailableError):
            await self.sync()

    def allows(self, deployment: str) -> bool:
        """Whether the shared breaker lets a call to ``deployment`` start now."""
        view = self._views.get(deployment)
        if view is None:
            self._views[deployment] = _View()
            return True
        if view.phase == _CLOSED or self.store.degraded:
            return True
        if view.phase == _OPEN and time.monotonic() < view.open_until:
            return False
        if view.trials > 0:
            view.trials -= 1
            view.trials_in_flight += 1
            return True
        self._pending[deployment].wants_trial = True
        self._wake.set()
        return False

    def record(self, deployment: str, ok: bool) -> None:
        """The outcome of a call that ``allows`` let start."""
        pending = self._pending[deployment]
        view = self._views.get(deployment)
        if view is not None and view.trials_in_flight > 0:
            view.trials_in_flight -= 1
            if ok:
                pending.trial_ok += 1
            else:
                pending.trial_failed += 1
            self._wake.set()
            return
        pending.calls += 1
        pending.failures += 0 if ok else 1

    def abandon(self, deployment: str) -> None:
        """A started call ended without an outcome: give its trial back, if it had one."""
        view = self._views.get(deployment)
        if view is not None and view.trials_in_flight > 0:
            view.trials_in_flight -= 1
            self._pending[deployment].given_back += 1

    def count_assignment(self, experiment: str, variant: str) -> None:
        self._assignments[(experiment, variant)] += 1

    async def experiment_counts(self, experiment: str) -> dict[str, int]:
        """Assignments per variant over every process (those already synced)."""
        key = self.store.key("experiment", experiment)
        raw = await self.store.command(lambda client: client.hgetall(key))
        return {(k if isinstance(k, str) else k.decode()): int(v) for k, v in raw.items()}

    async def sync(self) -> None:
        """Push buffered reports and pull the shared phases: one round trip."""
        pending, self._pending = self._pending, defaultdict(_Pending)
        assignments, self._assignments = self._assignments, defaultdict(int)
        deployments = sorted(set(pending) | set(self._views))
        keys = [self.store.key("breaker", name) for name in deployments]
        spec = self.breaker
        args: list[Any] = [
            spec.failure_rate,
            spec.min_calls,
            int(spec.window_seconds * 1000),
            int(spec.cooldown_seconds * 1000),
            spec.half_open_calls,
            int(self.trial_lease * 1000),
            len(deployments),
        ]
        for name in deployments:
            p = pending.get(name) or _Pending()
            args += [p.calls, p.failures, p.trial_ok, p.trial_failed, p.given_back]
            args.append("1" if p.wants_trial else "0")
        args.append(len(assignments))
        for (experiment, variant), increment in assignments.items():
            keys.append(self.store.key("experiment", experiment))
            args += [variant, increment]

        try:
            reply = (await self.store.run(SYNC, keys, args)).split()
        except StoreUnavailableError:
            self._restore(pending, assignments)
            # No shared view while Redis is away: each process's own breaker decides.
            self._views.clear()
            raise
        now = time.monotonic()
        for index, name in enumerate(deployments):
            phase, open_ms, granted = (int(v) for v in reply[index * 3 : index * 3 + 3])
            view = self._views.setdefault(name, _View())
            view.phase = phase
            view.open_until = now + open_ms / 1000
            view.trials = view.trials + granted if phase == _HALF_OPEN else 0

    def _restore(
        self, pending: dict[str, _Pending], assignments: dict[tuple[str, str], int]
    ) -> None:
        """Keep the reports of a failed sync for the next one, except the window counts
        of closed breakers, which are stale by the time Redis is back."""
        for key, increment in assignments.items():
            self._assignments[key] += increment
        for name, p in pending.items():
            mine = self._pending[name]
            mine.trial_ok += p.trial_ok
            mine.trial_failed += p.trial_failed
            mine.given_back += p.given_back

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.sync_interval)
            self._wake.clear()
            if self._closing:
                return
            with contextlib.suppress(StoreUnavailableError):
                await self.sync()


class SharedRouter(Router):
    """The routing layer's Router with its breakers and experiment counters shared.

    Each call must pass this process's own breaker and the shared one; outcomes feed
    both. Experiment assignments are counted in Redis for every process together.
    """

    def __init__(
        self,
        spec: RoutingSpec | Mapping[str, Any],
        store: RedisStore,
        *,
        sync_interval: float = 0.25,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(spec, seed=seed, clock=clock)
        breaker = self.spec.breaker
        settings = BreakerSettings(
            failure_rate=breaker.failure_rate,
            min_calls=breaker.min_calls,
            window_seconds=breaker.window_seconds,
            cooldown_seconds=breaker.cooldown_seconds,
            half_open_calls=breaker.half_open_calls,
        )
        names = [d.name for d in self.spec.deployments]
        self.shared = SharedRouting(store, settings, names, sync_interval=sync_interval)

    def decide(self, facts: RouteFacts) -> RouteDecision:
        decision = super().decide(facts)
        for experiment, variant, _ in decision.assignments:
            self.shared.count_assignment(experiment, variant)
        return decision

    def start(self, deployment: str) -> bool:
        if not super().start(deployment):
            return False
        if self.spec.breaker.shadow or self.shared.allows(deployment):
            return True
        super().abandon(deployment)
        return False

    def record(self, deployment: str, ok: bool, latency: float | None = None) -> None:
        super().record(deployment, ok, latency)
        self.shared.record(deployment, ok)

    def abandon(self, deployment: str) -> None:
        super().abandon(deployment)
        self.shared.abandon(deployment)

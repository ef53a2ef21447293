"""Blocking client calls with a deadline: started on a daemon thread, awaited later or at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class BackgroundCall:
    """A blocking client call started on a daemon thread now and awaited later, with a deadline.

    A call that never returns (librdkafka #5456/#5511: e.g. send_offsets_to_transaction after a
    coordinator restart; a consumer close that races a cooperative rebalance) must neither hang the
    service nor keep the process from exiting; the deadline counts from the start of the call.
    """

    def __init__(self, what: str, call: Callable[..., object], *args: Any) -> None:
        self.what = what
        self.started = time.monotonic()
        self.seconds = 0.0
        """How long the call ran (set when it has returned)."""
        self.finished_at = 0.0
        """Wall-clock time the call returned."""
        self._failure: BaseException | None = None
        self._done = threading.Event()

        def target() -> None:
            try:
                call(*args)
            except BaseException as exc:  # handed to the waiting thread by wait()
                self._failure = exc
            finally:
                self.seconds = time.monotonic() - self.started
                self.finished_at = time.time()
                self._done.set()

        threading.Thread(target=target, name=f"bounded-{what}", daemon=True).start()

    def ended(self, deadline_s: float) -> bool:
        """True once the call returned or `deadline_s` passed since it started (`wait` won't block)."""
        return self._done.is_set() or time.monotonic() - self.started >= deadline_s

    def wait(self, deadline_s: float) -> bool:
        """False when the call has not returned `deadline_s` after it started; re-raises what it raised."""
        if not self._done.wait(max(0.0, self.started + deadline_s - time.monotonic())):
            return False
        if self._failure is not None:
            raise self._failure
        return True


def call_with_deadline(what: str, deadline_s: float, call: Callable[..., object], *args: Any) -> bool:
    """Runs a blocking client call on a daemon thread; False when it has not returned by the deadline."""
    return BackgroundCall(what, call, *args).wait(deadline_s)


@dataclass(frozen=True)
class Deadlines:
    """How long the service waits for its Kafka clients.

    Args:
        timeout_s: what each blocking client call is given (delivery.timeout.ms plus a margin).
        hang_s: past this a call is taken for hung and its client abandoned: beyond every timeout
            librdkafka was given, so a call that is merely slow is never abandoned.
        close_s: a client close that takes longer is abandoned (everything delivered is committed).
    """

    timeout_s: float
    hang_s: float
    close_s: float = 30.0

    @classmethod
    def for_delivery_timeout(cls, delivery_timeout_s: float) -> Deadlines:
        timeout_s = delivery_timeout_s + 5.0
        return cls(timeout_s, timeout_s + 10.0)

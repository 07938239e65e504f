"""What the anchoring service tells operators: its metrics, and the span that closes an anchor's
trace when the log seals it.

A version accepted by ``AnchorRecord(s)`` is remembered with the caller's trace context; when a
checkpoint (or an inclusion proof a client asked for) seals it, ``anchoring.record_sealed`` is
recorded in that trace, from the acceptance to the seal: the receipt is ready. Versions accepted
in one call and sealed together make one span.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace

from services.anchoring.domain import Outcome, RecordVersion

_log = logging.getLogger(__name__)
_tracer = trace.get_tracer("swiftchain.anchoring")
_meter = metrics.get_meter("swiftchain.anchoring")
_anchors = _meter.create_counter(
    "swiftchain.anchoring.anchors",
    unit="{version}",
    description="Record versions asked to be anchored, by outcome (accepted, already_anchored, "
    "refused)",
)
_sealed = _meter.create_counter(
    "swiftchain.anchoring.anchors_sealed",
    unit="{version}",
    description="Anchored record versions this service saw sealed by a cosigned checkpoint",
)
_deadline_missed = _meter.create_counter(
    "swiftchain.anchoring.seal_deadline_missed",
    unit="{version}",
    description="Record versions not sealed by the deadline promised in their receipt",
)
_seal_latency = _meter.create_histogram(
    "swiftchain.anchoring.seal_latency",
    unit="ms",
    description="From a version's acceptance to the sealing of its entry, as this service saw it",
)
#: Traced versions remembered at most (oldest forgotten first), so that versions the log never
#: seals cannot grow the process.
MAX_TRACED = 200_000


def count_outcomes(outcomes: Sequence[Outcome]) -> None:
    """Meter the outcome of each item of an anchoring call."""
    counts = {"accepted": 0, "already_anchored": 0, "refused": 0}
    for outcome in outcomes:
        if outcome.error is not None:
            counts["refused"] += 1
        elif outcome.created:
            counts["accepted"] += 1
        else:
            counts["already_anchored"] += 1
    for name, count in counts.items():
        if count:
            _anchors.add(count, {"outcome": name})


def count_missed(version: RecordVersion) -> None:
    """Meter and log a missed deadline (the tracker's ``on_missed``)."""
    _deadline_missed.add(1, {"organization_id": version.organization_id})
    _log.warning(
        "entry %s (%s record %r version %d) was not sealed by its deadline %s",
        version.entry_id,
        version.organization_id,
        version.record_id,
        version.version,
        version.seal_due_time.isoformat(),
    )


class SealObserver:
    """Meters seals and ends each accepted version's trace with ``anchoring.record_sealed``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: leaf hash -> (the accepting call's trace context, when it was accepted, in ns).
        self._traced: OrderedDict[bytes, tuple[otel_context.Context, int]] = OrderedDict()

    def accepted(self, versions: Sequence[RecordVersion]) -> None:
        """``versions`` were just stored, in the current (the caller's) trace context."""
        if not versions or not trace.get_current_span().get_span_context().is_valid:
            return
        context, now = otel_context.get_current(), time.time_ns()
        with self._lock:
            for version in versions:
                self._traced[version.leaf_hash] = (context, now)
            while len(self._traced) > MAX_TRACED:
                self._traced.popitem(last=False)

    def sealed(self, versions: Sequence[RecordVersion], now: datetime) -> None:
        """``versions`` were just recorded sealed (each once)."""
        groups: dict[int, tuple[otel_context.Context, int, list[RecordVersion]]] = {}
        with self._lock:
            for version in versions:
                traced = self._traced.pop(version.leaf_hash, None)
                if traced is not None:
                    group = groups.setdefault(id(traced[0]), (traced[0], traced[1], []))
                    group[2].append(version)
        for version in versions:
            waited = (now - version.anchored_time).total_seconds() * 1000
            _seal_latency.record(waited, {"organization_id": version.organization_id})
        if versions:
            _sealed.add(len(versions))
        for context, since_ns, sealed in groups.values():
            span = _tracer.start_span(
                "anchoring.record_sealed",
                context=context,
                start_time=since_ns,
                attributes={
                    "swiftchain.entry_count": len(sealed),
                    "swiftchain.tree_size": max(v.sealed_tree_size or 0 for v in sealed),
                },
            )
            span.end()

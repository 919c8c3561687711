"""The subscription's backlog from Cloud Monitoring (``google-cloud-monitoring``).

Two Pub/Sub metrics of each subscription the workers consume (the queue's, and each
plain-message queue's), the newest point of each in the last ``LOOKBACK_SECONDS``:
``num_undelivered_messages`` (the backlog; summed) and ``oldest_unacked_message_age`` (the
oldest of them). The sample is as old as its oldest part. Monitoring samples them every
minute and shows a sample a minute or two later, which is why the decision adds its own
arrivals and remembers launches, and checks a sample against the executions' facts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from vividly_tasks.dispatch.google_apis import (
    CALL_TIMEOUT_SECONDS,
    build_client,
    call_with_retries,
)
from vividly_tasks.dispatch.inputs import BacklogSample

if TYPE_CHECKING:
    # Any to mypy, as the other google.cloud clients are (see content/cloud_speech.py).
    monitoring_v3: Any
    MetricServiceGrpcTransport: Any
else:
    from google.cloud import monitoring_v3
    from google.cloud.monitoring_v3.services.metric_service.transports import (
        MetricServiceGrpcTransport,
    )

API = "Cloud Monitoring (monitoring.googleapis.com)"
ROLE = "roles/monitoring.viewer on the project"
UNDELIVERED = "pubsub.googleapis.com/subscription/num_undelivered_messages"
OLDEST_AGE = "pubsub.googleapis.com/subscription/oldest_unacked_message_age"
#: How far back a sample may be; older ones mean Monitoring has nothing to say.
LOOKBACK_SECONDS = 600


class BacklogReader:
    """Reads the subscriptions' backlog; ``read`` returns None when Monitoring has no sample
    of one of them (a partial sum would undercount)."""

    def __init__(self, *, project: str, subscription: str | Sequence[str],
                 endpoint: str | None, attempts: int) -> None:
        self.project = project
        self.subscriptions = ((subscription,) if isinstance(subscription, str)
                              else tuple(subscription))
        self.attempts = attempts
        self.client = build_client(
            monitoring_v3.MetricServiceClient, MetricServiceGrpcTransport, endpoint
        )

    def resource(self, subscription: str) -> str:
        return f"projects/{self.project}/subscriptions/{subscription}"

    def read(self) -> BacklogSample | None:
        undelivered = 0
        oldest_age = 0.0
        sampled_at = math.inf
        age_unknown = False
        for subscription in self.subscriptions:
            count = self._newest(UNDELIVERED, subscription)
            if count is None:
                return None
            age = self._newest(OLDEST_AGE, subscription)
            undelivered += int(count[0])
            # A backlog without its age: nothing is known about its messages' times.
            age_unknown = age_unknown or bool(count[0] and not (age and age[0]))
            oldest_age = max(oldest_age, float(age[0]) if age else 0.0)
            sampled_at = min(sampled_at, count[1])
        # An age of 0 with a backlog proves nothing (``decision.metric_proof``).
        return BacklogSample(undelivered=undelivered,
                             oldest_unacked_age_seconds=0.0 if age_unknown else oldest_age,
                             sampled_at=sampled_at)

    def _newest(self, metric_type: str, subscription: str) -> tuple[float, float] | None:
        """(value, end of its interval) of the metric's newest point, if any."""
        now = time.time()
        request = monitoring_v3.ListTimeSeriesRequest(
            name=f"projects/{self.project}",
            filter=(f'metric.type = "{metric_type}" AND resource.type = "pubsub_subscription" '
                    f'AND resource.labels.subscription_id = "{subscription}"'),
            interval=monitoring_v3.TimeInterval(
                start_time={"seconds": int(now - LOOKBACK_SECONDS)},
                end_time={"seconds": int(now) + 1},
            ),
            view=monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL,
        )

        def call() -> list[Any]:
            return list(self.client.list_time_series(request=request, retry=None,
                                                     timeout=CALL_TIMEOUT_SECONDS))

        series = call_with_retries(call, attempts=self.attempts, api=API,
                                   resource=f"{metric_type} of "
                                   f"{self.resource(subscription)}", role=ROLE)
        points = [point for one in series for point in one.points]
        if not points:
            return None
        newest = max(points, key=lambda point: point.interval.end_time.timestamp())
        value = newest.value
        number = value.int64_value or value.double_value
        return float(number), newest.interval.end_time.timestamp()

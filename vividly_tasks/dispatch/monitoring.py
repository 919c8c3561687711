"""The subscription's backlog from Cloud Monitoring (``google-cloud-monitoring``).

Two Pub/Sub metrics of the subscription, the newest point of each in the last
``LOOKBACK_SECONDS``: ``num_undelivered_messages`` (the backlog) and
``oldest_unacked_message_age``. Monitoring samples them every minute and shows a sample a
minute or two later, which is why the decision adds its own arrivals and remembers launches.
"""

from __future__ import annotations

import time
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
    """Reads one subscription's backlog; ``read`` returns None when Monitoring has no sample."""

    def __init__(self, *, project: str, subscription: str, endpoint: str | None,
                 attempts: int) -> None:
        self.project = project
        self.subscription = subscription
        self.attempts = attempts
        self.client = build_client(
            monitoring_v3.MetricServiceClient, MetricServiceGrpcTransport, endpoint
        )

    @property
    def resource(self) -> str:
        return f"projects/{self.project}/subscriptions/{self.subscription}"

    def read(self) -> BacklogSample | None:
        undelivered = self._newest(UNDELIVERED)
        if undelivered is None:
            return None
        age = self._newest(OLDEST_AGE)
        return BacklogSample(undelivered=int(undelivered[0]),
                             oldest_unacked_age_seconds=float(age[0]) if age else 0.0,
                             sampled_at=undelivered[1])

    def _newest(self, metric_type: str) -> tuple[float, float] | None:
        """(value, end of its interval) of the metric's newest point, if any."""
        now = time.time()
        request = monitoring_v3.ListTimeSeriesRequest(
            name=f"projects/{self.project}",
            filter=(f'metric.type = "{metric_type}" AND resource.type = "pubsub_subscription" '
                    f'AND resource.labels.subscription_id = "{self.subscription}"'),
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
                                   resource=f"{metric_type} of {self.resource}", role=ROLE)
        points = [point for one in series for point in one.points]
        if not points:
            return None
        newest = max(points, key=lambda point: point.interval.end_time.timestamp())
        value = newest.value
        number = value.int64_value or value.double_value
        return float(number), newest.interval.end_time.timestamp()

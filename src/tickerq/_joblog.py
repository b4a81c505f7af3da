"""The engine's log records of job runs, on the ``tickerq.engine`` logger.

One record when a run starts (INFO) and one when it ends: succeeded, skipped,
cancelled or interrupted by a stop (INFO), failed with a retry to come
(WARNING, with the retry time), failed for good (ERROR, with the traceback).
Each carries ``action``, ``function``, ``ticker_id``, ``attempt`` (1-based),
``node`` and, when it ended, ``status`` and ``duration_ms`` as ``extra``
fields (see :mod:`tickerq.logs`).

The engine calls these only when a record would be kept (INFO records are
checked with ``logger.isEnabledFor`` first), so a node whose logging drops
INFO pays nothing more than that check per job.

Logging is part of the engine rather than a middleware: a middleware around
every job costs a coroutine frame per run even when nothing is logged.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from tickerq.enums import Status

if TYPE_CHECKING:
    from tickerq.stores.base import Job, Outcome

logger = logging.getLogger("tickerq.engine")


def job_fields(action: str, job: Job, node: str) -> dict[str, Any]:
    """The fields of a record about ``job`` running on ``node``."""
    return {
        "action": action,
        "function": job.function,
        "ticker_id": str(job.id),
        "attempt": job.retry_count + 1,
        "node": node,
    }


def started(job: Job, node: str) -> None:
    """A run starts (INFO; the caller checked that INFO is enabled)."""
    logger.info(
        "job %s (%s) started, attempt %d of %d",
        job.function,
        job.id,
        job.retry_count + 1,
        job.retries + 1,
        extra=job_fields("job_started", job, node),
    )


def ended(outcome: Outcome, error: BaseException | None, *, report_failure: bool) -> None:
    """A run ended as ``outcome``; ``error`` is what it raised. A failure (retry or
    final) is logged only with ``report_failure`` (no exception handler took it)."""
    job, status = outcome.job, outcome.status
    duration = (outcome.finished_at - outcome.started_at).total_seconds() * 1000
    fields = job_fields("", job, outcome.node)
    fields["status"] = status.name
    fields["duration_ms"] = round(duration, 3)
    attempt, attempts = job.retry_count + 1, job.retries + 1
    if status is Status.IDLE and not outcome.counts_as_retry:
        fields["action"] = "job_interrupted"
        logger.info(
            "job %s (%s) interrupted after %.1f ms: the node stopped; it runs again",
            job.function,
            job.id,
            duration,
            extra=fields,
        )
    elif error is not None:
        if not report_failure:
            return
        fields["error_type"] = type(error).__name__
        fields["error"] = str(error)
        if status is Status.IDLE:
            retry_at = (
                outcome.retry_at.isoformat(timespec="milliseconds") if outcome.retry_at else "now"
            )
            fields["action"] = "job_retry"
            fields["retry_at"] = retry_at
            logger.warning(
                "job %s (%s) attempt %d of %d failed after %.1f ms: %s: %s; retry at %s",
                job.function,
                job.id,
                attempt,
                attempts,
                duration,
                type(error).__name__,
                error,
                retry_at,
                extra=fields,
            )
        else:
            fields["action"] = "job_failed"
            logger.error(
                "job %s (%s) failed for good, attempt %d of %d, after %.1f ms: %s: %s",
                job.function,
                job.id,
                attempt,
                attempts,
                duration,
                type(error).__name__,
                error,
                exc_info=error,
                extra=fields,
            )
    elif status is Status.FAILED:  # TerminateExecution(Status.FAILED, reason)
        fields["action"] = "job_failed"
        logger.error(
            "job %s (%s) ended FAILED after %.1f ms: %s",
            job.function,
            job.id,
            duration,
            outcome.error_message or "terminated",
            extra=fields,
        )
    elif logger.isEnabledFor(logging.INFO):
        _ended_info(outcome, fields, duration)


def _ended_info(outcome: Outcome, fields: dict[str, Any], duration: float) -> None:
    job, status = outcome.job, outcome.status
    if status is Status.CANCELLED:
        fields["action"] = "job_cancelled"
        reason = f": {outcome.error_message}" if outcome.error_message else ""
        message = f"cancelled after {duration:.1f} ms{reason}"
    elif status is Status.SKIPPED:
        fields["action"] = "job_skipped"
        message = f"skipped after {duration:.1f} ms: {outcome.skipped_reason or 'no reason'}"
    else:
        fields["action"] = "job_succeeded"
        late = " (started late)" if status is Status.DUE_DONE else ""
        message = f"succeeded in {duration:.1f} ms{late}"
    logger.info("job %s (%s) %s", job.function, job.id, message, extra=fields)

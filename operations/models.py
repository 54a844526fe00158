from django.db import models


class TaskOutcomeCount(models.Model):
    """How often each Celery task failed or was retried, across every worker, ever.

    Written by the worker that saw it (operations.signals), read by /metrics:
    durable, so the count is right whichever process serves the scrape and
    survives restarts. Failures are rare; one small UPDATE each.
    """

    task = models.CharField(max_length=200, primary_key=True)
    failures = models.BigIntegerField(default=0)
    retries = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.task}: {self.failures} failures, {self.retries} retries"

"""The Celery app: settlement tasks run here, fed by the Kafka bridge."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "transfer_site.settings")

app = Celery("transfer_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

from django.apps import AppConfig


class OperationsConfig(AppConfig):
    """Running the service: /metrics, Celery task outcome counts, Celery broker upkeep."""

    name = "operations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from operations import signals

        signals.connect()

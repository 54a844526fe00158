from django.apps import AppConfig


class SettlementConfig(AppConfig):
    name = "settlement"
    verbose_name = "Settlement and funding ledger"

    def ready(self) -> None:
        from celery.signals import worker_process_init

        from settlement.tasks import warm_up_worker_process

        # Each prefork child of a Celery worker, once forked (the parent's connections are not its own).
        worker_process_init.connect(warm_up_worker_process, weak=False, dispatch_uid="settlement.warm_up")

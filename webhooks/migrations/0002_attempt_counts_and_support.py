"""The attempt counters /metrics reads, and what the "support" group may see and do with webhooks."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

OUTCOMES = ["delivered", "http_error", "timeout", "connection_error", "refused"]
SUPPORT = ["view_webhookendpoint", "view_webhookevent", "view_webhookdelivery", "view_webhookattempt",
           "redeliver_webhookdelivery"]


def seed(apps, schema_editor):
    AttemptCount = apps.get_model("webhooks", "AttemptCount")
    for outcome in OUTCOMES:
        AttemptCount.objects.get_or_create(outcome=outcome)
    app_config = apps.get_app_config("webhooks")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0, using=schema_editor.connection.alias)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name="support")
    group.permissions.add(*Permission.objects.filter(content_type__app_label="webhooks", codename__in=SUPPORT))


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks", "0001_initial"),
        ("transfers", "0005_staff_groups"),
    ]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]

"""The "support" group may read the reconcile runs (the operations overview shows the latest)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations


def grant(apps, schema_editor):
    app_config = apps.get_app_config("settlement")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0, using=schema_editor.connection.alias)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name="support")
    group.permissions.add(Permission.objects.get(content_type__app_label="settlement", codename="view_reconcilerun"))


class Migration(migrations.Migration):
    dependencies = [
        ("settlement", "0002_reconcile_run"),
        ("transfers", "0005_staff_groups"),
    ]
    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]

"""Staff roles as groups: "support" and "admin" (docs/operations.md).

support: view transfers (with their timelines), users' balances, assets, API
         keys and UBSCore's records; re-drive stuck transfers.
admin:   view, add and change assets (enable/disable transfers, maximum) and
         API keys (issue, revoke, label).

Neither group can change a transfer or a balance: no permission for that
exists. Give a person both groups to do both. Re-running adds what is
missing and never removes a permission an operator added by hand.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUPS = {
    "support": [
        ("transfers", "view_transfer"),
        ("transfers", "redrive_transfer"),
        ("transfers", "view_balances"),
        ("transfers", "view_asset"),
        ("transfers", "view_apikey"),
        ("ubscore", "view_spotbalance"),
        ("ubscore", "view_appliedoperation"),
    ],
    "admin": [
        ("transfers", "view_asset"),
        ("transfers", "add_asset"),
        ("transfers", "change_asset"),
        ("transfers", "view_apikey"),
        ("transfers", "add_apikey"),
        ("transfers", "change_apikey"),
    ],
}


def create_groups(apps, schema_editor):
    # Permissions are normally made after all migrations (post_migrate); make
    # them now so that the groups can hold them on a fresh database.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0, using=schema_editor.connection.alias)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, wanted in GROUPS.items():
        group, _ = Group.objects.get_or_create(name=name)
        for app_label, codename in wanted:
            group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


class Migration(migrations.Migration):
    dependencies = [
        ("transfers", "0004_transfer_event"),
        ("ubscore", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [migrations.RunPython(create_groups, migrations.RunPython.noop)]

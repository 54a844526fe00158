from django.db import migrations

# (id = funding-ledger number, code, decimals, largest single transfer in whole units)
ASSETS = [
    (1, "USDT", 6, 1_000_000_000),
    (2, "BTC", 8, 10_000),
    (3, "ETH", 8, 100_000),
]


def seed_assets(apps, schema_editor):
    Asset = apps.get_model("transfers", "Asset")
    for asset_id, code, decimals, maximum in ASSETS:
        Asset.objects.update_or_create(
            id=asset_id,
            defaults={"code": code, "decimals": decimals, "maximum_transfer_minor": maximum * 10**decimals},
        )


class Migration(migrations.Migration):
    dependencies = [("transfers", "0001_initial")]
    operations = [migrations.RunPython(seed_assets, migrations.RunPython.noop)]

from django.core.management.base import BaseCommand, CommandParser

from settlement.reconcile import reconcile
from transfers.amounts import format_amount
from transfers.models import Asset

COLUMNS = (
    "asset", "spot pool", "Σ spot", "in flight →spot", "in flight →funding", "spot diff",
    "Σ user funding", "external", "ledger diff", "pending diff", "result",
)


class Command(BaseCommand):
    help = (
        "Compare, per asset, the ledger's spot pool with Σ UBSCore spot balances, and the ledger's "
        "Σ user funding with its external account. Prints a table; exits 1 on any difference."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--settle-seconds",
            type=float,
            default=2.0,
            help="on a difference, look again after this long (a live system moves between reads); 0 = once",
        )

    def handle(self, *args: object, settle_seconds: float, **options: object) -> None:
        results = reconcile(settle_seconds=settle_seconds)
        decimals = dict(Asset.objects.values_list("code", "decimals"))
        rows = [COLUMNS]
        for result in results:
            places = decimals[result.asset_code]
            amounts = (
                result.spot_pool, result.spot_total, result.in_flight_to_spot, result.in_flight_to_funding,
                result.spot_difference, result.user_funding_total, result.external, result.ledger_difference,
                result.pending_difference,
            )
            rows.append((result.asset_code, *(format_amount(a, places) for a in amounts),
                         "ok" if result.is_clean else "DIFFERENT"))
        widths = [max(len(str(row[i])) for row in rows) for i in range(len(COLUMNS))]
        for row in rows:
            self.stdout.write("  ".join(str(cell).rjust(width) for cell, width in zip(row, widths, strict=True)))
        if not all(result.is_clean for result in results):
            self.stderr.write("reconcile: differences found")
            raise SystemExit(1)

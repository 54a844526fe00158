from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from settlement.deposits import DepositFailed, deposit_to_funding, deposit_to_spot
from transfer_site.bus import BusUnavailable
from transfers.amounts import InvalidAmount, parse_amount
from transfers.models import Asset
from transfers.snowflake import SnowflakeGenerator


class Command(BaseCommand):
    help = "Credit a user's funding wallet or spot account from outside; returns once applied."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user-id", type=int, required=True)
        parser.add_argument("--asset", required=True, help="asset code, e.g. USDT")
        parser.add_argument("--amount", required=True, help="decimal amount, e.g. 100 or 0.5")
        parser.add_argument("--to", choices=["funding", "spot"], required=True)
        parser.add_argument(
            "--reference",
            type=int,
            help="idempotency reference: repeating a deposit with the same one never credits twice "
            "(default: a new id)",
        )

    def handle(self, *args: object, **options: object) -> None:
        user_id = options["user_id"]
        if user_id <= 0:
            raise CommandError("--user-id must be a positive integer")
        asset = Asset.objects.filter(code=options["asset"]).first()
        if asset is None:
            raise CommandError(f"unknown asset {options['asset']!r}")
        try:
            # Deposits are not bound by the per-transfer maximum.
            amount = parse_amount(options["amount"], asset.decimals, (1 << 63) - 1)
        except InvalidAmount as error:
            raise CommandError(f"--amount: {error}") from None
        reference = options["reference"] or SnowflakeGenerator(settings.COMMAND_SNOWFLAKE_WORKER_ID).next_id()
        try:
            if options["to"] == "funding":
                deposit_to_funding(user_id, asset.id, amount, reference)
            else:
                deposit_to_spot(user_id, asset.id, amount, reference)
        except DepositFailed as error:
            raise CommandError(str(error)) from None
        except BusUnavailable:
            raise CommandError(
                f"Kafka at {settings.KAFKA_BOOTSTRAP_SERVERS} did not take the deposit, so nothing was credited: "
                "is the stack running (make run), and on this broker (DEV_BROKER_PORT, KAFKA_BOOTSTRAP_SERVERS)? "
                f"Repeat with --reference {reference}: it never credits twice."
            ) from None
        self.stdout.write(
            f"deposited {options['amount']} {asset.code} to the {options['to']} account of user {user_id} "
            f"(reference {reference})"
        )

from django.core.management.base import BaseCommand, CommandParser

from transfers.services import create_api_key


class Command(BaseCommand):
    help = (
        "Issue an API key for a user. The key is printed once, alone on the last line of stdout; "
        "its signing secret alone on the last line of stderr. Only a hash of the key is kept."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user-id", type=int, required=True)
        parser.add_argument("--label", default="")
        parser.add_argument("--read-only", action="store_true", help="the key can read but not create transfers")

    def handle(self, *args: object, user_id: int, label: str, read_only: bool, **options: object) -> None:
        if user_id <= 0:
            raise SystemExit("--user-id must be a positive integer")
        issued = create_api_key(user_id, label, read_only=read_only)
        # stdout carries the key alone, so `| tail -n1` keeps working in scripts.
        self.stderr.write(
            f"API key for user {user_id}, permission {issued.permission.value!r} "
            "(store it now; it cannot be shown again): on stdout."
        )
        self.stderr.write("Signing secret for X-API-Signature (store it now), on the next line:")
        self.stderr.write(issued.signing_secret)
        self.stdout.write(issued.key)

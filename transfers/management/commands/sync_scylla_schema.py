from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from transfers.store import scylla_schema
from transfers.store.scylla_connection import get_session, keyspace_name


class Command(BaseCommand):
    help = (
        "Create the ScyllaDB keyspace and tables of the transfer store (schema/internal_transfer.cql). "
        "Idempotent: what exists is left as it is. Uses SCYLLA_HOSTS, SCYLLA_KEYSPACE, SCYLLA_REPLICATION."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--keyspace", help="keyspace name (default: SCYLLA_KEYSPACE)")
        parser.add_argument(
            "--replication",
            help='"3" (replicas in every datacenter) or "dc1:3,dc2:3" (default: SCYLLA_REPLICATION)',
        )
        parser.add_argument(
            "--print", action="store_true", dest="print_only", help="print the CQL and exit; connects to nothing"
        )

    def handle(self, *args: object, keyspace: str | None, replication: str | None, print_only: bool,
               **options: object) -> None:
        try:
            name = keyspace_name(keyspace)
            statements = scylla_schema.schema_statements(name, replication)
        except Exception as error:  # ImproperlyConfigured, ValueError: bad settings or schema file
            raise CommandError(str(error)) from error
        if print_only:
            for statement in statements:
                self.stdout.write(statement + ";")
            return
        try:
            session = get_session()
            executed = scylla_schema.apply_schema(session, keyspace=name, replication=replication)
        except ImproperlyConfigured as error:
            raise CommandError(str(error)) from error
        except Exception as error:  # NoHostAvailable, timeouts, refused statements
            raise CommandError(f"could not apply the schema to ScyllaDB: {error}") from error
        verbosity = int(options.get("verbosity", 1))  # type: ignore[call-overload]
        if verbosity >= 2:
            for statement in executed:
                self.stdout.write(statement + ";")
        for warning in scylla_schema.keyspace_warnings(session, name, replication):
            self.stderr.write(self.style.WARNING(f"warning: {warning}"))
        self.stdout.write(f"keyspace {name}: {len(executed) - 1} tables in place")

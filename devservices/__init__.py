"""The production-like servers for development and CI (`make services`).

Apache Kafka (KRaft) and Cassandra 5 run from their Maven Central artifacts on
the JVM; PostgreSQL and Redis come from Debian's packages. Everything lives
under `var/services/` (ignored by git): downloaded jars are kept, so later
runs start without the network. `python -m devservices start` brings them up
on loopback and writes `var/services.env`; `python -m devservices stop` ends
them. None of this is used by the service itself.
"""

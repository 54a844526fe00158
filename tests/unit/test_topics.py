"""KAFKA_NAMESPACE puts every topic and consumer group of a stack under one prefix."""

import json
import os
import subprocess
import sys


def names_with(namespace: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_NAMESPACE"}
    if namespace is not None:
        env["KAFKA_NAMESPACE"] = namespace
    code = ("import json; from transfer_site import topics; "
            "print(json.dumps([list(topics.ALL), topics.UBSCORE_GROUP, topics.consumer_group('settlement-bridge')]))")
    return json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                     check=True).stdout)


def test_no_namespace_keeps_the_documented_names():
    all_topics, ubscore, settlement = names_with(None)
    assert all_topics == ["internal_transfer.requests", "balance.operations", "balance.events",
                          "internal_transfer.dead_letters"]
    assert (ubscore, settlement) == ("ubscore", "settlement-bridge")


def test_a_namespace_prefixes_every_topic_and_group():
    all_topics, ubscore, settlement = names_with("staging.")
    assert all_topics == ["staging.internal_transfer.requests", "staging.balance.operations",
                          "staging.balance.events", "staging.internal_transfer.dead_letters"]
    assert (ubscore, settlement) == ("staging.ubscore", "staging.settlement-bridge")

"""How runstream runs: the local single-node Kafka used by `runstream up` and the tests."""

"""Orchestration: CLI, configuration, cluster factory, the stage DAG runner and its ledger."""

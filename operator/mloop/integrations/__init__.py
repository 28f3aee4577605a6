"""Connections to tools teams already use: OpenLineage, CloudEvents sinks, MLflow."""

"""Offline MLOps: experiment files, the feedback log, online metrics, comparison reports (no grpc here)."""

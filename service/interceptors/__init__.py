"""Server interceptors: drain tracking, telemetry, authentication, validation, admission (chain.py orders them)."""

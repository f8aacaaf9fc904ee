"""The gRPC service: servicers, interceptors, serving machinery, client, CLI (the only package importing grpc)."""

"""gRPC servicers, server, client, configuration and the command line (the only package importing grpc)."""

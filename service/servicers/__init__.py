"""gRPC servicers: convert a message, call a plain object, convert back (and map errors to status codes)."""

"""pipekit.adapters: transports that produce pipes."""

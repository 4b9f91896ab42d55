"""pipekit: stream pipelines with real backpressure."""

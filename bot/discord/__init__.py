"""The Discord adapter: interactions in, plain requests to the orchestrator, results back as messages."""

"""The notification path: pipeline stages, the durable outbox, payloads and receivers (sinks)."""

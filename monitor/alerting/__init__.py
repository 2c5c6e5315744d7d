"""Alert evaluation: burn-rate windows, SLO/drift/no-data evaluators, the alerter and its durable state."""

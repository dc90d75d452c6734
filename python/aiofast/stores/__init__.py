"""Shared state for several gateway processes: Redis-backed limits, budgets,
breakers, experiment counters and the response cache."""

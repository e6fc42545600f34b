"""Shared by every phase: params, the data contract (records, io), reports, seeded randomness, truth, executors."""

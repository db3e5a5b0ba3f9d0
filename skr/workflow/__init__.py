"""Pure decision logic of the onboarding workflow: no I/O, no clock, no Durable imports.

Orchestrators and triggers feed it values (times, activity results, event payloads, instance
snapshots) and act on what it returns, so every branch is unit-testable and replay-safe.
"""

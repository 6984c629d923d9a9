"""How a function runs: its context and handler wrapper, the HTTP front (health, readiness,
metrics, OpenAPI), the embedded in-process dispatcher, job events, schedules, and the bounds and
orphan checks around child processes."""

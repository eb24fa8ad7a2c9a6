"""State: the state store (schema, migrations, audit), the release status machine, the model registry,
threshold approvals, overrides and alerts. Imports core only."""

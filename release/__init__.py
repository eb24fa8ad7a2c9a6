"""fraud-cd release pipeline: events io, training set, training, registry, state store, approvals,
shadow, ramp and the CLI."""

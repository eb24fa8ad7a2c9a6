"""Rollout: the ramp state machine's transitions, the guardrails, the shadow judgement, the one-step driver
of a live rollout and its controller."""

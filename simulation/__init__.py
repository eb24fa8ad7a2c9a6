"""The synthetic world: countries, merchants, cards, fraud scenarios, late disputes and a deployed policy
whose blocks censor the labels."""
from simulation.world import WorldConfig, simulate  # noqa: F401

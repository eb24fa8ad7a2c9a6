"""Release contracts: promises to the business written as YAML and checked on every release.

Each kind lives in its own module (``action_rate_shift``, ``fixed_fpr_higher_recall``); ``evaluator``
loads the contracts in force (``contracts/release.yaml``) and turns metrics into verdicts.
"""

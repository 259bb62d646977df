"""`textlora audit`: find mislabeled rows, duplicates and imbalance in a dataset, with cross-validated scores.

The package is named `auditing`, not `audit`, so that `textlora.audit` stays the function: importing a submodule
`textlora.audit` would replace the package attribute with the module.
"""

from textlora.auditing.run import FILES, METHODS, AuditResult, audit, top_suspects

__all__ = ["FILES", "METHODS", "AuditResult", "audit", "top_suspects"]

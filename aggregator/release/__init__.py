"""Release: what may be published (k-anonymity, sums, values, dp noise, budget)."""

"""The report layer: a run's results read once, their statistics, tables, figures, the paper's
findings checked against the run's premises, and the plan (which recipe for your budgets)."""

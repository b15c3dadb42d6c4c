"""The experiment grid, its results file, plots and the planner (Figure 1), and ``speclm run``."""

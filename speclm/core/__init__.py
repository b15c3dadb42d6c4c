"""What every layer stands on: errors, atomic writes, manifests, the config, the run folder,
ranks and processes, and the text-table formatter. Nothing here imports from above."""

"""``speclm build``: from a folder of domain text to a small model you can ship (the top layer, above the grid)."""

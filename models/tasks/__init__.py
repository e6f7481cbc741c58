"""Ray-free training tasks, one module per task; ``models.registry`` discovers and imports them."""

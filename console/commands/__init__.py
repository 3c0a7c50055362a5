"""One module per ``lowrank`` sub-command; each exposes ``register(app)``."""

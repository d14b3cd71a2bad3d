"""ICIIA: one-time-trained attention over each client's cache of recent unlabelled images, with partitioned, shuffled projections."""

from dcx.methods.iciia import recipe  # noqa: F401  (registers the recipe and its variants)
from dcx.methods.iciia.simulation import METHOD
from dcx.simulate.methods import register_simulation

register_simulation(METHOD)

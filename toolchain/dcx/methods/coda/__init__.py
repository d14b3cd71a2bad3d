"""CoDA: a recommender personalised on the phone from local samples plus cloud-retrieved ones an on-device classifier kept."""

from dcx.methods.coda import recipe  # noqa: F401  (registers the recipe and its variants)
from dcx.methods.coda.simulation import METHOD
from dcx.simulate.methods import register_simulation

register_simulation(METHOD)

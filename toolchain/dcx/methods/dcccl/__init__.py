"""DC-CCL: a cloud model too large for the phone, split by width; a mimic of the large part steers on-device training of the small one."""

from dcx.methods.dcccl import recipe  # noqa: F401  (registers the recipe and its variants)
from dcx.methods.dcccl.simulation import METHOD
from dcx.simulate.methods import register_simulation

register_simulation(METHOD)

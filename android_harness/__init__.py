"""Android device targets for the native runner (installed as ``dcx.android``).

``bundle``: the aarch64 runner with its libraries and glibc's loader, runnable
from any folder of a phone (``/data/local/tmp``). ``qemu``: the same bundle
under ``qemu-aarch64`` on the host, with guest instruction counts.
"""

"""Export: device programs -> artifacts of every chosen format + references + ``manifest.json``.

``pipeline.export_programs`` is the one path (the Python API, ``dcx export`` and the methods' exports call it);
each format's exporter comes from its backend (``dcx.backends``). ``weight_locations`` accounts for every weight
of the program in each artifact it writes.
"""

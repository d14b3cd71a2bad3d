"""Graph passes: one small, named, tested rewrite per file (litert-torch style).

Exporters are short lists of these passes plus serialization.
"""

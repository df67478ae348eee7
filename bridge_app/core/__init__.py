"""The per-process runtime: start, drain and stop, the reply inbox, the channel layers, the
caches, the process registry, garbage collection, and the hooks that optional parts plug into."""

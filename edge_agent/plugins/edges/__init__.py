"""The ``edges`` plugin: child edges on compute nodes, started inside batch jobs."""

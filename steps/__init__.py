"""Step cores of grace-pipeline: each stage is typed inputs -> table -> store.

The CLI, the local runner and (later) the Argo containers only load inputs, call a
step, and save its outputs; nothing in here knows which runner called it.
"""

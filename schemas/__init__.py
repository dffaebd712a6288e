"""Every table's columns and every structured schema, defined once (pydantic).

Column names used anywhere in the project come from these models; the JSON Schema
files in ``schemas/json`` are generated from them (``python -m schemas.export``) and
a test fails when they drift.
"""

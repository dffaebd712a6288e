"""Study definition YAML files (``study{n}.yaml``), package data read by :mod:`steps.studies`."""

"""The live web dashboard of the fleet: `python -m dashboard` (dashboard/README.md)."""

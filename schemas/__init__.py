"""The Avro schemas (*.avsc, earlier versions in previous/) as package data, so that an installed wheel carries them.

Nothing here but the files: common/schemas.py reads them (importlib.resources) and is the one place every service
gets its schemas from. schemas/README.md describes them.
"""

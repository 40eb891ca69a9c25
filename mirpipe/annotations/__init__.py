"""Annotations: what ingest decides about a track's JAMS (``prepare``) and namespace facts (``namespaces``)."""

"""Answering a photo: retrieve from a library, verify geometrically, give a verdict, and show or
export the answer (map page, CSV, GeoJSON)."""

"""Task modules (chord, pitch, instrument): targets on a frame grid, networks, decoding, scores."""

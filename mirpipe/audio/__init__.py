"""Audio: decoding (``io``), the pitch-shift backends (``pitch_shift``) and joint audio + JAMS deformation (``deform``)."""

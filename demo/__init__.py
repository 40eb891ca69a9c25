"""The demo corpus synthesizer: scores, timbres, rendering and exact annotations."""

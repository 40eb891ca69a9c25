"""``python -m mirpipe`` runs the command line."""

from mirpipe.pipeline.cli import main

if __name__ == "__main__":
    main()

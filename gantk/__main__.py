"""`python -m gantk` runs the command line."""

from gantk.cli.main import main

if __name__ == "__main__":
    main()

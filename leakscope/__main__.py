"""`python -m leakscope` runs the command-line interface."""

from leakscope.cli import main

if __name__ == "__main__":
    main()

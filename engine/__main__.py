"""`python -m engine` is the same as the `changefold` command."""

from engine.app.cli import main

if __name__ == "__main__":
    main()

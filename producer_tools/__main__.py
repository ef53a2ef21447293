"""`python -m producer_tools` runs `genre-produce`."""

from producer_tools.cli import main

raise SystemExit(main())

"""Allow ``python -m captioner``."""

from captioner.cli import main

raise SystemExit(main())

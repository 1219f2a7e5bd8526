"""Allows `python -m portscope`."""

from portscope.cli.main import main

raise SystemExit(main())

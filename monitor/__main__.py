"""`python -m monitor` runs the railguard command line."""

from monitor.cli import main

raise SystemExit(main())

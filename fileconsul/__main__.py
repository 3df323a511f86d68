from __future__ import annotations

from fileconsul.cli import main

main()

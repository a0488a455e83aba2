"""Hospital integration (DESIGN.md §2): IHE IOCM rejection notes so far (iocm.py)."""

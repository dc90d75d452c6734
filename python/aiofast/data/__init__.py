"""Data files bundled with aiofast; see SOURCE.md."""

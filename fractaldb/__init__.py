"""fractaldb package."""

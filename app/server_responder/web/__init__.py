"""The thin web layer: CherryPy routes over the responder's plain-Python services."""

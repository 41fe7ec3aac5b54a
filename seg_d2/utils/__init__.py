"""Small helpers every part of seg_d2 may use (they import nothing else from seg_d2)."""

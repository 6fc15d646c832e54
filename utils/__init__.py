"""Small shared helpers (I/O, errors, images). Never imports the top-level scripts."""

"""Backup and restore (``python -m server backup|restore``): ``archive`` makes and reads
the archive, ``restore`` puts one in place on this machine."""

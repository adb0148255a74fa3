"""The schema's revisions, a file each (``r<NNNN>_<slug>.py``), never edited once released."""
